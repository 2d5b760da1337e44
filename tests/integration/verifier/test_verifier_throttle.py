"""The farm-wide throttle on a real database: bad verdicts engage it (announced once), good ones
release it, the state survives in the database, and results age out of the window."""

from __future__ import annotations

import dataclasses

import pytest
from fedora_messaging import message as fm
from skyline_messages import (
    TaskMismatchV1,
    TaskReplicateV1,
    TaskVerifiedV1,
    ThrottleEngagedV1,
    ThrottleReleasedV1,
)

from services.common.config import Config
from services.common.service import Runtime
from services.common.signing import public_key_b64
from services.verifier.__main__ import SERVICE
from services.verifier.throttle_store import reevaluate
from tests.integration.verifier.test_verifier_service import (
    KEY,
    LOGS,
    RPMS,
    SRPM,
    attestation,
    judge,
    lease_message,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def config(config: Config) -> Config:
    """Engaged at half of 4 results bad, released under 20%, over the newest 8."""
    return dataclasses.replace(
        config,
        verifier=dataclasses.replace(
            config.verifier,
            throttle_engage_rate=0.5,
            throttle_release_rate=0.2,
            throttle_min_results=4,
            throttle_window_results=8,
        ),
    )


@pytest.fixture
def hosts(peers) -> None:
    peers.host_view("vol-1", public_key_b64(KEY), owner="alice", trust="untrusted")
    peers.host_view("vol-2", public_key_b64(KEY), owner="bob", trust="trusted")
    peers.host_view("core-1", public_key_b64(KEY), owner="fedora", trust="core")


async def leased(runtime: Runtime, host: str, task_id: int) -> fm.Message:
    msg = lease_message(host, task_id)
    await SERVICE.handle(runtime, msg)
    return msg


async def bad_result(runtime, peers, sent, task_id: int, host: str = "vol-1") -> list[fm.Message]:
    """A result built from another package: refused as wrong_package."""
    lease = await leased(runtime, host, task_id)
    peers.stage(lease.body["lease_id"], *LOGS, *RPMS, sourcerpm="other-1.0-1.src.rpm")
    out = await judge(runtime, sent, attestation(lease))
    assert out[0].body["reason"] == "wrong_package"
    return out[1:]


async def good_result(runtime, peers, sent, task_id: int) -> list[fm.Message]:
    """An untrusted host's result, replicated on another owner's trusted host, both agree."""
    first = await leased(runtime, "vol-1", task_id)
    peers.stage(first.body["lease_id"], *LOGS, *RPMS, sourcerpm=SRPM)
    [replicate] = await judge(runtime, sent, attestation(first))
    assert type(replicate) is TaskReplicateV1
    second = await leased(runtime, "vol-2", task_id)
    peers.stage(second.body["lease_id"], *LOGS, *RPMS, sourcerpm=SRPM)
    out = await judge(runtime, sent, attestation(second))
    assert type(out[0]) is TaskVerifiedV1 and out[0].body["rule"] == "agreement"
    return out[1:]


def throttle_messages(messages: list[fm.Message]) -> list[fm.Message]:
    return [m for m in messages if isinstance(m, ThrottleEngagedV1 | ThrottleReleasedV1)]


async def state(runtime: Runtime) -> tuple[bool, int]:
    row = await runtime.pool.fetchrow("SELECT engaged, results FROM throttle_state")
    return row["engaged"], row["results"]


async def test_bad_results_engage_it_once_and_good_ones_release_it(
    runtime, peers, sent, hosts
) -> None:
    # Bad results from two owners' hosts (one owner alone: test_one_owner_alone_...).
    for task_id, host in ((1, "vol-1"), (2, "vol-2"), (3, "vol-1")):
        assert await bad_result(runtime, peers, sent, task_id, host) == []
    [engaged] = await bad_result(runtime, peers, sent, 4, "vol-2")
    assert type(engaged) is ThrottleEngagedV1
    assert engaged.body == {
        "bad_rate": 1.0,
        "threshold": 0.5,
        "window_seconds": 3600,
        "results": 4,
        "reason": "4 of the last 4 results bad (100%) from 2 owners, at or above 50%",
    }
    assert await state(runtime) == (True, 4)
    # Engaged already: more bad results announce nothing more.
    assert await bad_result(runtime, peers, sent, 5) == []

    # Two good results a task. Between the thresholds (hysteresis) it stays engaged:
    # 5 bad 2 good, then 4 of the newest 8 bad, then 2 of 8 (25%, not under 20%).
    for task_id in (6, 7, 8):
        assert await good_result(runtime, peers, sent, task_id) == []
    [released] = await good_result(runtime, peers, sent, 9)
    assert type(released) is ThrottleReleasedV1
    assert released.body == {
        "bad_rate": 0.0,
        "threshold": 0.2,
        "window_seconds": 3600,
        "results": 8,
        "reason": "0 of the last 8 results bad (0%), below 20%",
    }
    assert await state(runtime) == (False, 8)
    assert len(throttle_messages(await sent())) == 2
    # The window keeps only what it judges.
    assert await runtime.pool.fetchval("SELECT count(*) FROM throttle_outcomes") == 8


async def test_one_owner_alone_does_not_engage_it(runtime, peers, sent, hosts) -> None:
    for task_id in range(1, 7):
        assert await bad_result(runtime, peers, sent, task_id, "vol-1") == []
    assert await state(runtime) == (False, None)
    assert await runtime.pool.fetchval("SELECT count(*) FROM throttle_outcomes") == 6


async def test_a_redelivered_verdict_counts_once(runtime, peers, sent, hosts) -> None:
    lease = await leased(runtime, "vol-1", 1)
    peers.stage(lease.body["lease_id"], *LOGS, *RPMS, sourcerpm="other-1.0-1.src.rpm")
    msg = attestation(lease)
    [refused] = await judge(runtime, sent, msg)
    assert type(refused) is TaskMismatchV1
    assert await judge(runtime, sent, msg) == []  # the same delivery again
    # The same attestation in a new message: judged already, counted already.
    again = type(msg)(body=msg.body, topic=msg.topic)
    assert await judge(runtime, sent, again) == []
    assert await runtime.pool.fetchval("SELECT count(*) FROM throttle_outcomes") == 1


async def test_core_results_and_blameless_refusals_do_not_count(
    runtime, peers, sent, hosts
) -> None:
    # A core host's accepted result, and its refused one.
    core = await leased(runtime, "core-1", 1)
    peers.stage(core.body["lease_id"], *LOGS, *RPMS, sourcerpm=SRPM)
    [verified] = await judge(runtime, sent, attestation(core))
    assert verified.body["rule"] == "core"
    await bad_result(runtime, peers, sent, 2, host="core-1")
    # A volunteer's upload the collector lost says nothing of its build.
    lost = await leased(runtime, "vol-1", 3)
    [refused] = await judge(runtime, sent, attestation(lost))
    assert refused.body["reason"] == "missing_upload"
    assert await runtime.pool.fetchval("SELECT count(*) FROM throttle_outcomes") == 0


async def test_the_state_is_kept_and_released_when_the_bad_results_age_out(
    runtime, peers, sent, hosts
) -> None:
    for task_id in (1, 2, 3, 4):
        await bad_result(runtime, peers, sent, task_id, ("vol-1", "vol-2")[task_id % 2])
    assert await state(runtime) == (True, 4)
    # Nothing changed: the periodic check announces nothing.
    before = len(await sent())
    await reevaluate(runtime)
    assert len(await sent()) == before
    # An hour on, no volunteer built anything (they were throttled): the results age out.
    await runtime.pool.execute("UPDATE throttle_outcomes SET at = at - interval '2 hours'")
    await reevaluate(runtime)
    [released] = throttle_messages((await sent())[before:])
    assert type(released) is ThrottleReleasedV1
    assert released.body["reason"] == (
        "0 of the last 0 results bad (0%): fewer than 4 in 3600 s to judge"
    )
    assert await state(runtime) == (False, 0)
    await reevaluate(runtime)
    assert len(throttle_messages(await sent())) == 2  # engaged, released: nothing more


async def test_an_odd_one_out_counts_bad_under_its_owner(runtime, peers, sent, hosts) -> None:
    first = await leased(runtime, "vol-1", 1)
    peers.stage(first.body["lease_id"], *LOGS, *RPMS, sourcerpm=SRPM)
    [replicate] = await judge(runtime, sent, attestation(first))
    assert type(replicate) is TaskReplicateV1
    other = await leased(runtime, "vol-2", 1)
    peers.stage(other.body["lease_id"], *LOGS, *RPMS, sourcerpm=SRPM, content="tampered")
    [tiebreak] = await judge(runtime, sent, attestation(other))
    assert tiebreak.body["purpose"] == "tiebreak"
    core = await leased(runtime, "core-1", 1)
    peers.stage(core.body["lease_id"], *LOGS, *RPMS, sourcerpm=SRPM)
    [verified] = await judge(runtime, sent, attestation(core))
    assert [o["host"] for o in verified.body["odd_ones_out"]] == ["vol-2"]
    rows = await runtime.pool.fetch("SELECT lease_id::text, bad, owner FROM throttle_outcomes")
    assert {(r["lease_id"], r["bad"], r["owner"]) for r in rows} == {
        (first.body["lease_id"], False, "alice"),
        (other.body["lease_id"], True, "bob"),
    }  # the core host's agreeing result does not count
