"""skyline.task.* messages."""

from __future__ import annotations

import pytest
from jsonschema.exceptions import ValidationError
from schema_support import (
    DROP,
    LEASE,
    NVR,
    SHA,
    SIG,
    assert_invalid,
    assert_valid,
    check_message,
    example,
    mutated,
    param_id,
    required_only,
)
from skyline_messages import (
    TaskFinishedV1,
    TaskLeasedV1,
    TaskMismatchV1,
    TaskReplicateV1,
    TaskRevokedV1,
    TaskStartedV1,
    TaskVerifiedV1,
)

CLASSES = [
    TaskLeasedV1,
    TaskStartedV1,
    TaskFinishedV1,
    TaskVerifiedV1,
    TaskMismatchV1,
    TaskReplicateV1,
]
LEASE2 = "4f2b8c1e-9a4d-4e6f-8b7a-1c2d3e4f5a6b"
LEASE3 = "5f2b8c1e-9a4d-4e6f-8b7a-1c2d3e4f5a6b"
PKG = ["skyline-hello"]


@pytest.mark.parametrize(
    ("cls", "body", "summary", "packages"),
    [
        (TaskLeasedV1, example(TaskLeasedV1), f"task 11 ({NVR}, x86_64) leased to builder-01", PKG),
        (TaskStartedV1, example(TaskStartedV1), "builder-01 started task 11 (x86_64)", []),
        (
            TaskFinishedV1,
            example(TaskFinishedV1),
            f"builder-01 succeeded task 11 ({NVR}, x86_64)",
            PKG,
        ),
        (
            TaskFinishedV1,
            mutated(example(TaskFinishedV1), "status", "failed"),
            f"builder-01 failed task 11 ({NVR}, x86_64)",
            PKG,
        ),
        (
            TaskVerifiedV1,
            example(TaskVerifiedV1),
            f"accepted task 11 ({NVR}, x86_64) from builder-01",
            PKG,
        ),
        (
            TaskMismatchV1,
            example(TaskMismatchV1),
            "refused task 11 from builder-01: digest_mismatch"
            " (result digest differs from 2 other hosts)",
            [],
        ),
        (
            TaskMismatchV1,
            required_only(TaskMismatchV1),
            "refused task 11 from builder-01: digest_mismatch"
            " (result digest differs from 2 other hosts)",
            [],
        ),
    ],
    ids=param_id,
)
def test_valid_message(cls, body, summary, packages):
    # Task messages come from hosts and services, not people: no usernames.
    check_message(cls, body, summary, "builder-01", [], packages)


def test_leased_topic_is_per_host():
    assert TaskLeasedV1.topic_for("builder-01") == "skyline.task.leased.builder-01"
    msg = TaskLeasedV1(body=example(TaskLeasedV1), topic=TaskLeasedV1.topic_for("builder-01"))
    msg.validate()
    assert msg.topic == "skyline.task.leased.builder-01"


@pytest.mark.parametrize(
    ("cls", "path", "value"),
    [
        (TaskFinishedV1, "files", []),
        (TaskFinishedV1, "duration", 0),
        (TaskFinishedV1, "env_manifest", {}),
        (TaskFinishedV1, "files.0.name", "skyline-hello-1.0-1.fc41.x86_64.rpm"),
        (TaskFinishedV1, "files.0.name", "python3-foo+bar_1.0~rc1^git.log"),
        (TaskFinishedV1, "files.0.name", "_x"),
        *[
            (TaskMismatchV1, "reason", r)
            for r in ("host_not_allowed", "wrong_package", "wrong_arch", "bad_rpm")
        ],
        *[(cls, "arch", a) for cls in (TaskLeasedV1, TaskStartedV1) for a in ("noarch", "s390x")],
    ],
    ids=param_id,
)
def test_other_valid_values(cls, path, value):
    assert_valid(cls, mutated(example(cls), path, value))


BAD_SHA = ["A" * 64, "a" * 63, "g" * 64, SHA + "\n"]
BAD_HOST = ["builder.example.org", "Builder01", "BUILDER", "-builder", "builder_01", "", "b\n"]
BAD_SIG = [
    SIG[:-2],  # no padding
    SIG[:-3] + "==",  # one character short
    "A" + SIG,  # one character long
    "!" + SIG[1:],
    "-" + SIG[1:],  # URL-safe alphabet
    SIG[:-1] + "A",
    SIG + "\n",
    "",
]
BAD_FILE_NAME = ["../evil.rpm", "..", "..evil", ".hidden", "sub/x.rpm", "/x.rpm", "x.rpm\n"]
BAD_UUID = [LEASE.upper(), "not-a-uuid", LEASE[:-1], LEASE.replace("-", ""), LEASE + "\n"]

