"""skyline.host.* messages."""

from __future__ import annotations

import pytest
from schema_support import (
    DROP,
    PUBKEY,
    SIG,
    assert_invalid,
    assert_valid,
    check_message,
    example,
    mutated,
    param_id,
)
from skyline_messages import HostEnrolledV1, HostHeartbeatV1, HostStatusV1, HostTrustV1

CLASSES = [HostEnrolledV1, HostHeartbeatV1, HostStatusV1, HostTrustV1]


@pytest.mark.parametrize(
    ("cls", "body", "summary", "agent", "usernames"),
    [
        (
            HostEnrolledV1,
            example(HostEnrolledV1),
            "alice enrolled host builder-01 (x86_64, i686) as untrusted",
            "alice",
            ["alice"],
        ),
        (
            HostEnrolledV1,
            mutated(example(HostEnrolledV1), "trust", "core"),
            "alice enrolled host builder-01 (x86_64, i686) as core",
            "alice",
            ["alice"],
        ),
        # A heartbeat has no owner: the host itself is the agent, and nobody is notified.
        (
            HostHeartbeatV1,
            example(HostHeartbeatV1),
            "builder-01 is alive with 2 free slot(s)",
            "builder-01",
            [],
        ),
        (
            HostStatusV1,
            example(HostStatusV1),
            "builder-01 is online (trusted) with 0 free slot(s)",
            "bob",
            ["bob"],
        ),
        (
            HostStatusV1,
            mutated(example(HostStatusV1), "state", "quarantined"),
            "builder-01 is quarantined (trusted) with 0 free slot(s)",
            "bob",
            ["bob"],
        ),
        # The policy's transition: the registry is the agent, the host's owner is told.
        (
            HostTrustV1,
            example(HostTrustV1),
            "builder-01 went from untrusted to trusted"
            " (registry: 10 consecutive results confirmed by other owners)",
            "registry",
            ["bob"],
        ),
        # An admin's decision carries no evidence.
        (
            HostTrustV1,
            mutated(
                {**example(HostTrustV1), "new": "core", "by": "admin", "reason": "our machine"},
                "evidence",
                DROP,
            ),
            "builder-01 went from untrusted to core (admin: our machine)",
            "admin",
            ["bob"],
        ),
        (
            HostTrustV1,
            {**example(HostTrustV1), "old": "trusted", "new": "quarantined"},
            "builder-01 went from trusted to quarantined"
            " (registry: 10 consecutive results confirmed by other owners)",
            "registry",
            ["bob"],
        ),
    ],
    ids=param_id,
)
def test_valid_message(cls, body, summary, agent, usernames):
    check_message(cls, body, summary, agent, usernames, [])


@pytest.mark.parametrize("host", ["b", "0", "builder-01", "a" * 63, "rpi4-arm-7"])
@pytest.mark.parametrize("cls", CLASSES, ids=param_id)
def test_host_name_accepted(cls, host):
    assert_valid(cls, mutated(example(cls), "host", host))


BAD_HOST = [
    "builder.example.org",
    "builder.",
    "Builder01",
    "BUILDER",
    "-builder",
    "builder_01",
    "builder 01",
    "builder/01",
    "builder*",
    "builder#",
    "",
    "b" * 64,
    "builder\n",
]
BAD_ARCHES = [["sparc64"], ["x86_64", "sparc64"], [], ["x86_64", "x86_64"], "x86_64"]
BAD_SIG = [SIG[:-2], SIG[:-3] + "==", "A" + SIG, "!" + SIG[1:], SIG[:-1] + "A", SIG + "\n", ""]
BAD_KEY = [PUBKEY[:-1], PUBKEY[:-1] + "A", "A" + PUBKEY, "!" + PUBKEY[1:], PUBKEY + "\n", ""]

INVALID = [
    *[(cls, "host", v) for cls in CLASSES for v in BAD_HOST],
    *[(HostEnrolledV1, "public_key", v) for v in BAD_KEY],
    *[(HostHeartbeatV1, "signature", v) for v in BAD_SIG],
    *[(cls, "arches", v) for cls in (HostEnrolledV1, HostStatusV1) for v in BAD_ARCHES],
    (HostEnrolledV1, "owner", "al ice"),
    (HostEnrolledV1, "owner", "alice\n"),
    (HostEnrolledV1, "trust", "root"),
    (HostEnrolledV1, "releases", ["f41", "f41"]),
    (HostEnrolledV1, "releases", ["x" * 33]),
    (HostEnrolledV1, "releases", [f"f{i}" for i in range(65)]),
    (HostEnrolledV1, "cpus", 0),
    (HostEnrolledV1, "memory_mb", -1),
    (HostEnrolledV1, "disk_gb", "500"),
    (HostHeartbeatV1, "free_slots", -1),
    (HostHeartbeatV1, "free_slots", 1025),
    (HostHeartbeatV1, "free_slots", 1.5),
    (HostHeartbeatV1, "running", -1),
    (HostHeartbeatV1, "signed_at", "2026-05-01"),
    (HostHeartbeatV1, "signed_at", "2026-05-01T12:00:00.000000000000000000000Z"),
    (HostHeartbeatV1, "owner", "alice"),
    (HostStatusV1, "state", "dead"),
    (HostStatusV1, "trust", "Trusted"),
    (HostStatusV1, "free_slots", 2000),
    (HostStatusV1, "seen_at", 1700000000),
    (HostStatusV1, "running", -1),
    (HostStatusV1, "running", 1025),
    (HostStatusV1, "max_slots", 0),
    (HostStatusV1, "max_slots", 1025),
    (HostStatusV1, "max_slots", 2.5),
    (HostStatusV1, "max_slots", "4"),
    (HostTrustV1, "old", "root"),
    (HostTrustV1, "new", "Trusted"),
    (HostTrustV1, "new", None),
    (HostTrustV1, "reason", ""),
    (HostTrustV1, "reason", "x" * 501),
    (HostTrustV1, "reason", 42),
    (HostTrustV1, "by", "an admin"),
    (HostTrustV1, "by", ""),
    (HostTrustV1, "owner", "bob\n"),
    (HostTrustV1, "evidence", "task 11"),
    (HostTrustV1, "evidence", {}),
    (HostTrustV1, "evidence.bogus", 1),
    (HostTrustV1, "evidence.task_id", ""),
    (HostTrustV1, "evidence.task_id", "1" * 65),
    (HostTrustV1, "evidence.digest", "f" * 129),
    (HostTrustV1, "evidence.others", ["Builder_02"]),
    (HostTrustV1, "evidence.others", ["builder-02", "builder-02"]),
    (HostTrustV1, "evidence.others", [f"b{i}" for i in range(33)]),
    (HostTrustV1, "evidence.detail", "x" * 2001),
]


@pytest.mark.parametrize(("cls", "path", "value"), INVALID, ids=param_id)
def test_invalid_body(cls, path, value):
    assert_invalid(cls, mutated(example(cls), path, value))


def test_status_slots_properties():
    msg = HostStatusV1(body=mutated(example(HostStatusV1), "max_slots", 16))
    assert (msg.running, msg.max_slots) == (2, 16)
    # From a registry that does not say: nothing running, and one lease at a time.
    body = mutated(mutated(example(HostStatusV1), "running", DROP), "max_slots", DROP)
    bare = HostStatusV1(body=body)
    assert (bare.running, bare.max_slots) == (0, 1)
