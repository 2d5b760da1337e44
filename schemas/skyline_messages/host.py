"""Host-level messages: enrolment, heartbeats and the registry's view of each host."""

from __future__ import annotations

from fedora_messaging.message import DEBUG, INFO

from .base import (
    ARCH,
    END,
    HOST,
    SIGNATURE,
    TIMESTAMP,
    USER,
    PartyTopic,
    Signed,
    SkylineMessage,
    body_schema,
)

TRUST = {"type": "string", "enum": ["untrusted", "trusted", "core", "quarantined"]}
ARCHES = {"type": "array", "items": ARCH, "minItems": 1, "uniqueItems": True}
RELEASES = {
    "type": "array",
    "items": {"type": "string", "maxLength": 32},
    "uniqueItems": True,
    "maxItems": 64,
}
SLOTS = {"type": "integer", "minimum": 0, "maximum": 1024}
# Optional profile fields of an enrolment: bounded, and free of control characters.
MOCK_CONFIGS = {
    "type": "array",
    "items": {"type": "string", "pattern": "^[A-Za-z0-9._+-]{1,64}" + END},
    "uniqueItems": True,
    "maxItems": 64,
}
LOCATION = {"type": "string", "pattern": "^[^\\x00-\\x1f\\x7f]{1,64}" + END}
AGENT_VERSION = {"type": "string", "pattern": "^[A-Za-z0-9._+~-]{1,64}" + END}
SANDBOX = {"type": "string", "pattern": "^[a-z0-9][a-z0-9._+-]{0,31}" + END}
# Every level a host can hold over its life (quarantined: the policy stopped trusting it).
TRUST_LEVEL = {"type": "string", "enum": ["untrusted", "trusted", "core", "quarantined"]}
TRUST_REASON = {"type": "string", "minLength": 1, "maxLength": 500}
# What a policy transition rests on: the task, this host's result digest, the other hosts
# (those that agreed, or the settled winners) and a note. Closed and bounded.
TRUST_EVIDENCE = {
    "type": "object",
    "required": ["task_id", "digest"],
    "properties": {
        "task_id": {"type": "string", "minLength": 1, "maxLength": 64},
        "digest": {"type": "string", "minLength": 1, "maxLength": 128},
        "others": {"type": "array", "items": HOST, "maxItems": 32, "uniqueItems": True},
        "detail": {"type": "string", "maxLength": 2000},
    },
    "additionalProperties": False,
}


class _HostMessage(SkylineMessage):
    @property
    def agent_name(self) -> str:
        return self.body.get("owner") or self.body["host"]

    @property
    def usernames(self) -> list[str]:
        return [self.body["owner"]] if "owner" in self.body else []

    @property
    def host(self) -> str:
        return str(self.body["host"])


class _HostView(_HostMessage):
    """What the registry says of an enrolled host: its owner, trust and what it builds."""

    @property
    def owner(self) -> str:
        return str(self.body["owner"])

    @property
    def trust(self) -> str:
        return str(self.body["trust"])

    @property
    def arches(self) -> list[str]:
        return list(self.body["arches"])

    @property
    def releases(self) -> list[str]:
        return list(self.body["releases"])


class _Slots(_HostMessage):
    """How much work a host can take."""

    @property
    def free_slots(self) -> int:
        return int(self.body["free_slots"])

    @property
    def running(self) -> int:
        """Builds it runs; 0 where not said."""
        return int(self.body.get("running", 0))


class HostEnrolledV1(_HostView):
    """The registry enrolled a builder host and its public key."""

    topic = "skyline.host.enrolled"
    severity = INFO
    body_schema = body_schema(
        "A builder host was enrolled",
        ["host", "owner", "arches", "releases", "trust", "public_key"],
        {
            "host": HOST,
            "owner": USER,
            "arches": ARCHES,
            "releases": RELEASES,
            "trust": TRUST,
            "public_key": {"type": "string", "pattern": "^[A-Za-z0-9+/]{43}=" + END},
            "cpus": {"type": "integer", "minimum": 1},
            "memory_mb": {"type": "integer", "minimum": 0},
            "disk_gb": {"type": "integer", "minimum": 0},
            "mock_configs": MOCK_CONFIGS,  # mock configurations it builds in (fedora-40-x86_64)
            "location": LOCATION,  # where it runs, as its owner says ("Brno, CZ")
            "agent_version": AGENT_VERSION,
            "sandbox": SANDBOX,  # what isolates its builds ("mock", "podman", "vm")
        },
    )

    @property
    def public_key(self) -> str:
        return str(self.body["public_key"])

    @property
    def cpus(self) -> int | None:
        return self.body.get("cpus")

    @property
    def memory_mb(self) -> int | None:
        return self.body.get("memory_mb")

    @property
    def disk_gb(self) -> int | None:
        return self.body.get("disk_gb")

    @property
    def mock_configs(self) -> list[str] | None:
        configs = self.body.get("mock_configs")
        return None if configs is None else list(configs)

    @property
    def location(self) -> str | None:
        return self.body.get("location")

    @property
    def agent_version(self) -> str | None:
        return self.body.get("agent_version")

    @property
    def sandbox(self) -> str | None:
        """What isolates its builds; None where its owner does not say."""
        return self.body.get("sandbox")

    @property
    def summary(self) -> str:
        b = self.body
        return f"{b['owner']} enrolled host {b['host']} ({', '.join(b['arches'])}) as {b['trust']}"


