"""Replicas and tie-breaks the verifier asks for (task.replicate), on a real database: who may
take them, what waits and says why, which lease is accepted, and what build.complete names."""

from __future__ import annotations

from typing import Any

import pytest
from skyline_messages import (
    BuildCompleteV1,
    BuildFailedV1,
    HostStatusV1,
    TaskLeasedV1,
    TaskReplicateV1,
    TaskVerifiedV1,
)

from services.common.service import Runtime
from services.dispatcher import handlers
from services.dispatcher.__main__ import SERVICE
from tests.integration.dispatcher.test_dispatcher_service import (
    copy_of,
    finished,
    mismatch,
    new_messages,
    of_type,
    request,
    status,
    stored,
    task_rows,
    verified,
)

pytestmark = pytest.mark.integration


def volunteer(host: str, owner: str, trust: str = "untrusted", **changes: Any) -> HostStatusV1:
    return status(host, trust=trust, owner=owner, **changes)


def replicate(
    lease: TaskLeasedV1,
    *,
    purpose: str = "replica",
    min_trust: str = "untrusted",
    exclude_hosts: tuple[str, ...] = ("alice-1",),
    exclude_owners: tuple[str, ...] = ("alice",),
    results: int | None = 1,
    reason: str = "an untrusted host's result needs an independent replica",
) -> TaskReplicateV1:
    b = lease.body
    body = {k: b[k] for k in ("task_id", "build_id", "arch", "nvr")}
    body |= {
        "purpose": purpose,
        "reason": reason,
        "min_trust": min_trust,
        "exclude_hosts": list(exclude_hosts),
        "exclude_owners": list(exclude_owners),
    }
    if results is not None:
        body["results"] = results
    return TaskReplicateV1(body=body)


def accepted(
    lease: TaskLeasedV1, agreeing: list[tuple[TaskLeasedV1, str, str]], rule: str
) -> TaskVerifiedV1:
    """The verifier's acceptance of `lease`'s result, agreed by (lease, owner, trust) each."""
    msg = verified(lease)
    body = {
        **msg.body,
        "rule": rule,
        "comparison_key": "f" * 64,
        "agreeing": [
            {"host": a.body["host"], "owner": owner, "trust": trust, "lease_id": a.body["lease_id"]}
            for a, owner, trust in agreeing
        ],
    }
    return TaskVerifiedV1(body=body)


async def leases_of(runtime: Runtime) -> dict[str, tuple[str, str, str]]:
    """Every lease: lease id -> (host, purpose, state)."""
    rows = await runtime.pool.fetch("SELECT * FROM leases ORDER BY created_at")
    return {str(r["lease_id"]): (r["host"], r["purpose"], r["state"]) for r in rows}


async def first_result_waits(runtime: Runtime, sent, **request_changes: Any) -> TaskLeasedV1:
    """alice-1 (an untrusted volunteer) built the task; the verifier asked for a replica."""
    await SERVICE.handle(runtime, request(**request_changes))
    [first] = of_type(
        await new_messages(runtime, sent, volunteer("alice-1", "alice")), TaskLeasedV1
    )
    assert first.body["purpose"] == "build"
    await SERVICE.handle(runtime, finished(first))
    assert of_type(await new_messages(runtime, sent, replicate(first)), TaskLeasedV1) == []
    return first


