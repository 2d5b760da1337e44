"""Task-level messages: one build of one architecture on one host."""

from __future__ import annotations

from typing import Any

from fedora_messaging.message import DEBUG, INFO, WARNING

from .base import (
    ARCH,
    FILES,
    HOST,
    ID,
    NVR,
    SHA256,
    SIGNATURE,
    TASK_STATUS,
    TIMESTAMP,
    USER,
    UUID,
    PartyTopic,
    Signed,
    SkylineMessage,
    SourceRpm,
    body_schema,
    package_of,
)

TASK_FIELDS = {"task_id": ID, "build_id": ID, "lease_id": UUID, "host": HOST, "arch": ARCH}

# What a lease is for: the task's first build, a replica that must agree with an earlier
# result (a host of another owner), or a core host's tie-break of a disagreement.
LEASE_PURPOSE = {"type": "string", "enum": ["build", "replica", "tiebreak"]}
TRUST = {"type": "string", "enum": ["untrusted", "trusted", "core", "quarantined"]}
OWNERS = {"type": "array", "items": USER, "maxItems": 100, "uniqueItems": True}
HOSTS = {"type": "array", "items": HOST, "maxItems": 100, "uniqueItems": True}
# The acceptance policy's rule that a stored result met (services/verifier/policy.py).
# Whose failure a failed task is (TaskFinishedV1.failure).
FAILURE_KINDS = ["package", "agent", "timeout", "limit", "revoked"]
ACCEPT_RULES = ["core", "quorum", "agreement", "trusted-sampled-out", "not-reproducible"]
AGREEING_HOST = {
    "type": "object",
    "required": ["host", "owner", "trust", "lease_id"],
    "properties": {"host": HOST, "owner": USER, "trust": TRUST, "lease_id": UUID},
    "additionalProperties": False,
}
ODD_ONE_OUT = {
    "type": "object",
    "required": ["host", "lease_id", "comparison_key", "detail"],
    "properties": {
        "host": HOST,
        "lease_id": UUID,
        "comparison_key": SHA256,
        "detail": {"type": "string", "maxLength": 2000},  # the first differences found
    },
    "additionalProperties": False,
}


class _TaskMessage(SkylineMessage):
    """Every task message names its task."""

    @property
    def agent_name(self) -> str:
        return self.body["host"]

    @property
    def packages(self) -> list[str]:
        return [package_of(self.body["nvr"])] if "nvr" in self.body else []

    @property
    def task_id(self) -> int:
        return int(self.body["task_id"])


class _LeaseMessage(_TaskMessage):
    """A message about one lease of a task: which, and its host."""

    @property
    def lease_id(self) -> str:
        return str(self.body["lease_id"])

    @property
    def host(self) -> str:
        return str(self.body["host"])


class _BuildTask(_TaskMessage):
    """A message naming the task's build and architecture."""

    @property
    def build_id(self) -> int:
        return int(self.body["build_id"])

    @property
    def arch(self) -> str:
        return str(self.body["arch"])


class _TaskFields(_LeaseMessage, _BuildTask):
    """A message carrying every one of TASK_FIELDS."""

    def task_fields(self) -> dict[str, Any]:
        """The TASK_FIELDS of this message: the start of any message about the same lease."""
        return {k: self.body[k] for k in TASK_FIELDS}


class _HostTopic(PartyTopic, _TaskFields):
    """A task message on `<topic>.<host>` (host names are one routing-key word)."""


class _Result(_TaskFields):
    """What a host's attestation and the verifier's acceptance of it both carry."""

    @property
    def nvr(self) -> str:
        return str(self.body["nvr"])

    @property
    def status(self) -> str:
        return str(self.body["status"])

    @property
    def files(self) -> list[dict[str, Any]]:
        return list(self.body["files"])

    @property
    def result_digest(self) -> str:
        return str(self.body["result_digest"])

    @property
    def failure(self) -> str | None:
        """Of a failed task, whose failure the host says it was; None if succeeded or the
        host does not say."""
        return self.body.get("failure")

    def result_fields(self) -> dict[str, Any]:
        """The fields naming this result that a task.verified accepting it starts with."""
        return {
            **self.task_fields(),
            "nvr": self.nvr,
            "status": self.status,
            "files": self.files,
            "result_digest": self.result_digest,
        }