class HostHeartbeatV1(PartyTopic, _Slots, Signed):
    """A builder says it is alive and how many tasks it can take (signed by the host); on
    `skyline.host.heartbeat.<host>`."""

    topic = "skyline.host.heartbeat"
    binding = "skyline.host.heartbeat.*"
    severity = DEBUG
    body_schema = body_schema(
        "A builder host's heartbeat",
        ["host", "free_slots", "signed_at", "signature"],
        {
            "host": HOST,
            "free_slots": SLOTS,
            "running": {"type": "integer", "minimum": 0},
            # How its builds are confined (optional; older agents do not say): "none" means the
            # volunteer allowed unsandboxed builds.
            "sandbox": {"type": "string", "enum": ["bwrap", "mock", "none"]},
            "signed_at": TIMESTAMP,
            "signature": SIGNATURE,
        },
    )

    @property
    def sandbox(self) -> str | None:
        """How the host confines its builds; None from an agent that does not say."""
        return self.body.get("sandbox")

    @property
    def summary(self) -> str:
        return f"{self.body['host']} is alive with {self.body['free_slots']} free slot(s)"


class HostStatusV1(_HostView, _Slots):
    """The registry's authenticated view of a host, for the dispatcher to schedule on."""

    topic = "skyline.host.status"
    severity = DEBUG
    body_schema = body_schema(
        "A builder host's current status",
        ["host", "owner", "state", "trust", "arches", "releases", "free_slots", "seen_at"],
        {
            "host": HOST,
            "owner": USER,
            "state": {"type": "string", "enum": ["online", "offline", "quarantined"]},
            "trust": TRUST,
            "arches": ARCHES,
            "releases": RELEASES,
            "free_slots": SLOTS,
            # Builds the host is running (by its heartbeat), and the most it may ever run at
            # once: its enrolled CPUs. The dispatcher counts its own open leases against these.
            "running": SLOTS,
            "max_slots": {"type": "integer", "minimum": 1, "maximum": SLOTS["maximum"]},
            "seen_at": TIMESTAMP,
            # The registry's quality-of-service score (services/registry/qos.py): 1 is best.
            "qos_score": {"type": "number", "minimum": 0, "maximum": 1},
            # Its speed factor (qos.py): 1 is the farm's pace, 2 twice as fast. Optional.
            "speed_factor": {"type": "number", "exclusiveMinimum": 0, "maximum": 100},
        },
    )

    @property
    def qos_score(self) -> float | None:
        """None from a registry that does not rate its hosts."""
        score = self.body.get("qos_score")
        return None if score is None else float(score)

    @property
    def speed_factor(self) -> float | None:
        """None from a registry that has not measured the host's speed (or does not say)."""
        speed = self.body.get("speed_factor")
        return None if speed is None else float(speed)

    @property
    def state(self) -> str:
        return str(self.body["state"])

    @property
    def seen_at(self) -> str:
        return str(self.body["seen_at"])

    @property
    def max_slots(self) -> int:
        """At most this many leases at once; 1 from a registry that does not say."""
        return self.body.get("max_slots", 1)

    @property
    def summary(self) -> str:
        b = self.body
        return f"{b['host']} is {b['state']} ({b['trust']}) with {b['free_slots']} free slot(s)"


class HostTrustV1(_HostMessage):
    """The registry changed (or an admin reset) a host's trust level, with its reason.

    `by` is "registry" for the acceptance policy's transitions, else the admin who decided.
    """

    topic = "skyline.host.trust"
    severity = INFO
    body_schema = body_schema(
        "A builder host's trust level changed",
        ["host", "owner", "old", "new", "reason", "by"],
        {
            "host": HOST,
            "owner": USER,
            "old": TRUST_LEVEL,
            "new": TRUST_LEVEL,
            "reason": TRUST_REASON,
            "evidence": TRUST_EVIDENCE,
            "by": USER,
        },
    )

    @property
    def agent_name(self) -> str:
        return self.body["by"]

    @property
    def summary(self) -> str:
        b = self.body
        return f"{b['host']} went from {b['old']} to {b['new']} ({b['by']}: {b['reason']})"