async def test_a_replica_goes_to_another_owners_host_never_the_excluded_ones(runtime, sent) -> None:
    first = await first_result_waits(runtime, sent, release="f40")
    [task] = await task_rows(runtime)
    assert (task["state"], task["purpose"], task["min_trust"]) == ("queued", "replica", "untrusted")
    assert task["waiting"] == (
        "waiting for agreement: an untrusted host's result needs an independent replica"
    )
    # The first result waits for agreement: its lease is finished, and its slot free again.
    assert await leases_of(runtime) == {first.body["lease_id"]: ("alice-1", "build", "finished")}
    # Neither the host that built it nor another host of its owner gets the replica.
    assert await new_messages(runtime, sent, volunteer("alice-1", "alice", free_slots=4)) == []
    assert await new_messages(runtime, sent, volunteer("alice-2", "alice", free_slots=4)) == []
    assert (
        await new_messages(runtime, sent, volunteer("mallory-1", "mal", trust="quarantined")) == []
    )
    [replica] = await new_messages(runtime, sent, volunteer("bob-1", "bob"))
    assert type(replica) is TaskLeasedV1
    b, f = replica.body, first.body
    assert (b["host"], b["purpose"], b["task_id"]) == ("bob-1", "replica", f["task_id"])
    assert b["lease_id"] != f["lease_id"]
    # The same SRPM bytes and build settings as the first build.
    for key in (
        "build_id",
        "arch",
        "nvr",
        "owner",
        "srpm_url",
        "srpm_sha256",
        "release",
        "scratch",
    ):
        assert b[key] == f[key]
    [task] = await task_rows(runtime)
    assert (task["state"], task["host"], task["attempts"], task["replica_attempts"]) == (
        "leased",
        "bob-1",
        1,
        1,
    )


async def test_a_core_tiebreak_without_a_core_host_waits_and_says_why(
    runtime, sent, client
) -> None:
    first = await first_result_waits(runtime, sent)
    reason = "results disagree: a core host settles it"
    tiebreak = replicate(
        first,
        purpose="tiebreak",
        min_trust="core",
        exclude_hosts=("alice-1", "bob-1"),
        exclude_owners=(),
        results=2,
        reason=reason,
    )
    await SERVICE.handle(runtime, tiebreak)
    for host, owner in (("carol-1", "carol"), ("dave-1", "dave")):
        assert await new_messages(runtime, sent, volunteer(host, owner, trust="trusted")) == []
    queue = await (await client.get("/api/v1/queue")).json()
    [waiting] = queue["waiting"]
    assert waiting == {
        "task_id": first.body["task_id"],
        "build_id": first.body["build_id"],
        "arch": "noarch",
        "state": "queued",
        "purpose": "tiebreak",
        "min_trust": "core",
        "waiting": f"waiting for agreement: {reason}",
        "queue_reason": "waiting for a core host (none online)",
    }
    build = await (await client.get(f"/api/v1/builds/{first.body['build_id']}")).json()
    assert build["state"] == "building"
    assert build["waiting"] == [f"noarch: waiting for agreement: {reason}"]
    [task] = build["tasks"]
    assert (task["state"], task["purpose"], task["min_trust"]) == ("queued", "tiebreak", "core")
    assert task["exclude_hosts"] == ["alice-1", "bob-1"]
    assert [(lease["host"], lease["purpose"], lease["state"]) for lease in task["leases"]] == [
        ("alice-1", "build", "finished")
    ]
    assert task["leases"][0]["finished_at"] is not None
    # A core host comes: it takes the tie-break.
    [lease] = await new_messages(runtime, sent, status("core-1"))
    assert (lease.body["host"], lease.body["purpose"]) == ("core-1", "tiebreak")
    build = await (await client.get(f"/api/v1/builds/{first.body['build_id']}")).json()
    assert [(lease["host"], lease["state"]) for lease in build["tasks"][0]["leases"]] == [
        ("alice-1", "finished"),
        ("core-1", "open"),
    ]


