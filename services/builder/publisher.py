"""What the agent says on the bus: signed messages, and attestations until they are out.

Informational messages (started, heartbeat) are best effort. A `task.finished` is journaled
first and re-sent with the same message id until the broker confirms it, so consumers that
already have it skip the copy.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fedora_messaging import message as fm
from skyline_messages import HostHeartbeatV1, TaskFinishedV1, TaskStartedV1

from services.common.signing import sign_body

from .journal import Journal

log = logging.getLogger(__name__)


class Sender(Protocol):
    async def publish(self, msg: fm.Message) -> None: ...


class Publisher:
    def __init__(
        self, bus: Sender, journal: Journal, signing_key: Callable[[], Ed25519PrivateKey]
    ) -> None:
        self.bus = bus
        self.journal = journal
        self.signing_key = signing_key
        self.unpublished: set[str] = set()  # lease ids whose attestation the broker lacks

    def sign(self, body: dict[str, Any]) -> dict[str, Any]:
        return sign_body(body, self.signing_key())

    async def publish_signed(
        self, cls: type[HostHeartbeatV1 | TaskStartedV1], body: dict[str, Any]
    ) -> None:
        """Publish a signed informational message on the host's own routing key; the caller
        goes on if the broker is away."""
        try:
            msg = cls(body=self.sign(body))
            msg.topic = cls.topic_for(msg.host)
            await self.bus.publish(msg)
        except Exception as exc:
            log.warning("could not publish %s: %s", cls.__name__, exc)

    async def publish_finished(self, lease_id: str, entry: dict[str, Any]) -> None:
        """Send (or re-send, with the same message id) a journaled attestation; never raises."""
        recorded = entry["finished"]
        msg = TaskFinishedV1(body=recorded["body"])
        msg.topic, msg.id = TaskFinishedV1.topic_for(msg.host), recorded["id"]
        try:
            await self.bus.publish(msg)
        except Exception as exc:
            log.warning("attestation of lease %s not sent yet (%s); will retry", lease_id, exc)
            self.unpublished.add(lease_id)
            return
        self.unpublished.discard(lease_id)
        if not entry.get("published"):
            try:
                self.journal.save(lease_id, {**entry, "published": True})
            except OSError as exc:  # at worst it is sent once more after a restart
                log.warning("journal update for lease %s failed: %s", lease_id, exc)

    async def retry_unpublished(self) -> None:
        for lease_id in sorted(self.unpublished):
            entry = self.journal.load(lease_id)
            if entry is not None and entry.get("state") == "finished":
                await self.publish_finished(lease_id, entry)
            else:
                self.unpublished.discard(lease_id)