class TaskLeasedV1(_HostTopic, SourceRpm):
    """The dispatcher leases a task to one host; published on `skyline.task.leased.<host>`."""

    topic = "skyline.task.leased"
    binding = "skyline.task.leased.*"  # what a service that watches every lease binds
    severity = DEBUG
    body_schema = body_schema(
        "A task was leased to a builder host",
        [*TASK_FIELDS, "owner", "nvr", "srpm_url", "srpm_sha256", "release", "lease_expires"],
        {
            **TASK_FIELDS,
            "owner": USER,
            "nvr": NVR,
            "srpm_url": {"type": "string", "pattern": "^https?://", "maxLength": 2048},
            "srpm_sha256": SHA256,
            "release": {"type": "string", "maxLength": 32},
            "scratch": {"type": "boolean"},
            "lease_expires": TIMESTAMP,
            "purpose": LEASE_PURPOSE,  # absent: "build"
            # Extra RPM repositories (createrepo_c) whose packages the build's buildroot gets,
            # e.g. a chain build's earlier links (optional).
            "repos": {
                "type": "array",
                "items": {"type": "string", "pattern": "^https?://", "maxLength": 2048},
                "maxItems": 10,
                "uniqueItems": True,
            },
        },
    )

    @property
    def repos(self) -> list[str]:
        """The lease's buildroot repositories; none from a dispatcher that does not say."""
        return list(self.body.get("repos", []))

    @property
    def purpose(self) -> str:
        return str(self.body.get("purpose", "build"))

    @property
    def nvr(self) -> str:
        return str(self.body["nvr"])

    @property
    def owner(self) -> str:
        return str(self.body["owner"])

    @property
    def lease_expires(self) -> str:
        return str(self.body["lease_expires"])

    @property
    def scratch(self) -> bool:
        return bool(self.body.get("scratch", False))

    @property
    def summary(self) -> str:
        b = self.body
        what = "" if self.purpose == "build" else f" for a {self.purpose}"
        return f"task {b['task_id']} ({b['nvr']}, {b['arch']}) leased to {b['host']}{what}"


class TaskStartedV1(_HostTopic, Signed):
    """A builder began a leased task (signed by the host); on `skyline.task.started.<host>`."""

    topic = "skyline.task.started"
    binding = "skyline.task.started.*"
    severity = DEBUG
    body_schema = body_schema(
        "A builder started a task",
        [*TASK_FIELDS, "signed_at", "signature"],
        {**TASK_FIELDS, "signed_at": TIMESTAMP, "signature": SIGNATURE},
    )

    @property
    def summary(self) -> str:
        return f"{self.body['host']} started task {self.body['task_id']} ({self.body['arch']})"


class TaskFinishedV1(_HostTopic, _Result, Signed):
    """A builder's signed attestation of what it built and with what; on
    `skyline.task.finished.<host>`."""

    topic = "skyline.task.finished"
    binding = "skyline.task.finished.*"
    body_schema = body_schema(
        "A builder finished a task and attests its results",
        [
            *TASK_FIELDS,
            "nvr",
            "status",
            "srpm_sha256",
            "files",
            "result_digest",
            "env_manifest",
            "env_digest",
            "duration",
            "signed_at",
            "signature",
        ],
        {
            **TASK_FIELDS,
            "nvr": NVR,
            "status": TASK_STATUS,
            "srpm_sha256": SHA256,
            "files": FILES,  # every uploaded file: RPMs and logs
            "result_digest": SHA256,  # over the RPMs only; logs are not reproducible
            "env_manifest": {
                "type": "object",
                "additionalProperties": {"type": "string", "maxLength": 500},
                "maxProperties": 200,
            },
            "env_digest": SHA256,
            "duration": {"type": "number", "minimum": 0},
            # Whose failure a failed task is (optional; absent from older agents): "package"
            # (the build itself failed), "agent" (the host could not build it: fetch, upload,
            # crash), "timeout" (killed at the host's wall-time limit), "limit" (killed at another
            # of the host's limits, e.g. disk) or "revoked" (the lease was revoked and the build
            # stopped). All but "package" are the host's verdict, not necessarily the package's
            # fault: the dispatcher may retry elsewhere.
            "failure": {"type": "string", "enum": FAILURE_KINDS},
            "signed_at": TIMESTAMP,
            "signature": SIGNATURE,
        },
    )

    @property
    def srpm_sha256(self) -> str:
        return str(self.body["srpm_sha256"])

    @property
    def env_manifest(self) -> dict[str, str]:
        return dict(self.body["env_manifest"])

    @property
    def env_digest(self) -> str:
        return str(self.body["env_digest"])

    @property
    def duration(self) -> float:
        return float(self.body["duration"])

    @property
    def summary(self) -> str:
        b = self.body
        return f"{b['host']} {b['status']} task {b['task_id']} ({b['nvr']}, {b['arch']})"