async def test_accepting_the_first_lease_completes_the_build_naming_who_agreed(
    runtime, sent, client
) -> None:
    first = await first_result_waits(runtime, sent)
    [replica] = await new_messages(runtime, sent, volunteer("bob-1", "bob"))
    await SERVICE.handle(runtime, finished(replica))
    agreed = [(first, "alice", "untrusted"), (replica, "bob", "untrusted")]
    assert await new_messages(runtime, sent, accepted(first, agreed, "agreement")) == []
    [task] = await task_rows(runtime)
    assert (task["state"], task["host"], str(task["lease_id"])) == (
        "verified",
        "alice-1",
        first.body["lease_id"],
    )
    assert (task["rule"], task["waiting"]) == ("agreement", None)
    assert await leases_of(runtime) == {
        first.body["lease_id"]: ("alice-1", "build", "accepted"),
        replica.body["lease_id"]: ("bob-1", "replica", "superseded"),
    }
    # Late verdicts about either lease change nothing.
    for late in (verified(replica), verified(replica, "failed"), mismatch(replica, "bad_rpm")):
        assert await new_messages(runtime, sent, late) == []
    [complete] = await new_messages(runtime, sent, stored(first))
    assert type(complete) is BuildCompleteV1
    assert complete.tasks == [
        {
            "task_id": first.body["task_id"],
            "arch": "noarch",
            "agreeing": ["alice-1", "bob-1"],
            "rule": "agreement",
        }
    ]
    build = await (await client.get(f"/api/v1/builds/{first.body['build_id']}")).json()
    [task] = build["tasks"]
    assert [a["host"] for a in task["agreeing"]] == ["alice-1", "bob-1"]
    assert (build["state"], build["waiting"]) == ("complete", [])


async def test_a_stale_or_redelivered_replicate_request_does_not_lease_twice(runtime, sent) -> None:
    first = await first_result_waits(runtime, sent)
    ask = replicate(first)
    [replica] = await new_messages(runtime, sent, volunteer("bob-1", "bob", free_slots=4))
    await SERVICE.handle(runtime, volunteer("carol-1", "carol", free_slots=4))
    # Redelivered (same id), or asked again for the same round (new id, same count, or no
    # count with the same excluded hosts): the replica already leased stays the only one.
    for again in (copy_of(ask), replicate(first), replicate(first, results=None)):
        assert await new_messages(runtime, sent, again) == []
    assert len(await leases_of(runtime)) == 2
    [task] = await task_rows(runtime)
    assert (task["state"], str(task["lease_id"])) == ("leased", replica.body["lease_id"])
    # The next round (two results now) is acted on.
    await SERVICE.handle(runtime, finished(replica))
    tiebreak = replicate(first, purpose="tiebreak", exclude_hosts=("alice-1", "bob-1"), results=2)
    [third] = await new_messages(runtime, sent, tiebreak)
    assert (third.body["host"], third.body["purpose"]) == ("carol-1", "tiebreak")
    # And the older round, arriving late, is not.
    assert await new_messages(runtime, sent, replicate(first)) == []
    assert [s for _, _, s in (await leases_of(runtime)).values()] == [
        "finished",
        "finished",
        "open",
    ]


async def test_an_official_build_prefers_a_free_core_host(runtime, sent) -> None:
    await SERVICE.handle(runtime, volunteer("alice-1", "alice", free_slots=8))
    await SERVICE.handle(runtime, status("core-1", free_slots=1))
    [official] = of_type(await new_messages(runtime, sent, request()), TaskLeasedV1)
    assert (official.body["host"], official.body["scratch"]) == ("core-1", False)
    # The core host is full: the next official build goes to the volunteer, whose result the
    # verifier accepts only with independent agreement. Scratch builds take no preference.
    [second] = of_type(await new_messages(runtime, sent, request()), TaskLeasedV1)
    assert second.body["host"] == "alice-1"
    await SERVICE.handle(runtime, status("core-1", free_slots=1, max_slots=2))
    [scratch] = of_type(await new_messages(runtime, sent, request(scratch=True)), TaskLeasedV1)
    assert scratch.body["host"] == "alice-1"


async def test_a_failed_replica_is_built_elsewhere_without_failing_the_build(runtime, sent) -> None:
    await first_result_waits(runtime, sent)
    hosts = [(f"{name}-1", name) for name in ("bob", "carol", "dave", "erin")]
    for attempt, (host, owner) in enumerate(hosts[: handlers.MAX_ATTEMPTS], start=1):
        [lease] = await new_messages(runtime, sent, volunteer(host, owner))
        assert (lease.body["host"], lease.body["purpose"]) == (host, "replica")
        new = await new_messages(runtime, sent, verified(lease, "failed"))
        [task] = await task_rows(runtime)
        if attempt < handlers.MAX_ATTEMPTS:
            # One host's failure says nothing against the result that waits for agreement.
            assert new == []
            assert (task["state"], task["purpose"], task["min_trust"]) == (
                "queued",
                "replica",
                "untrusted",
            )
            assert host in task["refused_hosts"]
            assert task["exclude_owners"] == ["alice"]
            # The host that failed it does not get it again.
            assert await new_messages(runtime, sent, volunteer(host, owner)) == []
    [failed] = new
    assert type(failed) is BuildFailedV1
    assert "replica failed on dave-1 (3 replica leases)" in failed.body["reason"]
    assert task["state"] == "failed"
    states = [s for _, _, s in (await leases_of(runtime)).values()]
    assert states == ["finished", "failed", "failed", "failed"]


