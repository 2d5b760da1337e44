"""Who may say what on the bus: one broker user per party, and the topics each one owns.

Pure policy, no I/O. The same table gives the broker's permissions (so RabbitMQ refuses a
publish on another party's routing key) and the consumers' sender check (so a message that
got past a misconfigured broker is still refused before any handler sees it):

- every service has its user `skyline-<service>` and publishes only the topics it owns;
- every enrolled host has its user `host-<host>`, publishes only `<topic>.<host>` of the
  host topics (heartbeat, task started/finished) and reads only its lease queue;
- every packager (owner) has a user named as the owner and publishes only
  `skyline.build.request.<owner>` and `skyline.build.chain.<owner>`; it may read build
  notifications;
- `skyline-monitor` reads every Skyline topic and publishes nothing (admins, tests, archivers).

How a consumer knows the sender: Skyline's bus sets the AMQP `user_id` property on everything
it publishes, and RabbitMQ refuses a publish whose `user_id` is not the connection's user.
Stock `fedora-messaging publish` sets no `user_id`; for packagers the routing key names them
instead, and only their own broker user may publish on it (topic permissions), so the key is
as good as the property. A message that carries a `user_id` must agree with its routing key.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any, Literal

SERVICES = ("registry", "dispatcher", "verifier", "collector")
HOST = "host"  # a rule's publisher: the host named by the routing key
OWNER = "owner"  # a rule's publisher: the packager named by the routing key
MONITOR_USER = "skyline-monitor"
RESERVED_PREFIXES = ("skyline-", "host-")  # an owner may not take a service's or a host's name
DEAD_LETTER_EXCHANGE = "skyline.dead-letter"

_HOST_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_OWNER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class Refused(Exception):
    """The message did not come from a principal allowed to send it."""


@dataclasses.dataclass(frozen=True)
class TopicRule:
    topic: str
    publisher: str  # a service name, HOST or OWNER
    party: Literal["host", "owner"] | None = None  # what follows `topic.` in the routing key


#: Every topic and who publishes it. A topic missing here is refused by every consumer.
RULES: Mapping[str, TopicRule] = {
    r.topic: r
    for r in (
        TopicRule("skyline.build.request", OWNER, "owner"),
        TopicRule("skyline.build.chain", OWNER, "owner"),
        TopicRule("skyline.build.queued", "dispatcher"),
        TopicRule("skyline.build.complete", "dispatcher"),
        TopicRule("skyline.build.failed", "dispatcher"),
        TopicRule("skyline.task.leased", "dispatcher", "host"),
        TopicRule("skyline.task.revoked", "dispatcher", "host"),
        TopicRule("skyline.task.started", HOST, "host"),
        TopicRule("skyline.task.finished", HOST, "host"),
        TopicRule("skyline.task.verified", "verifier"),
        TopicRule("skyline.task.mismatch", "verifier"),
        TopicRule("skyline.task.replicate", "verifier"),
        TopicRule("skyline.throttle.engaged", "verifier"),
        TopicRule("skyline.throttle.released", "verifier"),
        TopicRule("skyline.build.stored", "collector"),
        TopicRule("skyline.host.enrolled", "registry"),
        TopicRule("skyline.host.status", "registry"),
        TopicRule("skyline.host.trust", "registry"),
        TopicRule("skyline.host.heartbeat", HOST, "host"),
    )
}


def service_user(service: str) -> str:
    return f"skyline-{service}"


def host_user(host: str) -> str:
    return f"host-{host}"


def owner_user(owner: str) -> str:
    if not _OWNER_RE.fullmatch(owner) or owner.startswith(RESERVED_PREFIXES):
        raise ValueError(
            f"{owner!r} cannot be an owner's name: letters, digits, '.', '_', '-' (at most 64),"
            f" not starting with {' or '.join(RESERVED_PREFIXES)}"
        )
    return owner


def host_queue(host: str) -> str:
    """The one queue a host reads: its leases."""
    return f"skyline.builder.{host}"


def service_queue(service: str) -> str:
    return f"skyline.{service}"


# -- the sender check ---------------------------------------------------------------------


def check_sender(
    schema_topic: str, routing_key: str, user_id: str | None, body: Mapping[str, Any]
) -> str:
    """The principal that sent a message, or raise Refused with a short reason.

    `schema_topic` is the topic of the class the schema header named; the routing key must be
    that topic (or `topic.<party>`), so a host cannot dress a verdict up as a heartbeat.
    """
    rule = RULES.get(schema_topic)
    if rule is None:
        raise Refused(f"no principal may publish {schema_topic}")
    party = None
    if rule.party is None:
        if routing_key != rule.topic:
            raise Refused(f"{rule.topic} published on routing key {routing_key!r}")
    else:
        party = routing_key.removeprefix(rule.topic + ".")
        if not routing_key.startswith(rule.topic + ".") or not _party_ok(rule.party, party):
            raise Refused(f"{rule.topic} must name its {rule.party}: {routing_key!r}")
        if rule.party == "host" and body.get("host") != party:
            raise Refused(f"routing key names host {party!r}, body host {body.get('host')!r}")
    if rule.publisher == HOST:
        assert party is not None
        expected = host_user(party)
    elif rule.publisher == OWNER:
        assert party is not None
        if user_id is None:
            return party  # stock fedora-messaging: the broker let only `party` publish here
        expected = party
    else:
        expected = service_user(rule.publisher)
    if user_id != expected:
        who = user_id or "an unnamed user"
        raise Refused(f"{routing_key} must come from {expected}, not {who}")
    return expected


def _party_ok(kind: str, name: str) -> bool:
    if kind == "host":
        return bool(_HOST_RE.fullmatch(name))
    return bool(_OWNER_RE.fullmatch(name)) and not name.startswith(RESERVED_PREFIXES)


# -- broker permissions -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Permissions:
    """RabbitMQ's permissions of one user in the vhost, and its topic permissions on the
    exchange (checked on publish for `write`, on queue.bind for `read`). "^$" grants nothing."""

    configure: str
    write: str
    read: str
    topic_write: str
    topic_read: str


NOTHING = "^$"


def _alt(*patterns: str) -> str:
    return "^(" + "|".join(patterns) + ")$"


def _topic_pattern(rule: TopicRule, party: str | None = None) -> str:
    base = re.escape(rule.topic)
    if rule.party is None:
        return base
    return base + r"\." + (re.escape(party) if party else r"[a-z0-9][a-z0-9-]*")


def service_permissions(service: str, exchange: str) -> Permissions:
    own = re.escape(service_queue(service))
    queues = (own, own + r"\.dead", re.escape(DEAD_LETTER_EXCHANGE))
    owned = [_topic_pattern(r) for r in RULES.values() if r.publisher == service]
    declared = () if exchange.startswith("amq.") else (re.escape(exchange),)
    return Permissions(
        configure=_alt(*queues, *declared),
        write=_alt(re.escape(exchange), *queues),
        read=_alt(re.escape(exchange), *queues),
        topic_write=_alt(*owned) if owned else NOTHING,
        topic_read=r"^skyline\..*$",  # services are the infrastructure: they may bind anything
    )


def host_permissions(host: str, exchange: str) -> Permissions:
    """A host publishes its own host topics and reads its lease queue, which the registry
    declares and binds for it: it may declare, bind, delete or purge nothing else."""
    mine = [_topic_pattern(r, host) for r in RULES.values() if r.publisher == HOST]
    return Permissions(
        configure=NOTHING,
        write=_alt(re.escape(exchange)),
        read=_alt(re.escape(host_queue(host))),
        topic_write=_alt(*mine),
        topic_read=NOTHING,
    )


def owner_queue_prefix(owner: str) -> str:
    """Queues a packager may declare for watching: `<owner>:<anything>` (':' is in no name)."""
    return f"{owner}:"


def owner_permissions(owner: str, exchange: str) -> Permissions:
    queues = (r"amq\.gen-.*", re.escape(owner_queue_prefix(owner)) + ".*")
    return Permissions(
        configure=_alt(*queues),
        write=_alt(re.escape(exchange), *queues),
        read=_alt(re.escape(exchange), *queues),
        topic_write=_alt(
            *(
                _topic_pattern(RULES[t], owner)
                for t in ("skyline.build.request", "skyline.build.chain")
            )
        ),
        # Build notifications, not leases or attestations: those are between hosts and services.
        topic_read=r"^skyline\.(build|throttle)\..*$",
    )


def monitor_permissions(exchange: str) -> Permissions:
    queues = (r"amq\.gen-.*", re.escape(MONITOR_USER) + ":.*")
    return Permissions(
        configure=_alt(*queues),
        write=_alt(*queues),  # bind its queues; no write on the exchange: it publishes nothing
        read=_alt(re.escape(exchange), *queues),
        topic_write=NOTHING,
        topic_read=r"^skyline\..*$",
    )
