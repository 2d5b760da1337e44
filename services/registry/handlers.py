"""Heartbeats: authenticated by the host's enrolled key, turned into the host's status."""

from __future__ import annotations

import datetime
import logging

from skyline_messages import HostHeartbeatV1

from services.common.errors import SignatureError
from services.common.service import Context, Runtime
from services.common.signing import verify_body

from . import store

log = logging.getLogger(__name__)
MAX_CLOCK_SKEW = datetime.timedelta(minutes=10)


async def on_heartbeat(msg: HostHeartbeatV1, ctx: Context) -> None:
    body = msg.body
    row = await store.get_host(ctx.conn, body["host"])
    if row is None:
        # Heartbeats are high volume and transient: an unknown host is logged, not kept.
        log.error("heartbeat from unknown host %r dropped: enrol it first", body["host"])
        return
    try:
        verify_body(body, row["public_key"])
    except SignatureError:
        log.error("heartbeat for host %r with a bad signature dropped", body["host"])
        return
    signed_at = _parse_signed_at(body["signed_at"])
    if signed_at is None:
        # The schema does not check formats: a signed but unreadable (or zone-less) time would
        # crash this handler on every redelivery. It can never become valid: drop it.
        log.error(
            "heartbeat from %r with unreadable signed_at %r dropped",
            body["host"],
            body["signed_at"],
        )
        return
    if signed_at - datetime.datetime.now(datetime.UTC) > MAX_CLOCK_SKEW:
        log.error("heartbeat from %r signed in the future (%s) dropped", body["host"], signed_at)
        return
    updated = await store.record_heartbeat(
        ctx.conn, body["host"], body["free_slots"], body.get("running", 0), signed_at
    )
    if updated is None:
        log.warning("stale or replayed heartbeat from %r dropped", body["host"])
        return
    await ctx.publish(store.status_message(updated))


def _parse_signed_at(value: str) -> datetime.datetime | None:
    """An aware datetime, or None when `value` is not an ISO 8601 time with a UTC offset."""
    try:
        parsed = datetime.datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return None
    return parsed if parsed.utcoffset() is not None else None


async def mark_silent_hosts_offline(runtime: Runtime) -> None:
    async with runtime.transaction() as ctx:
        for row in await store.mark_offline(ctx.conn, runtime.config.registry.heartbeat_timeout):
            log.info("host %s went silent: offline", row["host"])
            await ctx.publish(store.status_message(row))
