"""The dispatcher against a real database: requests, leases, verdicts, completion, races."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import itertools
import json
import uuid
from typing import Any

import pytest
from fedora_messaging import message as fm
from skyline_messages import (
    BuildCompleteV1,
    BuildFailedV1,
    BuildQueuedV1,
    BuildRequestV1,
    BuildStoredV1,
    HostStatusV1,
    TaskFinishedV1,
    TaskLeasedV1,
    TaskMismatchV1,
    TaskVerifiedV1,
)

from services.common.errors import Reject
from services.common.service import Runtime
from services.dispatcher import handlers, store
from services.dispatcher.__main__ import SERVICE

pytestmark = pytest.mark.integration

NVR = "skyline-hello-1.0-1"
SRPM_URL = f"http://127.0.0.1:1/sources/{NVR}.src.rpm"
_clock = itertools.count()
START = datetime.datetime.now(datetime.UTC)


def request(sender: str | None = None, **changes: Any) -> BuildRequestV1:
    """A request as `sender` (default: its owner) publishes it, on its own routing key."""
    body = {"srpm_url": SRPM_URL, "srpm_sha256": "a" * 64, "arches": ["noarch"], "owner": "alice"}
    body.update(changes)
    return BuildRequestV1(body=body, topic=BuildRequestV1.topic_for(sender or body["owner"]))


def status(
    host: str = "core-1",
    *,
    trust: str = "core",
    arches: tuple[str, ...] = ("noarch", "x86_64"),
    releases: tuple[str, ...] = ("f40",),
    free_slots: int = 1,
    state: str = "online",
    owner: str = "infra",
    running: int = 0,
    max_slots: int = 8,
) -> HostStatusV1:
    # Every status is newer than the one before (the dispatcher never goes back in time).
    seen = START + datetime.timedelta(seconds=next(_clock))
    return HostStatusV1(
        body={
            "host": host,
            "owner": owner,
            "state": state,
            "trust": trust,
            "arches": list(arches),
            "releases": list(releases),
            "free_slots": free_slots,
            "running": running,
            "max_slots": max_slots,
            "seen_at": seen.isoformat(),
        }
    )


def verified(lease: TaskLeasedV1, outcome: str = "succeeded") -> TaskVerifiedV1:
    b = lease.body
    files = [{"name": f"{NVR}.{b['arch']}.rpm", "size": 10, "sha256": "c" * 64}]
    return TaskVerifiedV1(
        body={
            **{k: b[k] for k in ("task_id", "build_id", "lease_id", "host", "arch", "nvr")},
            "status": outcome,
            "files": files if outcome == "succeeded" else [],
            "result_digest": "d" * 64,
        }
    )


def finished(lease: TaskLeasedV1, host: str | None = None) -> TaskFinishedV1:
    """The holder's attestation (the bus has checked it came from `host`'s own user)."""
    b = {**lease.body, "host": host or lease.body["host"]}
    body = {k: b[k] for k in ("task_id", "build_id", "lease_id", "host", "arch", "nvr")}
    body |= {
        "status": "succeeded",
        "srpm_sha256": b["srpm_sha256"],
        "files": [],
        "result_digest": "d" * 64,
        "env_manifest": {},
        "env_digest": "e" * 64,
        "duration": 1.0,
        "signed_at": "2026-01-01T00:00:00+00:00",
        "signature": "A" * 86 + "==",
    }
    return TaskFinishedV1(body=body, topic=TaskFinishedV1.topic_for(body["host"]))


def mismatch(lease: TaskLeasedV1, reason: str, host: str | None = None) -> TaskMismatchV1:
    b = lease.body
    return TaskMismatchV1(
        body={
            "task_id": b["task_id"],
            "build_id": b["build_id"],
            "lease_id": b["lease_id"],
            "host": host or b["host"],
            "arch": b["arch"],
            "reason": reason,
            "detail": "test",
        }
    )


def stored(lease: TaskLeasedV1) -> BuildStoredV1:
    b = lease.body
    name = f"{NVR}.{b['arch']}.rpm"
    return BuildStoredV1(
        body={
            **{k: b[k] for k in ("build_id", "task_id", "owner", "nvr", "arch", "host")},
            "files": [
                {
                    "name": name,
                    "path": f"packages/skyline-hello/1.0/1/{b['arch']}/{name}",
                    "sha256": "c" * 64,
                    "size": 10,
                    "arch": b["arch"],
                }
            ],
        }
    )


def copy_of(msg: fm.Message) -> fm.Message:
    """The same message as a redelivery brings it: same id, same body."""
    return fm.load_message(json.loads(fm.dumps(msg)))


def of_type(messages: list[fm.Message], cls: type) -> list[Any]:
    return [m for m in messages if type(m) is cls]


async def task_rows(runtime: Runtime) -> list[Any]:
    return await runtime.pool.fetch("SELECT * FROM tasks ORDER BY id")


async def new_messages(runtime: Runtime, sent, msg: fm.Message) -> list[fm.Message]:
    before = len(await sent())
    await SERVICE.handle(runtime, msg)
    return (await sent())[before:]


async def free_now(runtime: Runtime, host: str = "core-1") -> int:
    """How many more leases the dispatcher would give `host` now."""
    async with runtime.transaction() as ctx:
        hosts = await store.lock_available_hosts(ctx.conn)
    return next((h.free_slots for h in hosts if h.host == host), 0)


# Requests


async def test_request_creates_one_task_per_arch_and_announces_the_build(runtime, sent) -> None:
    msg = request(arches=["noarch", "x86_64", "aarch64"], release="f40", priority=5)
    await SERVICE.handle(runtime, msg)
    build = await runtime.pool.fetchrow("SELECT * FROM builds")
    assert (build["request_id"], build["nvr"], build["state"]) == (msg.id, NVR, "building")
    assert (build["release"], build["scratch"], build["priority"]) == ("f40", False, 5)
    tasks = await task_rows(runtime)
    assert [(t["arch"], t["state"], t["priority"]) for t in tasks] == [
        ("noarch", "queued", 5),
        ("x86_64", "queued", 5),
        ("aarch64", "queued", 5),
    ]
    [queued] = await sent()
    assert type(queued) is BuildQueuedV1
    assert queued.body == {
        "build_id": build["id"],
        "owner": "alice",
        "nvr": NVR,
        "srpm_sha256": "a" * 64,
        "scratch": False,
        "tasks": [{"task_id": t["id"], "arch": t["arch"]} for t in tasks],
    }


async def test_the_same_request_twice_is_one_build(runtime, sent) -> None:
    msg = request(arches=["noarch", "x86_64"])
    await SERVICE.handle(runtime, msg)
    await SERVICE.handle(runtime, copy_of(msg))
    # Even past the processed-message record, the request id makes one build.
    await runtime.pool.execute("DELETE FROM processed_messages")
    await SERVICE.handle(runtime, copy_of(msg))
    assert await runtime.pool.fetchval("SELECT count(*) FROM builds") == 1
    assert await runtime.pool.fetchval("SELECT count(*) FROM tasks") == 2
    assert len(of_type(await sent(), BuildQueuedV1)) == 1


async def test_a_request_for_another_owner_is_refused(runtime, sent) -> None:
    """The owner is the authenticated sender (the routing key the broker let it use)."""
    with pytest.raises(Reject, match="mallory may not request builds for owner 'alice'"):
        await SERVICE.handle(runtime, request(sender="mallory"))
    with pytest.raises(Reject):
        await SERVICE.handle(runtime, BuildRequestV1(body=request().body))  # names nobody
    assert await task_rows(runtime) == [] and await sent() == []


async def test_a_tool_may_act_for_owners_it_is_configured_for(runtime, sent) -> None:
    runtime.config = dataclasses.replace(
        runtime.config,
        dispatcher=dataclasses.replace(runtime.config.dispatcher, may_act_for=["koschei:*"]),
    )
    await SERVICE.handle(runtime, request(sender="koschei", owner="bob"))
    [queued] = await sent()
    assert queued.body["owner"] == "bob"
    with pytest.raises(Reject):
        await SERVICE.handle(runtime, request(sender="packit", owner="bob"))


async def test_build_is_visible_over_http(client, runtime) -> None:
    msg = request(arches=["noarch", "x86_64"])
    await SERVICE.handle(runtime, msg)
    found = await (await client.get("/api/v1/builds", params={"request_id": msg.id})).json()
    [build] = found["builds"]
    assert (build["nvr"], build["state"]) == (NVR, "building")
    assert [t["state"] for t in build["tasks"]] == ["queued", "queued"]
    one = await client.get(f"/api/v1/builds/{build['build_id']}")
    assert (await one.json())["request_id"] == msg.id
    assert (await client.get("/api/v1/builds/999")).status == 404


# Leasing


async def test_online_core_host_gets_a_lease_on_its_own_topic(runtime, sent) -> None:
    await SERVICE.handle(runtime, request())
    new = await new_messages(runtime, sent, status("core-1"))
    [lease] = new
    assert type(lease) is TaskLeasedV1
    assert lease.topic == "skyline.task.leased.core-1"
    [task] = await task_rows(runtime)
    b = lease.body
    assert (b["task_id"], b["host"], b["arch"], b["nvr"]) == (task["id"], "core-1", "noarch", NVR)
    assert b["lease_id"] == str(task["lease_id"])
    assert (b["owner"], b["srpm_url"], b["srpm_sha256"]) == ("alice", SRPM_URL, "a" * 64)
    assert (b["release"], b["scratch"]) == ("any", False)
    expires = datetime.datetime.fromisoformat(b["lease_expires"])
    assert expires > datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=50)
    assert (task["state"], task["host"], task["attempts"]) == ("leased", "core-1", 1)
    assert await free_now(runtime) == 0


async def test_request_is_leased_at_once_when_a_host_is_waiting(runtime, sent) -> None:
    await SERVICE.handle(runtime, status("core-1", free_slots=2))
    new = await new_messages(runtime, sent, request(arches=["noarch", "x86_64"]))
    assert [type(m) for m in new] == [BuildQueuedV1, TaskLeasedV1, TaskLeasedV1]


async def test_volunteers_build_official_builds_too_but_never_quarantined_hosts(
    runtime, sent
) -> None:
    # A volunteer's official result counts only once the verifier found independent agreement
    # (test_replicas.py); a quarantined host gets nothing, whatever state it reports.
    await SERVICE.handle(runtime, request(priority=900))
    await SERVICE.handle(runtime, request(scratch=True))
    banned = status("banned-1", trust="quarantined", owner="mallory", free_slots=5)
    assert await new_messages(runtime, sent, banned) == []
    new = await new_messages(runtime, sent, status("untrusted-1", trust="untrusted", free_slots=5))
    assert sorted(m.body["scratch"] for m in new) == [False, True]
    assert {t["state"] for t in await task_rows(runtime)} == {"leased"}


async def test_arch_and_release_mismatches_are_not_leased(runtime, sent) -> None:
    await SERVICE.handle(runtime, request(arches=["aarch64"]))
    await SERVICE.handle(runtime, request(arches=["x86_64"], release="f41"))
    await SERVICE.handle(runtime, request(arches=["noarch"]))
    # Wrong arch, wrong release: not leased; noarch goes to any host (arches.py), advertised
    # or not.
    [noarch] = await new_messages(runtime, sent, status("x86-1", arches=("x86_64",), free_slots=3))
    assert (noarch.body["arch"], noarch.body["host"]) == ("noarch", "x86-1")
    assert [t["state"] for t in await task_rows(runtime)] == ["queued", "queued", "leased"]
    [lease] = await new_messages(
        runtime, sent, status("arm-1", arches=("aarch64",), releases=(), free_slots=3)
    )
    assert (lease.body["arch"], lease.body["host"]) == ("aarch64", "arm-1")


async def test_offline_or_full_hosts_get_nothing(runtime, sent) -> None:
    await SERVICE.handle(runtime, request())
    assert await new_messages(runtime, sent, status(state="offline")) == []
    assert await new_messages(runtime, sent, status(free_slots=0)) == []
    assert await new_messages(runtime, sent, status(state="quarantined")) == []


async def test_an_older_status_does_not_overwrite_a_newer_one(runtime, sent) -> None:
    old = status(free_slots=1)
    new = status(state="offline", free_slots=0)
    await SERVICE.handle(runtime, new)
    await SERVICE.handle(runtime, request())
    assert await new_messages(runtime, sent, old) == []
    host = await runtime.pool.fetchrow("SELECT * FROM hosts")
    assert host["state"] == "offline"


async def statuses_batch(runtime: Runtime, sent, *msgs: HostStatusV1) -> list[fm.Message]:
    """Handle statuses as the bus does, many in one transaction (no processed-message rows)."""
    before = len(await sent())
    async with runtime.transaction() as ctx:
        await handlers.on_host_statuses(list(msgs), ctx)
    return (await sent())[before:]


async def test_a_redelivered_or_stale_status_changes_nothing(runtime, sent) -> None:
    for _ in range(4):
        await SERVICE.handle(runtime, request(arches=["x86_64"]))
    online = status(free_slots=2)
    # The registry's offline transition carries the last heartbeat's seen_at (and its sent-at
    # may be the same whole second): another status all the same, it applies.
    offline = HostStatusV1(body={**online.body, "state": "offline", "free_slots": 0})
    assert len(of_type(await statuses_batch(runtime, sent, online), TaskLeasedV1)) == 2
    assert await statuses_batch(runtime, sent, offline) == []
    stored = await runtime.pool.fetchrow("SELECT * FROM hosts")
    # Redelivered, alone or twice in one batch, or beside the newer one: nothing changes.
    for batch in ([online], [copy_of(online), copy_of(online)], [offline, copy_of(online)]):
        assert await statuses_batch(runtime, sent, *batch) == []
        assert await runtime.pool.fetchrow("SELECT * FROM hosts") == stored
    assert stored["state"] == "offline"
    assert await runtime.pool.fetchval("SELECT count(*) FROM leases") == 2
    # Of one host's statuses in a batch the newest applies, whatever their order.
    later = status(free_slots=1, running=2, max_slots=3)
    assert len(of_type(await statuses_batch(runtime, sent, later, online), TaskLeasedV1)) == 1
    host = await runtime.pool.fetchrow("SELECT * FROM hosts")
    assert (host["state"], host["max_slots"], host["open_leases"]) == ("online", 3, 3)
    # No processed-message row per status: only the requests have one.
    assert await runtime.pool.fetchval("SELECT count(*) FROM processed_messages") == 4


async def test_hosts_of_a_batch_never_share_a_task(runtime, sent) -> None:
    """Hosts of different arches in one batch pull from candidates fetched apart; a task one
    of them chose (its lease not yet written) is not offered to the next."""
    for _ in range(3):
        await SERVICE.handle(runtime, request(arches=["noarch"]))
    hosts = [
        status("x86-1", arches=("x86_64",), free_slots=2),
        status("arm-1", arches=("aarch64",), free_slots=2),
        status("s390-1", arches=("s390x",), free_slots=2),
    ]
    leases = of_type(await statuses_batch(runtime, sent, *hosts), TaskLeasedV1)
    assert len(leases) == 3 and len({lease.body["task_id"] for lease in leases}) == 3
    rows = await runtime.pool.fetch("SELECT task_id, host FROM leases ORDER BY task_id")
    assert [(r["task_id"], r["host"]) for r in rows] == sorted(
        (lease.body["task_id"], lease.body["host"]) for lease in leases
    )
    assert await runtime.pool.fetchval("SELECT count(*) FROM tasks WHERE state = 'leased'") == 3


async def test_hosts_of_a_batch_fill_from_one_owner_and_share_among_many(runtime, sent) -> None:
    """Hosts pulling together: one owner's queue alone fills them all, and with several
    owners waiting each gets its turn, as when each host pulled after the other."""
    for _ in range(12):
        await SERVICE.handle(runtime, request(arches=["x86_64"]))
    hosts = [status(f"core-{i}", free_slots=4) for i in range(3)]
    assert len(of_type(await statuses_batch(runtime, sent, *hosts), TaskLeasedV1)) == 12
    for owner in ("alice", "bob", "carol"):
        await SERVICE.handle(runtime, request(arches=["x86_64"], owner=owner))
    for _ in range(5):
        await SERVICE.handle(runtime, request(arches=["x86_64"], owner="alice"))
    more = [status(f"x86-{i}", trust="trusted", free_slots=2) for i in range(2)]
    leases = of_type(await statuses_batch(runtime, sent, *more), TaskLeasedV1)
    assert sorted(lease.body["owner"] for lease in leases) == ["alice", "alice", "bob", "carol"]


async def test_higher_priority_is_leased_first(runtime, sent) -> None:
    await SERVICE.handle(runtime, request(priority=10, arches=["x86_64"]))
    await SERVICE.handle(runtime, request(priority=500, arches=["x86_64"]))
    [lease] = await new_messages(runtime, sent, status())
    assert lease.body["build_id"] == 2


# Verdicts


async def lease_one(runtime: Runtime, sent, **request_changes: Any) -> TaskLeasedV1:
    await SERVICE.handle(runtime, request(**request_changes))
    [lease] = of_type(await new_messages(runtime, sent, status()), TaskLeasedV1)
    return lease


async def test_the_holders_finish_keeps_its_lease_alive_while_it_is_judged(runtime, sent) -> None:
    lease = await lease_one(runtime, sent)
    await runtime.pool.execute("UPDATE tasks SET lease_expires = now() + interval '1 second'")
    await SERVICE.handle(runtime, finished(lease, host="core-2"))  # not the holder: no effect
    [task] = await task_rows(runtime)
    assert task["lease_expires"] < datetime.datetime.now(datetime.UTC) + datetime.timedelta(
        seconds=5
    )
    await SERVICE.handle(runtime, finished(lease))
    [task] = await task_rows(runtime)
    extended = datetime.timedelta(seconds=runtime.config.dispatcher.verdict_grace_seconds - 60)
    assert task["lease_expires"] > datetime.datetime.now(datetime.UTC) + extended
    assert task["state"] == "leased"  # the verdict decides what comes next


async def test_mismatch_requeues_and_fails_the_build_after_max_attempts(runtime, sent) -> None:
    await SERVICE.handle(runtime, request(arches=["x86_64"]))
    lease_ids = set()
    for attempt in range(1, handlers.MAX_ATTEMPTS + 1):
        host = f"core-{attempt}"  # a refused host is not given the task again
        [lease] = await new_messages(runtime, sent, status(host))
        lease_ids.add(lease.body["lease_id"])
        await SERVICE.handle(runtime, status(host, free_slots=0, running=1))  # busy with it
        new = await new_messages(runtime, sent, mismatch(lease, "digest_mismatch"))
        [task] = await task_rows(runtime)
        assert task["attempts"] == attempt
        if attempt < handlers.MAX_ATTEMPTS:
            assert new == []
            assert (task["state"], task["host"], task["lease_id"]) == ("queued", None, None)
            assert "digest_mismatch" in task["reason"]
    assert len(lease_ids) == handlers.MAX_ATTEMPTS  # a new lease id every time
    [failed] = new
    assert type(failed) is BuildFailedV1
    assert failed.body["failed_arches"] == ["x86_64"]
    assert "digest_mismatch" in failed.body["reason"]
    assert task["state"] == "failed"
    build = await runtime.pool.fetchrow("SELECT * FROM builds")
    assert build["state"] == "failed"
    assert await new_messages(runtime, sent, status()) == []


@pytest.mark.parametrize("reason", ["wrong_package", "wrong_arch", "bad_rpm"])
async def test_result_of_another_package_or_arch_is_built_again(runtime, sent, reason) -> None:
    # The verifier read the RPMs' headers: the task goes back to the queue at once, for the
    # next host that asks (never the refused one), instead of waiting for its lease to expire.
    lease = await lease_one(runtime, sent)
    assert await new_messages(runtime, sent, mismatch(lease, reason)) == []
    assert (
        of_type(await new_messages(runtime, sent, status("core-1", free_slots=2)), TaskLeasedV1)
        == []
    )
    [task] = await task_rows(runtime)
    assert (task["state"], task["host"], task["lease_id"]) == ("queued", None, None)
    assert reason in task["reason"]
    [again] = of_type(await new_messages(runtime, sent, status("core-2")), TaskLeasedV1)
    assert again.body["host"] == "core-2"
    assert again.body["lease_id"] != lease.body["lease_id"]


@pytest.mark.parametrize("reason", ["bad_signature", "unknown_host"])
async def test_forged_result_does_not_disturb_the_lease(runtime, sent, reason: str) -> None:
    lease = await lease_one(runtime, sent)
    assert await new_messages(runtime, sent, mismatch(lease, reason)) == []
    [task] = await task_rows(runtime)
    assert (task["state"], str(task["lease_id"]), task["attempts"]) == (
        "leased",
        lease.body["lease_id"],
        1,
    )


@pytest.mark.parametrize("reason", ["unknown_lease", "replayed", "host_not_allowed"])
async def test_another_hosts_refusal_does_not_disturb_the_lease(runtime, sent, reason: str) -> None:
    # An enrolled host that attests to someone else's lease is refused by the verifier; that
    # refusal says nothing about the host that holds the lease, which may still be building.
    lease = await lease_one(runtime, sent)
    assert await new_messages(runtime, sent, mismatch(lease, reason, host="mallory")) == []
    [task] = await task_rows(runtime)
    assert (task["state"], str(task["lease_id"])) == ("leased", lease.body["lease_id"])


async def test_mismatch_for_a_stale_lease_is_ignored(runtime, sent) -> None:
    lease = await lease_one(runtime, sent)
    await SERVICE.handle(runtime, verified(lease))
    assert await new_messages(runtime, sent, mismatch(lease, "digest_mismatch")) == []
    [task] = await task_rows(runtime)
    assert task["state"] == "verified"


async def test_verified_success_marks_the_task(runtime, sent) -> None:
    lease = await lease_one(runtime, sent)
    assert await new_messages(runtime, sent, verified(lease)) == []
    [task] = await task_rows(runtime)
    assert (task["state"], task["result_digest"]) == ("verified", "d" * 64)


async def test_verified_failure_fails_the_build_and_its_waiting_tasks(runtime, sent) -> None:
    await SERVICE.handle(runtime, request(arches=["noarch", "aarch64"]))
    [lease] = await new_messages(runtime, sent, status(arches=("noarch",)))
    [failed] = await new_messages(runtime, sent, verified(lease, "failed"))
    assert type(failed) is BuildFailedV1
    assert failed.body["failed_arches"] == ["noarch"]
    assert "core-1" in failed.body["reason"]
    assert (await runtime.pool.fetchrow("SELECT * FROM builds"))["state"] == "failed"
    # The build is over: its other arch is not leased to anybody any more.
    tasks = {t["arch"]: t for t in await task_rows(runtime)}
    assert tasks["noarch"]["state"] == "failed"
    assert tasks["aarch64"]["state"] == "failed"
    assert await new_messages(runtime, sent, status("arm-1", arches=("aarch64",))) == []
    # A late verdict for the same lease changes nothing.
    assert await new_messages(runtime, sent, verified(lease, "failed")) == []


async def test_leases_of_a_failed_build_are_not_handed_out_again(runtime, sent) -> None:
    await SERVICE.handle(runtime, request(arches=["noarch", "x86_64"]))
    leases = of_type(await new_messages(runtime, sent, status(free_slots=2)), TaskLeasedV1)
    failing, _still_leased = leases
    await SERVICE.handle(runtime, verified(failing, "failed"))
    # The other lease expires (or its result is refused): its build is over, so it is not
    # queued again, even with a free host.
    await runtime.pool.execute(
        "UPDATE tasks SET lease_expires = now() - interval '1 second' WHERE state = 'leased';"
        " UPDATE hosts SET free_slots = 2"
    )
    before = len(await sent())
    await handlers.requeue_expired_leases(runtime)
    assert (await sent())[before:] == []
    assert {t["state"] for t in await task_rows(runtime)} == {"failed"}
    assert len(of_type(await sent(), BuildFailedV1)) == 1


async def test_refused_result_of_a_failed_build_is_not_built_again(runtime, sent) -> None:
    await SERVICE.handle(runtime, request(arches=["noarch", "x86_64"]))
    failing, refused = of_type(
        await new_messages(runtime, sent, status(free_slots=4)), TaskLeasedV1
    )
    await SERVICE.handle(runtime, verified(failing, "failed"))
    assert await new_messages(runtime, sent, mismatch(refused, "digest_mismatch")) == []
    assert {t["state"] for t in await task_rows(runtime)} == {"failed"}


async def test_verdict_for_an_unknown_lease_is_ignored(runtime, sent) -> None:
    lease = await lease_one(runtime, sent)
    other = TaskLeasedV1(body={**lease.body, "lease_id": str(uuid.uuid4())})
    assert await new_messages(runtime, sent, verified(other, "failed")) == []
    [task] = await task_rows(runtime)
    assert task["state"] == "leased"


async def test_every_task_stored_completes_the_build_exactly_once(runtime, sent) -> None:
    await SERVICE.handle(runtime, request(arches=["noarch", "x86_64"]))
    leases = of_type(await new_messages(runtime, sent, status(free_slots=2)), TaskLeasedV1)
    assert len(leases) == 2
    for lease in leases:
        await SERVICE.handle(runtime, verified(lease))
    first, second = (stored(lease) for lease in leases)
    assert await new_messages(runtime, sent, first) == []
    [complete] = await new_messages(runtime, sent, second)
    assert type(complete) is BuildCompleteV1
    assert complete.body["build_id"] == leases[0].body["build_id"]
    assert (complete.body["nvr"], complete.body["owner"], complete.body["scratch"]) == (
        NVR,
        "alice",
        False,
    )
    assert sorted(f["arch"] for f in complete.body["files"]) == ["noarch", "x86_64"]
    # Redelivered (same id) or sent again (new id): still one completion.
    for again in (copy_of(second), copy_of(first), BuildStoredV1(body=second.body)):
        assert await new_messages(runtime, sent, again) == []
    assert len(of_type(await sent(), BuildCompleteV1)) == 1
    build = await runtime.pool.fetchrow("SELECT * FROM builds")
    assert build["state"] == "complete"
    assert build["finished_at"] is not None


# Expired leases


async def test_expired_leases_are_requeued_and_leased_again(runtime, sent) -> None:
    await SERVICE.handle(runtime, request(arches=["noarch", "x86_64"]))
    leases = of_type(await new_messages(runtime, sent, status(free_slots=2)), TaskLeasedV1)
    expired, kept = leases
    await SERVICE.handle(runtime, status(free_slots=0, running=2))
    await runtime.pool.execute(
        "UPDATE tasks SET lease_expires = now() - interval '1 second' WHERE lease_id = $1::uuid",
        expired.body["lease_id"],
    )
    before = len(await sent())
    await handlers.requeue_expired_leases(runtime)
    assert len(await sent()) == before  # the host says it has no free slot: nothing to lease
    tasks = {t["id"]: t for t in await task_rows(runtime)}
    gone = tasks[expired.body["task_id"]]
    assert (gone["state"], gone["lease_id"], gone["attempts"]) == ("queued", None, 1)
    assert "expired" in gone["reason"]
    assert tasks[kept.body["task_id"]]["state"] == "leased"
    [again] = await new_messages(runtime, sent, status(free_slots=1, running=1))
    assert again.body["task_id"] == expired.body["task_id"]
    assert again.body["lease_id"] != expired.body["lease_id"]
    # The old lease's verdict is stale now.
    assert await new_messages(runtime, sent, verified(expired, "failed")) == []


async def test_expired_lease_with_a_free_host_is_leased_in_the_same_sweep(runtime, sent) -> None:
    lease = await lease_one(runtime, sent)
    await runtime.pool.execute(
        "UPDATE tasks SET lease_expires = now() - interval '1 second';"
        " UPDATE hosts SET free_slots = 1"
    )
    before = len(await sent())
    await handlers.requeue_expired_leases(runtime)
    [again] = (await sent())[before:]
    assert type(again) is TaskLeasedV1
    assert again.body["task_id"] == lease.body["task_id"]
    assert again.body["lease_id"] != lease.body["lease_id"]


async def test_an_expired_lease_past_max_attempts_fails_the_build(runtime, sent) -> None:
    await lease_one(runtime, sent)
    await runtime.pool.execute(
        "UPDATE tasks SET lease_expires = now() - interval '1 second', attempts = $1",
        handlers.MAX_ATTEMPTS,
    )
    before = len(await sent())
    await handlers.requeue_expired_leases(runtime)
    [failed] = (await sent())[before:]
    assert type(failed) is BuildFailedV1
    assert "expired" in failed.body["reason"]


async def test_unexpired_leases_are_left_alone(runtime, sent) -> None:
    lease = await lease_one(runtime, sent)
    await handlers.requeue_expired_leases(runtime)
    [task] = await task_rows(runtime)
    assert (task["state"], str(task["lease_id"])) == ("leased", lease.body["lease_id"])


# Races


async def add_host(runtime: Runtime, msg: HostStatusV1) -> None:
    async with runtime.transaction() as ctx:
        await store.upsert_host(ctx.conn, msg)


async def concurrent_schedules(runtime: Runtime) -> list[int]:
    barrier = asyncio.Barrier(2)

    async def attempt() -> int:
        async with runtime.transaction() as ctx:
            await ctx.conn.execute("SELECT 1")  # both transactions are open...
            await barrier.wait()  # ...before either schedules
            leased = await handlers.schedule(ctx)
            await asyncio.sleep(0.2)  # hold the locks while the other one looks
            return leased

    return list(await asyncio.gather(attempt(), attempt()))


async def test_two_concurrent_schedules_fill_one_slot_once(runtime, sent) -> None:
    await SERVICE.handle(runtime, request(arches=["noarch", "x86_64"]))
    await add_host(runtime, status(free_slots=1))
    assert sorted(await concurrent_schedules(runtime)) == [0, 1]
    assert len(of_type(await sent(), TaskLeasedV1)) == 1
    assert [t["state"] for t in await task_rows(runtime)].count("leased") == 1
    assert await free_now(runtime) == 0


async def test_two_concurrent_schedules_never_lease_a_task_twice(runtime, sent) -> None:
    await SERVICE.handle(runtime, request(arches=["noarch", "x86_64"]))
    await add_host(runtime, status("core-1", free_slots=1))
    await add_host(runtime, status("core-2", free_slots=1))
    assert sum(await concurrent_schedules(runtime)) == 2
    leases = of_type(await sent(), TaskLeasedV1)
    assert sorted(m.body["task_id"] for m in leases) == [1, 2]
    assert sorted(m.body["host"] for m in leases) == ["core-1", "core-2"]


async def test_verified_but_never_stored_task_is_requeued_at_lease_expiry(runtime, sent) -> None:
    """If the collector refuses a verified result, the task must not wait forever."""
    lease = await lease_one(runtime, sent)
    await SERVICE.handle(runtime, verified(lease, "succeeded"))
    await runtime.pool.execute("UPDATE tasks SET lease_expires = now() - interval '1 second'")
    await handlers.requeue_expired_leases(runtime)
    [task] = await task_rows(runtime)
    assert (task["state"], task["lease_id"]) in {("queued", None), ("leased", task["lease_id"])}
    assert task["lease_id"] != uuid.UUID(lease.body["lease_id"])


# Capacity: the dispatcher's own count, capped by what the host enrolled


async def test_a_host_gets_no_more_leases_than_it_enrolled_slots(runtime, sent) -> None:
    for _ in range(5):
        await SERVICE.handle(runtime, request(arches=["x86_64"], scratch=True))
    greedy = status("greedy", trust="untrusted", owner="mallory", free_slots=1024, max_slots=2)
    leases = of_type(await new_messages(runtime, sent, greedy), TaskLeasedV1)
    assert len(leases) == 2
    # Heartbeats sent before the leases arrived, or lying, give back nothing still leased.
    again = status("greedy", trust="untrusted", owner="mallory", free_slots=1024, max_slots=2)
    assert await new_messages(runtime, sent, again) == []
    assert await free_now(runtime, "greedy") == 0
    # Once its result is verified the host is done with that build: the slot is free again,
    # and the host pulls at once (handlers.pull_freed), one task for the one slot.
    [new] = of_type(await new_messages(runtime, sent, verified(leases[0])), TaskLeasedV1)
    assert new.body["host"] == "greedy"
    assert await free_now(runtime, "greedy") == 0
    later = status("greedy", trust="untrusted", owner="mallory", free_slots=1024, max_slots=2)
    assert await new_messages(runtime, sent, later) == []
    assert len([t for t in await task_rows(runtime) if t["state"] == "queued"]) == 2


async def test_a_finished_lease_gives_its_slot_back(runtime, sent) -> None:
    for _ in range(3):
        await SERVICE.handle(runtime, request(arches=["x86_64"]))
    first, second = of_type(
        await new_messages(runtime, sent, status(free_slots=2, max_slots=2)), TaskLeasedV1
    )
    # The verdict frees the slot: the host pulls at once (handlers.pull_freed), the third task.
    [third] = of_type(await new_messages(runtime, sent, verified(first)), TaskLeasedV1)
    assert third.body["task_id"] not in (first.body["task_id"], second.body["task_id"])
    await SERVICE.handle(runtime, stored(first))
    # The host then reports one build running and one slot free: that slot is the third's.
    assert await new_messages(runtime, sent, status(free_slots=1, running=1, max_slots=2)) == []


async def test_a_status_from_an_older_registry_means_one_slot(runtime, sent) -> None:
    for _ in range(3):
        await SERVICE.handle(runtime, request(arches=["x86_64"]))
    body = status(free_slots=5).body
    old = HostStatusV1(body={k: v for k, v in body.items() if k not in ("running", "max_slots")})
    assert len(of_type(await new_messages(runtime, sent, old), TaskLeasedV1)) == 1


# A failure from one untrusted host is confirmed elsewhere


def volunteer(host: str, owner: str, **changes: Any) -> HostStatusV1:
    return status(host, trust="untrusted", owner=owner, **changes)


async def failures_of(runtime: Runtime) -> list[dict[str, str]]:
    return json.loads(await runtime.pool.fetchval("SELECT failures FROM tasks"))


async def test_one_volunteers_failure_is_confirmed_by_another_owner(runtime, sent) -> None:
    await SERVICE.handle(runtime, request(scratch=True))
    [first] = await new_messages(runtime, sent, volunteer("alice-1", "alice"))
    assert await new_messages(runtime, sent, verified(first, "failed")) == []
    [task] = await task_rows(runtime)
    assert (task["state"], task["host"]) == ("queued", None)
    assert "to be confirmed" in task["reason"]
    assert await failures_of(runtime) == [
        {"host": "alice-1", "owner": "alice", "trust": "untrusted"}
    ]
    assert (await runtime.pool.fetchrow("SELECT * FROM builds"))["state"] == "building"
    # Neither the same host nor another host of the same owner confirms it.
    assert await new_messages(runtime, sent, volunteer("alice-1", "alice")) == []
    assert await new_messages(runtime, sent, volunteer("alice-2", "alice", free_slots=9)) == []
    [second] = await new_messages(runtime, sent, volunteer("bob-1", "bob"))
    assert second.body["host"] == "bob-1"
    [failed] = await new_messages(runtime, sent, verified(second, "failed"))
    assert type(failed) is BuildFailedV1
    assert failed.body["failed_arches"] == ["noarch"]
    reason = failed.body["reason"]
    assert reason.startswith("noarch build failed on ")
    assert "alice-1 (owner alice, untrusted)" in reason and "bob-1 (owner bob" in reason
    [task] = await task_rows(runtime)
    assert task["state"] == "failed"
    assert [f["host"] for f in await failures_of(runtime)] == ["alice-1", "bob-1"]


async def test_a_volunteers_false_failure_does_not_fail_the_build(runtime, sent) -> None:
    await SERVICE.handle(runtime, request(scratch=True))
    [first] = await new_messages(runtime, sent, volunteer("mallory-1", "mallory"))
    await SERVICE.handle(runtime, verified(first, "failed"))
    [second] = await new_messages(runtime, sent, volunteer("bob-1", "bob"))
    await SERVICE.handle(runtime, verified(second))
    [complete] = await new_messages(runtime, sent, stored(second))
    assert type(complete) is BuildCompleteV1
    assert not of_type(await sent(), BuildFailedV1)


async def test_a_core_hosts_failure_needs_no_confirmation(runtime, sent) -> None:
    await SERVICE.handle(runtime, request(scratch=True))
    [first] = await new_messages(runtime, sent, volunteer("alice-1", "alice"))
    await SERVICE.handle(runtime, verified(first, "failed"))
    [second] = await new_messages(runtime, sent, status("core-1"))
    [failed] = await new_messages(runtime, sent, verified(second, "failed"))
    assert type(failed) is BuildFailedV1
    assert "core-1 (owner infra, core)" in failed.body["reason"]


async def test_a_hosts_own_failure_is_built_elsewhere_not_blamed_on_the_package(
    runtime, sent
) -> None:
    # Even a core host's word would fail the build at once if the package were at fault;
    # a timeout (or its sandbox, a limit, a revoked lease) is the host's, not the package's.
    await SERVICE.handle(runtime, request(scratch=True))
    [first] = await new_messages(runtime, sent, status("core-1"))
    timed_out = verified(first, "failed")
    timed_out.body["failure"] = "timeout"
    assert await new_messages(runtime, sent, timed_out) == []
    [task] = await task_rows(runtime)
    assert task["state"] == "queued" and "timeout failure on core-1" in task["reason"]
    assert await failures_of(runtime) == []
    # Not to that host again; another host builds it.
    assert await new_messages(runtime, sent, status("core-1")) == []
    [second] = await new_messages(runtime, sent, status("core-2"))
    assert second.body["host"] == "core-2"


# Per-owner quota


def set_quota(runtime: Runtime, limit: int) -> None:
    config = runtime.config
    runtime.config = dataclasses.replace(
        config,
        dispatcher=dataclasses.replace(config.dispatcher, max_active_builds_per_owner=limit),
    )


async def test_a_request_beyond_the_owners_quota_is_refused_with_the_reason(
    runtime, sent, client
) -> None:
    set_quota(runtime, 2)
    for _ in range(2):
        await SERVICE.handle(runtime, request())
    over = request()
    [refused] = await new_messages(runtime, sent, over)
    assert type(refused) is BuildFailedV1
    assert refused.body["reason"] == "quota: owner alice already has 2 active builds (at most 2)"
    # Not lost: the submitter finds the build by its request id, failed with the reason.
    found = await (await client.get("/api/v1/builds", params={"request_id": over.id})).json()
    [build] = found["builds"]
    assert (build["state"], build["reason"]) == ("failed", refused.body["reason"])
    assert [t["state"] for t in build["tasks"]] == ["failed"]
    # Another owner is not held back, and nothing of the refused build is leased.
    [queued] = await new_messages(runtime, sent, request(owner="bob"))
    assert type(queued) is BuildQueuedV1
    leased = of_type(await new_messages(runtime, sent, status(free_slots=8)), TaskLeasedV1)
    assert build["build_id"] not in {m.body["build_id"] for m in leased}
    assert len(leased) == 3
    # Once one of alice's builds is over, she may ask again.
    await runtime.pool.execute("UPDATE builds SET state = 'complete' WHERE id = 1")
    assert type((await new_messages(runtime, sent, request()))[0]) is BuildQueuedV1


async def test_concurrent_requests_of_one_owner_respect_the_quota(runtime, sent) -> None:
    set_quota(runtime, 3)
    await asyncio.gather(*(SERVICE.handle(runtime, request()) for _ in range(8)))
    states = [r["state"] for r in await runtime.pool.fetch("SELECT state FROM builds")]
    assert sorted(states) == ["building"] * 3 + ["failed"] * 5


# A stored build whose announcement was lost


def stored_files(lease: TaskLeasedV1) -> list[dict[str, Any]]:
    return stored(lease).body["files"]


async def expire_all(runtime: Runtime) -> None:
    await runtime.pool.execute("UPDATE tasks SET lease_expires = now() - interval '1 second'")


@pytest.mark.parametrize("verdict_seen", [True, False], ids=["verified", "verdict lost too"])
async def test_expired_lease_the_collector_stored_completes_the_build(
    runtime, sent, collector, verdict_seen: bool
) -> None:
    lease = await lease_one(runtime, sent)
    if verdict_seen:
        await SERVICE.handle(runtime, verified(lease))
    collector.leases[lease.body["lease_id"]] = ("stored", stored_files(lease))
    await expire_all(runtime)
    before = len(await sent())
    await handlers.requeue_expired_leases(runtime)
    [complete] = (await sent())[before:]
    assert type(complete) is BuildCompleteV1
    assert complete.body["files"] == stored_files(lease)
    assert collector.asked == [lease.body["lease_id"]]
    [task] = await task_rows(runtime)
    assert (task["state"], task["attempts"]) == ("stored", 1)
    # The collector announces it again later: still one completion, nothing failed.
    assert await new_messages(runtime, sent, stored(lease)) == []
    await handlers.requeue_expired_leases(runtime)
    assert len(await sent()) == before + 1


async def test_expired_leases_are_not_requeued_while_the_collector_cannot_say(
    runtime, sent, collector
) -> None:
    await SERVICE.handle(runtime, request(arches=["noarch", "x86_64"]))
    leases = of_type(await new_messages(runtime, sent, status(free_slots=2)), TaskLeasedV1)
    await SERVICE.handle(runtime, verified(leases[0]))
    await runtime.pool.execute(
        "UPDATE tasks SET lease_expires = now() - interval '1 second', attempts = $1",
        handlers.MAX_ATTEMPTS,
    )
    collector.status = 503
    before = len(await sent())
    await handlers.requeue_expired_leases(runtime)
    assert (await sent())[before:] == []
    assert len(collector.asked) == 1  # a collector that is down is not asked about each lease
    tasks = await task_rows(runtime)
    assert [t["state"] for t in tasks] == ["verified", "leased"]
    assert [str(t["lease_id"]) for t in tasks] == [m.body["lease_id"] for m in leases]
    # Back, and it never stored either lease (say it refused the result): now they fail.
    collector.status = 200
    collector.leases[leases[0].body["lease_id"]] = ("open", [])
    await handlers.requeue_expired_leases(runtime)
    [failed] = (await sent())[before:]
    assert type(failed) is BuildFailedV1
    assert "expired" in failed.body["reason"]
    assert {t["state"] for t in await task_rows(runtime)} == {"failed"}


async def test_build_stored_for_an_unknown_task_is_ignored(runtime, sent) -> None:
    lease = await lease_one(runtime, sent)
    other = BuildStoredV1(body={**stored(lease).body, "build_id": 99})
    assert await new_messages(runtime, sent, other) == []
    [task] = await task_rows(runtime)
    assert task["state"] == "leased"