INVALID = [
    *[(cls, "arch", "sparc64") for cls in CLASSES],
    *[(cls, "host", v) for cls in CLASSES for v in BAD_HOST],
    *[(cls, "lease_id", v) for cls in (TaskLeasedV1, TaskMismatchV1) for v in BAD_UUID],
    *[(cls, "task_id", 0) for cls in CLASSES],
    (TaskLeasedV1, "build_id", "7"),
    (TaskLeasedV1, "owner", "al ice"),
    (TaskLeasedV1, "srpm_sha256", "A" * 64),
    (TaskLeasedV1, "srpm_url", f"ftp://h.example/{NVR}.src.rpm"),
    (TaskLeasedV1, "srpm_url", f"/tmp/{NVR}.src.rpm"),
    (TaskLeasedV1, "nvr", "..-1-1"),
    (TaskLeasedV1, "nvr", "hello"),
    (TaskLeasedV1, "release", "x" * 33),
    (TaskLeasedV1, "lease_expires", "2026-05-01"),
    (TaskLeasedV1, "scratch", 0),
    *[(TaskStartedV1, "signature", v) for v in BAD_SIG],
    *[(TaskFinishedV1, "signature", v) for v in BAD_SIG],
    (TaskStartedV1, "signed_at", "yesterday"),
    *[(TaskFinishedV1, f, v) for f in ("srpm_sha256", "env_digest") for v in BAD_SHA],
    *[(TaskFinishedV1, "result_digest", v) for v in BAD_SHA],
    *[(TaskFinishedV1, "files.0.sha256", v) for v in BAD_SHA],
    *[(TaskFinishedV1, "files.0.name", v) for v in BAD_FILE_NAME],
    *[(TaskVerifiedV1, "files.1.name", v) for v in BAD_FILE_NAME],
    (TaskFinishedV1, "files.0.size", -1),
    (TaskFinishedV1, "files.0.size", 1.5),
    (TaskFinishedV1, "files.0.path", "x"),
    (TaskFinishedV1, "files.0.sha256", DROP),
    (TaskFinishedV1, "status", "crashed"),
    (TaskFinishedV1, "duration", -1),
    (TaskFinishedV1, "env_manifest.mock", 6),
    (TaskFinishedV1, "env_manifest.mock", "x" * 501),
    (TaskFinishedV1, "env_manifest", {f"p{i}": "1" for i in range(201)}),
    (TaskVerifiedV1, "status", "pending"),
    (TaskVerifiedV1, "result_digest", "A" * 64),
    (TaskMismatchV1, "reason", "because"),
    (TaskMismatchV1, "reason", "wrong_version"),
    (TaskMismatchV1, "detail", "x" * 2001),
]


@pytest.mark.parametrize(("cls", "path", "value"), INVALID, ids=param_id)
def test_invalid_body(cls, path, value):
    assert_invalid(cls, mutated(example(cls), path, value))


def test_accepted_result_names_agreeing_hosts_rule_and_odd_ones_out():
    body = {
        **example(TaskVerifiedV1),
        "comparison_key": "a" * 64,
        "rule": "quorum",
        "agreeing": [
            {"host": "builder-01", "owner": "alice", "trust": "untrusted", "lease_id": LEASE},
            {"host": "builder-02", "owner": "bob", "trust": "trusted", "lease_id": LEASE2},
        ],
        "odd_ones_out": [
            {"host": "cheat-1", "lease_id": LEASE3, "comparison_key": "b" * 64, "detail": "x"}
        ],
        "not_reproducible": False,
    }
    msg = TaskVerifiedV1(body=body)
    msg.validate()
    assert msg.rule == "quorum"
    assert [a["host"] for a in msg.agreeing] == ["builder-01", "builder-02"]
    assert msg.odd_ones_out[0]["host"] == "cheat-1"
    assert "builder-01, builder-02 (quorum)" in msg.summary
    with pytest.raises(ValidationError):
        TaskVerifiedV1(body={**body, "rule": "because"}).validate()


def test_replicate_request_is_bounded():
    body = example(TaskReplicateV1)
    TaskReplicateV1(body=body).validate()
    too_many = [f"owner{i}" for i in range(101)]
    with pytest.raises(ValidationError):
        TaskReplicateV1(body={**body, "exclude_owners": too_many}).validate()
    with pytest.raises(ValidationError):
        TaskReplicateV1(body={**body, "purpose": "build"}).validate()


def test_revoked_names_its_host_lease_and_reason():
    body = example(TaskRevokedV1)
    msg = TaskRevokedV1(body=body, topic=TaskRevokedV1.topic_for("builder-01"))
    msg.validate()
    assert (msg.party, msg.lease_id, msg.reason) == ("builder-01", LEASE, "cancelled by alice")
    assert msg.summary == f"lease {LEASE} of task 11 on builder-01 revoked: cancelled by alice"
    assert msg.packages == ["skyline-hello"]
    with pytest.raises(ValidationError):
        TaskRevokedV1(body={**body, "reason": "x" * 501}).validate()
    with pytest.raises(ValidationError):
        TaskRevokedV1(body={k: v for k, v in body.items() if k != "reason"}).validate()
