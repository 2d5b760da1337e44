"""Example bodies and shared checks for the skyline_messages tests (not a test module)."""

from __future__ import annotations

import base64
import copy
import hashlib
from typing import Any

import jsonschema
import pytest
from fedora_messaging.message import get_name
from skyline_messages import (
    BuildChainRequestV1,
    BuildCompleteV1,
    BuildFailedV1,
    BuildQueuedV1,
    BuildRequestV1,
    BuildStoredV1,
    HostEnrolledV1,
    HostHeartbeatV1,
    HostStatusV1,
    HostTrustV1,
    TaskFinishedV1,
    TaskLeasedV1,
    TaskMismatchV1,
    TaskReplicateV1,
    TaskRevokedV1,
    TaskStartedV1,
    TaskVerifiedV1,
    ThrottleEngagedV1,
    ThrottleReleasedV1,
)

SHA = hashlib.sha256(b"skyline").hexdigest()
SHA2 = hashlib.sha256(b"skyline-2").hexdigest()
SIG = base64.b64encode(bytes(range(64))).decode()  # an Ed25519 signature is 64 bytes
PUBKEY = base64.b64encode(bytes(range(32))).decode()  # an Ed25519 public key is 32 bytes
LEASE = "3f2b8c1e-9a4d-4e6f-8b7a-1c2d3e4f5a6b"
TS = "2026-05-01T12:00:00Z"
NVR = "skyline-hello-1.0-1.fc41"
NVR2 = "skyline-user-1.0-1.fc41"
SRPM_URL = f"https://src.example.org/uploads/alice/{NVR}.src.rpm"
TOP = "packages/skyline-hello/1.0/1.fc41"

STORED_RPM = {
    "name": f"{NVR}.x86_64.rpm",
    "path": f"{TOP}/x86_64/{NVR}.x86_64.rpm",
    "sha256": SHA,
    "size": 12345,
    "arch": "x86_64",
}
STORED_LOG = {
    "name": "build.log",
    "path": f"{TOP}/data/logs/x86_64/build.log",
    "sha256": SHA2,
    "size": 0,
    "arch": "x86_64",
}
UPLOADED = [
    {"name": f"{NVR}.x86_64.rpm", "size": 12345, "sha256": SHA},
    {"name": "build.log", "size": 678, "sha256": SHA2},
]
TASK = {"task_id": 11, "build_id": 7, "lease_id": LEASE, "host": "builder-01", "arch": "x86_64"}

EXAMPLES: dict[type, dict[str, Any]] = {
    BuildRequestV1: {
        "srpm_url": SRPM_URL,
        "srpm_sha256": SHA,
        "arches": ["x86_64", "aarch64"],
        "owner": "alice",
        "scratch": True,
        "release": "f41",
        "priority": 10,
    },
    BuildChainRequestV1: {
        "links": [
            {"srpm_url": SRPM_URL, "srpm_sha256": SHA, "arches": ["noarch"]},
            {
                "srpm_url": f"https://src.example.org/uploads/alice/{NVR2}.src.rpm",
                "srpm_sha256": SHA2,
                "arches": ["x86_64"],
                "after": [0],
            },
        ],
        "owner": "alice",
        "scratch": True,
        "release": "f41",
        "priority": 10,
    },
    BuildQueuedV1: {
        "build_id": 7,
        "owner": "alice",
        "nvr": NVR,
        "srpm_sha256": SHA,
        "scratch": False,
        "tasks": [{"task_id": 11, "arch": "x86_64"}, {"task_id": 12, "arch": "aarch64"}],
    },
    BuildStoredV1: {
        "build_id": 7,
        "task_id": 11,
        "owner": "alice",
        "nvr": NVR,
        "arch": "x86_64",
        "host": "builder-01",
        "files": [STORED_RPM, STORED_LOG],
    },
    BuildCompleteV1: {
        "build_id": 7,
        "owner": "alice",
        "nvr": NVR,
        "scratch": False,
        "files": [STORED_RPM, STORED_LOG],
    },
    BuildFailedV1: {
        "build_id": 7,
        "owner": "alice",
        "nvr": NVR,
        "reason": "no host accepted the task",
        "failed_arches": ["aarch64"],
    },
    TaskLeasedV1: {
        **TASK,
        "owner": "alice",
        "nvr": NVR,
        "srpm_url": SRPM_URL,
        "srpm_sha256": SHA,
        "release": "f41",
        "scratch": False,
        "lease_expires": TS,
    },
    TaskStartedV1: {**TASK, "signed_at": TS, "signature": SIG},
    TaskRevokedV1: {**TASK, "nvr": NVR, "reason": "cancelled by alice"},
    TaskFinishedV1: {
        **TASK,
        "nvr": NVR,
        "status": "succeeded",
        "srpm_sha256": SHA,
        "files": UPLOADED,
        "result_digest": SHA2,
        "env_manifest": {"mock": "6.0-1.fc41", "rpm": "4.20.0-1.fc41"},
        "env_digest": SHA,
        "duration": 312.5,
        "signed_at": TS,
        "signature": SIG,
    },
    TaskVerifiedV1: {
        **TASK,
        "nvr": NVR,
        "status": "succeeded",
        "files": UPLOADED,
        "result_digest": SHA2,
    },
    TaskMismatchV1: {
        "task_id": 11,
        "build_id": 7,
        "lease_id": LEASE,
        "host": "builder-01",
        "arch": "x86_64",
        "reason": "digest_mismatch",
        "detail": "result digest differs from 2 other hosts",
    },
    TaskReplicateV1: {
        "task_id": 11,
        "build_id": 7,
        "arch": "x86_64",
        "nvr": NVR,
        "purpose": "replica",
        "reason": "untrusted result needs an independent replica",
        "min_trust": "trusted",
        "exclude_owners": ["alice"],
        "exclude_hosts": ["builder-01"],
        "results": 1,
    },
    HostEnrolledV1: {
        "host": "builder-01",
        "owner": "alice",
        "arches": ["x86_64", "i686"],
        "releases": ["f41", "f42"],
        "trust": "untrusted",
        "public_key": PUBKEY,
        "cpus": 16,
        "memory_mb": 65536,
        "disk_gb": 500,
    },
    HostHeartbeatV1: {
        "host": "builder-01",
        "free_slots": 2,
        "running": 1,
        "signed_at": TS,
        "signature": SIG,
    },
    HostStatusV1: {
        "host": "builder-01",
        "owner": "bob",
        "state": "online",
        "trust": "trusted",
        "arches": ["x86_64"],
        "releases": ["f41"],
        "free_slots": 0,
        "running": 2,
        "max_slots": 2,
        "seen_at": TS,
    },
    HostTrustV1: {
        "host": "builder-01",
        "owner": "bob",
        "old": "untrusted",
        "new": "trusted",
        "reason": "10 consecutive results confirmed by other owners",
        "evidence": {
            "task_id": "11",
            "digest": SHA2,
            "others": ["builder-02"],
            "detail": "agreed on the first try",
        },
        "by": "registry",
    },
    ThrottleEngagedV1: {
        "bad_rate": 0.125,
        "threshold": 0.05,
        "window_seconds": 3600,
        "reason": "too many digest mismatches",
        "results": 40,
    },
    ThrottleReleasedV1: {"bad_rate": 0.01, "threshold": 0.05, "window_seconds": 3600},
}