async def test_a_refused_replica_excludes_its_host_and_is_built_elsewhere(runtime, sent) -> None:
    first = await first_result_waits(runtime, sent)
    [replica] = await new_messages(runtime, sent, volunteer("bob-1", "bob"))
    assert await new_messages(runtime, sent, mismatch(replica, "digest_mismatch")) == []
    [task] = await task_rows(runtime)
    assert (task["state"], task["purpose"], task["refused_hosts"]) == (
        "queued",
        "replica",
        ["bob-1"],
    )
    assert await new_messages(runtime, sent, volunteer("bob-1", "bob")) == []
    [again] = await new_messages(runtime, sent, volunteer("carol-1", "carol"))
    assert (again.body["host"], again.body["purpose"]) == ("carol-1", "replica")
    # No agreement within the verifier's results limit: its final word fails the build.
    [failed] = await new_messages(runtime, sent, mismatch(again, "no_agreement"))
    assert type(failed) is BuildFailedV1
    assert "no agreement" in failed.body["reason"]
    assert (await leases_of(runtime))[first.body["lease_id"]][2] == "finished"


async def test_an_expired_replica_lease_is_requeued_with_its_constraints(runtime, sent) -> None:
    await first_result_waits(runtime, sent)
    [replica] = await new_messages(runtime, sent, volunteer("bob-1", "bob"))
    await SERVICE.handle(runtime, volunteer("bob-1", "bob", free_slots=0, running=1))
    await runtime.pool.execute("UPDATE tasks SET lease_expires = now() - interval '1 second'")
    await handlers.requeue_expired_leases(runtime)
    [task] = await task_rows(runtime)
    assert (task["state"], task["purpose"], task["exclude_owners"]) == (
        "queued",
        "replica",
        ["alice"],
    )
    assert (await leases_of(runtime))[replica.body["lease_id"]][2] == "expired"
    assert await new_messages(runtime, sent, volunteer("alice-2", "alice")) == []
    [again] = await new_messages(runtime, sent, volunteer("carol-1", "carol"))
    assert (again.body["host"], again.body["purpose"]) == ("carol-1", "replica")


async def test_replicate_requests_for_tasks_or_builds_that_are_over_are_ignored(
    runtime, sent
) -> None:
    # Accepted and stored already.
    first = await first_result_waits(runtime, sent)
    await SERVICE.handle(runtime, accepted(first, [(first, "alice", "untrusted")], "agreement"))
    assert await new_messages(runtime, sent, replicate(first, results=2)) == []
    await SERVICE.handle(runtime, stored(first))
    assert await new_messages(runtime, sent, replicate(first, results=3)) == []
    # The build failed (another arch did).
    await SERVICE.handle(runtime, volunteer("alice-1", "alice", state="offline", free_slots=0))
    await SERVICE.handle(runtime, request(arches=["noarch", "x86_64"], scratch=True))
    leases = of_type(
        await new_messages(runtime, sent, status("core-2", free_slots=2)), TaskLeasedV1
    )
    await SERVICE.handle(runtime, verified(leases[1], "failed"))
    assert await new_messages(runtime, sent, replicate(leases[0], exclude_hosts=("core-2",))) == []
    tasks = await task_rows(runtime)
    assert [t["state"] for t in tasks] == ["stored", "leased", "failed"]
    assert [t["waiting"] for t in tasks] == [None, None, None]
