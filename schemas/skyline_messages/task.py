"""Task-level messages: one build of one architecture on one host."""

from __future__ import annotations

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
    SkylineMessage,
    body_schema,
    package_of,
)

TASK_FIELDS = {"task_id": ID, "build_id": ID, "lease_id": UUID, "host": HOST, "arch": ARCH}


class _TaskMessage(SkylineMessage):
    @property
    def agent_name(self) -> str:
        return self.body["host"]

    @property
    def packages(self) -> list[str]:
        return [package_of(self.body["nvr"])] if "nvr" in self.body else []


class _HostTopic(PartyTopic, _TaskMessage):
    """A task message on `<topic>.<host>` (host names are one routing-key word)."""

    @property
    def host(self) -> str:
        return str(self.body["host"])


class TaskLeasedV1(_HostTopic):
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
        },
    )

    @property
    def summary(self) -> str:
        b = self.body
        return f"task {b['task_id']} ({b['nvr']}, {b['arch']}) leased to {b['host']}"


class TaskStartedV1(_HostTopic):
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


class TaskFinishedV1(_HostTopic):
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
            "signed_at": TIMESTAMP,
            "signature": SIGNATURE,
        },
    )

    @property
    def summary(self) -> str:
        b = self.body
        return f"{b['host']} {b['status']} task {b['task_id']} ({b['nvr']}, {b['arch']})"


class TaskVerifiedV1(_TaskMessage):
    """The verifier accepted a host's attestation; the collector may store the results."""

    topic = "skyline.task.verified"
    severity = INFO
    body_schema = body_schema(
        "A task's attestation was verified",
        [*TASK_FIELDS, "nvr", "status", "files", "result_digest"],
        {
            **TASK_FIELDS,
            "nvr": NVR,
            "status": TASK_STATUS,
            "files": FILES,
            "result_digest": SHA256,
        },
    )

    @property
    def summary(self) -> str:
        b = self.body
        return f"verified task {b['task_id']} ({b['nvr']}, {b['arch']}) from {b['host']}"


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
]


class TaskMismatchV1(_TaskMessage):
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

    @property
    def summary(self) -> str:
        b = self.body
        return f"refused task {b['task_id']} from {b['host']}: {b['reason']} ({b['detail']})"
