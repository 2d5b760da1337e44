"""Tests for the pure parts of services.verifier.agreement: risk signals and the messages
built from a decision (the flow itself runs on a real database in tests/integration)."""

from __future__ import annotations

import random
import uuid
from typing import Any

import pytest
from skyline_messages import TaskFinishedV1

from services.registry.trust import Trust
from services.verifier import agreement, policy
from services.verifier.agreement import Earlier, assess_risk

NVR = "hello-1.0-1"


def finished(duration: float = 100.0, env: str = "e" * 64) -> TaskFinishedV1:
    return TaskFinishedV1(
        body={
            "task_id": 5,
            "build_id": 2,
            "lease_id": str(uuid.uuid4()),
            "host": "h1",
            "arch": "x86_64",
            "nvr": NVR,
            "status": "succeeded",
            "srpm_sha256": "a" * 64,
            "files": [{"name": f"{NVR}.x86_64.rpm", "size": 1, "sha256": "b" * 64}],
            "result_digest": "c" * 64,
            "env_manifest": {},
            "env_digest": env,
            "duration": duration,
            "signed_at": "2026-01-01T00:00:00+00:00",
            "signature": "s",
        }
    )


def test_a_host_with_no_record_has_built_nothing() -> None:
    risk = assess_risk(finished(), Earlier(False, None, []), critical=False)
    assert risk == policy.Risk(new_package=True)


def test_a_changed_environment_is_a_risk() -> None:
    assert assess_risk(finished(), Earlier(True, "f" * 64, []), critical=False).new_environment
    assert not assess_risk(finished(), Earlier(True, "e" * 64, []), critical=True).new_environment
    assert assess_risk(finished(), Earlier(True, "e" * 64, []), critical=True).critical_package


@pytest.mark.parametrize(
    ("duration", "others", "outlier"),
    [
        (100.0, [90.0, 110.0, 1000.0], False),
        (400.0, [100.0, 120.0], True),  # more than 3x the median
        (30.0, [100.0, 95.0, 120.0], True),  # less than a third
        (34.0, [100.0], False),
        (5000.0, [], False),  # nothing to compare with
        (5.0, [0.0], False),
    ],
)
def test_build_time_outliers(duration: float, others: list[float], outlier: bool) -> None:
    risk = assess_risk(finished(duration), Earlier(True, None, others), critical=False)
    assert risk.build_time_outlier is outlier


def row(host: str, trust: str, key: str, owner: str | None = None) -> dict[str, Any]:
    return {
        "lease_id": uuid.uuid4(),
        "host": host,
        "owner": owner or f"owner-of-{host}",
        "trust": trust,
        "comparison_key": key * 64,
        "result_digest": key * 64,
        "total_results": 0,
        "consecutive_confirmed": 0,
    }


def test_verified_message_names_the_agreeing_and_the_odd_ones_out() -> None:
    rows = [row("vol", "untrusted", "a"), row("tr", "trusted", "b"), row("core", "core", "a")]
    decision = policy.decide(
        [agreement.as_policy_result(r) for r in rows],
        policy.BuildKind.OFFICIAL,
        policy.Risk(),
        policy.PolicyConfig(),
        random.Random(0),
    )
    assert decision.action == policy.Action.ACCEPT
    winner = agreement.chosen([r for r in rows if r["comparison_key"] == decision.digest])
    assert winner["host"] == "core"  # a core host's result is preferred to the earliest
    attested = TaskFinishedV1(
        body={**finished().body, "lease_id": str(winner["lease_id"]), "host": "core"}
    )
    odd_lease = str(rows[1]["lease_id"])
    msg = agreement.verified_message(decision, rows, attested, {odd_lease: "x" * 5000})
    msg.validate()
    assert [a["host"] for a in msg.agreeing] == ["vol", "core"]
    assert msg.agreeing[0] == {
        "host": "vol",
        "owner": "owner-of-vol",
        "trust": "untrusted",
        "lease_id": str(rows[0]["lease_id"]),
    }
    [odd] = msg.odd_ones_out
    assert (odd["host"], odd["lease_id"], odd["comparison_key"]) == ("tr", odd_lease, "b" * 64)
    assert odd["detail"] == "x" * 2000  # bounded to the schema's limit
    assert (msg.rule, msg.not_reproducible, msg.body["comparison_key"]) == ("core", False, "a" * 64)


def test_chosen_is_the_earliest_without_a_core_host() -> None:
    rows = [row("a", "untrusted", "k"), row("b", "trusted", "k")]
    assert agreement.chosen(rows) is rows[0]


@pytest.mark.parametrize(
    ("action", "purpose"),
    [(policy.Action.REPLICA, "replica"), (policy.Action.TIEBREAK, "tiebreak")],
)
def test_replicate_message(action: policy.Action, purpose: str) -> None:
    rows = [row("vol", "untrusted", "a", "bob"), row("tr", "trusted", "b", "carol")]
    decision = policy.Decision(
        action, "r" * 600, min_trust=Trust.CORE, exclude_owners=frozenset({"carol", "bob"})
    )
    msg = agreement.replicate_message(decision, rows, finished())
    msg.validate()
    assert msg.body == {
        "task_id": 5,
        "build_id": 2,
        "arch": "x86_64",
        "nvr": NVR,
        "purpose": purpose,
        "reason": "r" * 500,
        "min_trust": "core",
        "exclude_owners": ["bob", "carol"],
        "exclude_hosts": ["tr", "vol"],
        "results": 2,
    }


def test_refusal_names_the_newest_lease() -> None:
    newest = finished()
    msg = agreement.refusal_message(policy.Decision(policy.Action.REFUSE, "no agreement"), newest)
    msg.validate()
    assert (msg.body["reason"], msg.body["lease_id"]) == ("no_agreement", newest.lease_id)