class TaskVerifiedV1(_Result):
    """The verifier's acceptance: the collector stores this lease's results.

    For a succeeded task it is sent only once the acceptance policy is met: `lease_id` and
    `host` name the result to store, `agreeing` every host whose result agreed with it (the
    named one included), `rule` the policy met, and `odd_ones_out` the hosts whose results a
    settled disagreement went against (the registry lowers their trust). A failed task's
    verified failure carries none of these (the dispatcher confirms failures).
    """

    topic = "skyline.task.verified"
    severity = INFO
    body_schema = body_schema(
        "A task's result was verified and accepted",
        [*TASK_FIELDS, "nvr", "status", "files", "result_digest"],
        {
            **TASK_FIELDS,
            "nvr": NVR,
            "status": TASK_STATUS,
            "files": FILES,
            "result_digest": SHA256,
            "comparison_key": SHA256,  # equal keys: RPM-aware comparison agrees
            "rule": {"type": "string", "enum": ACCEPT_RULES},
            "agreeing": {"type": "array", "items": AGREEING_HOST, "maxItems": 20},
            "odd_ones_out": {"type": "array", "items": ODD_ONE_OUT, "maxItems": 20},
            # The package's honest builds differ on this arch: nobody is blamed, and its
            # official builds are taken from core hosts only from now on.
            "not_reproducible": {"type": "boolean"},
            # A failed task: whose failure the host says it was (TaskFinishedV1.failure).
            "failure": {"type": "string", "enum": FAILURE_KINDS},
        },
    )

    @property
    def comparison_key(self) -> str | None:
        """The accepted result's RPM-aware comparison key; None from a verifier without one."""
        return self.body.get("comparison_key")

    @property
    def rule(self) -> str | None:
        return self.body.get("rule")

    @property
    def agreeing(self) -> list[dict[str, str]]:
        return list(self.body.get("agreeing", []))

    @property
    def odd_ones_out(self) -> list[dict[str, str]]:
        return list(self.body.get("odd_ones_out", []))

    @property
    def not_reproducible(self) -> bool:
        return bool(self.body.get("not_reproducible", False))

    @property
    def summary(self) -> str:
        b = self.body
        hosts = ", ".join(a["host"] for a in self.agreeing) or b["host"]
        rule = f" ({self.rule})" if self.rule else ""
        return f"accepted task {b['task_id']} ({b['nvr']}, {b['arch']}) from {hosts}{rule}"