DROP = object()  # as a value for `mutated`: delete the key instead of setting it


def example(cls: type) -> dict[str, Any]:
    """A fresh deep copy of the class's example body."""
    return copy.deepcopy(EXAMPLES[cls])


def mutated(body: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy of body with the dotted path ("files.0.name") set to value (or DROPped)."""
    body = copy.deepcopy(body)
    *parents, last = path.split(".")
    node: Any = body
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    key: Any = int(last) if isinstance(node, list) else last
    if value is DROP:
        del node[key]
    else:
        node[key] = value
    return body


def param_id(value: Any) -> str | None:
    """Readable test ids: class names for classes, pytest's default for the rest."""
    return value.__name__ if isinstance(value, type) else None


def check_message(
    cls: type,
    body: dict[str, Any],
    summary: str,
    agent: str | None,
    usernames: list[str],
    packages: list[str],
) -> None:
    """Everything a valid message of cls must satisfy, for consumers and notifications."""
    msg = cls(body=body)
    msg.validate()
    assert msg.topic == cls.topic
    assert msg.summary == summary
    assert str(msg).startswith(summary + "\n")
    assert msg.app_name == "Skyline"
    assert msg.agent_name == agent
    assert msg.usernames == usernames
    assert msg.packages == packages
    headers = msg._headers
    assert headers["fedora_messaging_schema"] == get_name(cls)
    assert headers["fedora_messaging_severity"] == cls.severity
    assert {k for k in headers if k.startswith("fedora_messaging_user_")} == {
        f"fedora_messaging_user_{u}" for u in usernames
    }
    assert {k for k in headers if k.startswith("fedora_messaging_rpm_")} == {
        f"fedora_messaging_rpm_{p}" for p in packages
    }
    assert all(headers[f"fedora_messaging_user_{u}"] is True for u in usernames)
    assert all(headers[f"fedora_messaging_rpm_{p}"] is True for p in packages)


def assert_valid(cls: type, body: dict[str, Any]) -> None:
    cls(body=body).validate()


def assert_invalid(cls: type, body: dict[str, Any]) -> None:
    with pytest.raises(jsonschema.exceptions.ValidationError):
        cls(body=body).validate()


def missing_params(classes: list[type]) -> list[Any]:
    """(cls, field) for every required field of every class, for the "missing field" checks."""
    return [
        pytest.param(cls, field, id=f"{cls.__name__}-{field}")
        for cls in classes
        for field in cls.body_schema["required"]
    ]


def required_only(cls: type) -> dict[str, Any]:
    """The example body cut down to the required fields."""
    return {k: v for k, v in example(cls).items() if k in cls.body_schema["required"]}