class TaskReplicateV1(_BuildTask):
    """The verifier needs another result before it accepts one: the dispatcher leases the
    task again, with the same SRPM and settings, on a host that is none of `exclude_hosts`,
    of none of `exclude_owners`, and of at least `min_trust`."""

    topic = "skyline.task.replicate"
    severity = INFO
    body_schema = body_schema(
        "A task needs another, independent result",
        [
            "task_id",
            "build_id",
            "arch",
            "nvr",
            "purpose",
            "reason",
            "min_trust",
            "exclude_owners",
            "exclude_hosts",
        ],
        {
            "task_id": ID,
            "build_id": ID,
            "arch": ARCH,
            "nvr": NVR,
            "purpose": {"type": "string", "enum": ["replica", "tiebreak"]},
            "reason": {"type": "string", "maxLength": 500},
            "min_trust": TRUST,
            "exclude_owners": OWNERS,
            "exclude_hosts": HOSTS,
            # How many results the verifier has for the task: replicas are asked in turn, so
            # a redelivered request for an older round is recognised.
            "results": {"type": "integer", "minimum": 1, "maximum": 100},
        },
    )

    @property
    def nvr(self) -> str:
        return str(self.body["nvr"])

    @property
    def purpose(self) -> str:
        return str(self.body["purpose"])

    @property
    def reason(self) -> str:
        return str(self.body["reason"])

    @property
    def results(self) -> int | None:
        """How many results the verifier had when it asked (None: not said)."""
        return self.body.get("results")

    @property
    def min_trust(self) -> str:
        return str(self.body["min_trust"])

    @property
    def exclude_owners(self) -> list[str]:
        return list(self.body["exclude_owners"])

    @property
    def exclude_hosts(self) -> list[str]:
        return list(self.body["exclude_hosts"])

    @property
    def summary(self) -> str:
        b = self.body
        return (
            f"task {b['task_id']} ({b['nvr']}, {b['arch']}) needs a {b['purpose']} on a"
            f" {b['min_trust']} host: {b['reason']}"
        )


class TaskRevokedV1(_HostTopic):
    """The dispatcher takes a lease back (the build was cancelled, say): the host stops the
    build within seconds and reports it failed ("revoked"). On `skyline.task.revoked.<host>`,
    bound to the host's lease queue, so it reaches that host only and after the lease."""

    topic = "skyline.task.revoked"
    binding = "skyline.task.revoked.*"
    severity = INFO
    body_schema = body_schema(
        "A builder host's lease was revoked",
        [*TASK_FIELDS, "reason"],
        {**TASK_FIELDS, "nvr": NVR, "reason": {"type": "string", "maxLength": 500}},
    )

    @property
    def reason(self) -> str:
        return str(self.body["reason"])

    @property
    def summary(self) -> str:
        b = self.body
        return f"lease {b['lease_id']} of task {b['task_id']} on {b['host']} revoked: {b['reason']}"


MISMATCH_REASONS = [
    "bad_signature",
    "unknown_host",
    "unknown_lease",
    "replayed",
    "srpm_mismatch",
    "missing_upload",
    "digest_mismatch",
    "host_not_allowed",
    "wrong_package",  # an RPM not built from the leased SRPM, or an SRPM other than the leased
    "wrong_arch",  # a binary RPM neither of the task's arch nor noarch
    "bad_rpm",  # an RPM that is not intact, or whose file name is not its header's N-V-R.A
    "no_agreement",  # the acceptance policy found no agreement within its results limit
]


class TaskMismatchV1(_LeaseMessage):
    """The verifier refused a task's results: nothing of it is stored."""

    topic = "skyline.task.mismatch"
    severity = WARNING
    body_schema = body_schema(
        "A task's attestation was refused",
        ["task_id", "lease_id", "host", "reason", "detail"],
        {
            "task_id": ID,
            "build_id": ID,
            "lease_id": UUID,
            "host": HOST,
            "arch": ARCH,
            "reason": {"type": "string", "enum": MISMATCH_REASONS},
            "detail": {"type": "string", "maxLength": 2000},
        },
    )

    @classmethod
    def refusing(cls, result: _TaskFields, reason: str, detail: str) -> TaskMismatchV1:
        """The refusal of `result`'s lease (`reason` one of MISMATCH_REASONS); a long
        `detail` is cut to the schema's bound."""
        limit = cls.body_schema["properties"]["detail"]["maxLength"]
        return cls(body={**result.task_fields(), "reason": reason, "detail": detail[:limit]})

    @property
    def build_id(self) -> int | None:
        """None from a refusal that does not name the build."""
        return self.body.get("build_id")

    @property
    def arch(self) -> str | None:
        """None from a refusal that does not name the arch."""
        return self.body.get("arch")

    @property
    def reason(self) -> str:
        return str(self.body["reason"])

    @property
    def detail(self) -> str:
        return str(self.body["detail"])

    @property
    def summary(self) -> str:
        b = self.body
        return f"refused task {b['task_id']} from {b['host']}: {b['reason']} ({b['detail']})"
