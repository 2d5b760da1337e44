"""Critical-path weights in the live dispatcher, on a real database: a package's history
gives its tasks work, a chain's links their paths, and a slower host leaves a critical task
to a faster one that will be free soon, for a bounded time."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

import pytest
from skyline_messages import BuildChainRequestV1, BuildRequestV1, TaskLeasedV1

from services.common.service import Runtime
from services.dispatcher.__main__ import SERVICE
from tests.integration.dispatcher.test_dispatcher_service import (
    finished,
    new_messages,
    of_type,
    request,
    verified,
)
from tests.integration.dispatcher.test_host_qos import rated
from tests.integration.dispatcher.test_two_dispatchers import until

pytestmark = pytest.mark.integration


def build_of(nvr: str, **changes: Any) -> BuildRequestV1:
    return request(srpm_url=f"http://127.0.0.1:1/sources/{nvr}.src.rpm", **changes)


async def history(runtime: Runtime, package: str, seconds: float) -> None:
    await runtime.pool.execute(
        "INSERT INTO package_durations (package, arch, seconds_ewma, samples)"
        " VALUES ($1, '*', $2, 1)",
        package,
        seconds,
    )


async def task_of(runtime: Runtime, nvr: str) -> Any:
    return await runtime.pool.fetchrow(
        "SELECT t.* FROM tasks t JOIN builds b ON b.id = t.build_id WHERE b.nvr = $1"
        " ORDER BY t.id DESC LIMIT 1",
        nvr,
    )


def with_decline_bound(runtime: Runtime, seconds: float) -> None:
    config = runtime.config
    runtime.config = dataclasses.replace(
        config, dispatcher=dataclasses.replace(config.dispatcher, decline_max_seconds=seconds)
    )


async def fast_host_busy(runtime: Runtime, sent) -> TaskLeasedV1:
    """A fast host (speed 4) busy with a short build (2 s there), and a long package's
    history (100 s at the farm's pace): the lease of the short build."""
    await history(runtime, "skyline-short", 8.0)
    await history(runtime, "skyline-long", 100.0)
    await SERVICE.handle(runtime, rated("fast", 0.5, 4.0, free_slots=1))
    [busy] = of_type(await new_messages(runtime, sent, build_of("skyline-short-1-1")), TaskLeasedV1)
    assert busy.body["host"] == "fast"
    return busy


async def test_a_package_with_history_gets_work_and_goes_to_the_faster_free_host(
    runtime: Runtime, sent
) -> None:
    nvr = "skyline-big-2.0-1"
    # Its first build: no history, no weight. It took 50 s on a host twice the farm's pace.
    await SERVICE.handle(runtime, rated("seed", 0.5, 2.0, free_slots=1))
    [first] = of_type(await new_messages(runtime, sent, build_of(nvr)), TaskLeasedV1)
    row = await task_of(runtime, nvr)
    assert (row["work"], row["path"]) == (None, None)
    await runtime.pool.execute(
        "UPDATE leases SET created_at = created_at - interval '50 seconds'"
        " WHERE lease_id = $1::uuid",
        first.body["lease_id"],
    )
    await SERVICE.handle(runtime, finished(first))
    await SERVICE.handle(runtime, verified(first))
    estimates = {
        r["arch"]: (r["seconds_ewma"], r["samples"])
        for r in await runtime.pool.fetch(
            "SELECT * FROM package_durations WHERE package = 'skyline-big'"
        )
    }
    assert set(estimates) == {"noarch", "*"}
    for seconds, samples in estimates.values():
        assert 100.0 <= seconds < 110.0 and samples == 1
    # Now: a fast host of poor QoS and a slow one of good QoS with more slots free.
    await SERVICE.handle(runtime, rated("seed", 0.5, 2.0, free_slots=0))
    await SERVICE.handle(runtime, rated("slow", 0.9, 1.0, free_slots=4))
    await SERVICE.handle(runtime, rated("fast", 0.3, 3.0, free_slots=1))
    [lease] = of_type(await new_messages(runtime, sent, build_of(nvr)), TaskLeasedV1)
    assert lease.body["host"] == "fast"
    row = await task_of(runtime, nvr)
    assert row["work"] == pytest.approx(estimates["noarch"][0])
    assert row["path"] == row["work"]  # a stand-alone build's path is its work
    # The lease recorded the host's speed, for this build's own duration.
    speed = await runtime.pool.fetchval(
        "SELECT speed FROM leases WHERE lease_id = $1::uuid", lease.body["lease_id"]
    )
    assert speed == 3.0


async def test_a_task_without_history_schedules_as_before(runtime: Runtime, sent) -> None:
    """No weight: QoS decides, and no host declines it even with a faster one free soon."""
    await history(runtime, "skyline-short", 8.0)
    await SERVICE.handle(runtime, rated("fast", 0.3, 4.0, free_slots=1))
    [busy] = of_type(await new_messages(runtime, sent, build_of("skyline-short-1-1")), TaskLeasedV1)
    assert busy.body["host"] == "fast"
    await SERVICE.handle(runtime, rated("slow", 0.9, 1.0, free_slots=1))
    [lease] = of_type(await new_messages(runtime, sent, build_of("skyline-new-1-1")), TaskLeasedV1)
    assert lease.body["host"] == "slow"
    row = await task_of(runtime, "skyline-new-1-1")
    assert (row["work"], row["path"], row["declined_at"]) == (None, None, None)


async def test_a_chains_first_link_gets_the_longer_path(runtime: Runtime, sent) -> None:
    for package, seconds in (("skyline-base", 100.0), ("skyline-user", 50.0)):
        await history(runtime, package, seconds)
    nvrs = ["skyline-base-1.0-1", "skyline-user-1.0-1", "skyline-top-1.0-1", "skyline-side-1-1"]
    links: list[dict[str, Any]] = [
        {
            "srpm_url": f"http://127.0.0.1:1/sources/{nvr}.src.rpm",
            "srpm_sha256": "a" * 64,
            "arches": ["noarch"],
        }
        for nvr in nvrs
    ]
    links[1]["after"] = [0]
    links[2]["after"] = [1]  # top: no history, counts as nothing on the path
    links[3]["after"] = [0]
    msg = BuildChainRequestV1(
        body={"links": links, "owner": "alice"}, topic=BuildChainRequestV1.topic_for("alice")
    )
    await SERVICE.handle(runtime, msg)
    paths = {nvr: (await task_of(runtime, nvr))["path"] for nvr in nvrs}
    assert paths == {
        "skyline-base-1.0-1": 150.0,  # base, then user (then top)
        "skyline-user-1.0-1": 50.0,
        "skyline-top-1.0-1": None,
        "skyline-side-1-1": None,
    }


async def test_a_slow_host_declines_a_critical_task_while_a_faster_one_frees_soon(
    runtime: Runtime, sent
) -> None:
    """A scratch build: an official build's own lease goes to a free core host at once."""
    bound = 2.0
    with_decline_bound(runtime, bound)
    await fast_host_busy(runtime, sent)
    await SERVICE.handle(runtime, rated("slow", 0.9, 1.0, free_slots=1))
    # 100 s here; at the fast host, 25 s once it is free: the slow host leaves it.
    long_one = build_of("skyline-long-1-1", scratch=True)
    assert of_type(await new_messages(runtime, sent, long_one), TaskLeasedV1) == []
    row = await task_of(runtime, "skyline-long-1-1")
    assert row["state"] == "queued" and row["declined_at"] is not None
    assert row["queue_reason"].startswith("waiting for a faster host (speed 4, free ")

    # No faster host took it within the bound: the slow host's next pull takes it.
    async def past_bound() -> bool:
        return await runtime.pool.fetchval(
            "SELECT now() - declined_at >= make_interval(secs => $2) FROM tasks WHERE id = $1",
            row["id"],
            bound,
        )

    await until(past_bound, "the task was declined for the bound")
    [lease] = of_type(
        await new_messages(runtime, sent, rated("slow", 0.9, 1.0, free_slots=1)), TaskLeasedV1
    )
    assert (lease.body["host"], lease.body["task_id"]) == ("slow", row["id"])
    row = await task_of(runtime, "skyline-long-1-1")
    assert (row["declined_at"], row["queue_reason"]) == (None, None)


async def test_a_faster_host_overdue_on_its_build_is_not_waited_for(runtime: Runtime, sent) -> None:
    """The fast host's build should have ended by its estimate and has not: when it frees is
    unknown (its lease's expiry bounds it), so the slow host does not wait on it."""
    busy = await fast_host_busy(runtime, sent)
    # Leased a minute ago: 58 s past its estimated end, and still running.
    await runtime.pool.execute(
        "UPDATE leases SET created_at = now() - interval '60 seconds' WHERE lease_id = $1",
        uuid.UUID(busy.body["lease_id"]),
    )
    await SERVICE.handle(runtime, rated("slow", 0.9, 1.0, free_slots=1))
    long_one = build_of("skyline-long-1-1", scratch=True)
    [lease] = of_type(await new_messages(runtime, sent, long_one), TaskLeasedV1)
    assert lease.body["host"] == "slow"
    assert (await task_of(runtime, "skyline-long-1-1"))["declined_at"] is None


async def test_a_faster_host_freed_in_time_takes_the_declined_task(runtime: Runtime, sent) -> None:
    busy = await fast_host_busy(runtime, sent)
    await SERVICE.handle(runtime, rated("slow", 0.9, 1.0, free_slots=1))
    long_one = build_of("skyline-long-1-1", scratch=True)
    assert of_type(await new_messages(runtime, sent, long_one), TaskLeasedV1) == []
    await SERVICE.handle(runtime, finished(busy))
    # The verdict frees the fast host's slot, and it pulls then (test_lease_end_pull.py).
    [lease] = of_type(await new_messages(runtime, sent, verified(busy)), TaskLeasedV1)
    assert lease.body["host"] == "fast"


@pytest.mark.parametrize("fast_trust", ["trusted", "core"])
async def test_a_core_host_leaves_an_official_builds_own_lease_only_to_a_faster_core_host(
    runtime: Runtime, sent, fast_trust: str
) -> None:
    """Its result is accepted alone (no replica): a faster host whose result would need one
    is not waited for; a faster core host is (a farm of core hosts, as Fedora's, still
    keeps its critical paths on its fastest hosts)."""
    await history(runtime, "skyline-short", 8.0)
    await history(runtime, "skyline-long", 100.0)
    fast = rated("fast", 0.5, 4.0, free_slots=1)
    fast.body["trust"] = fast_trust
    await SERVICE.handle(runtime, fast)
    await new_messages(runtime, sent, build_of("skyline-short-1-1", scratch=True))
    await SERVICE.handle(runtime, rated("slow", 0.9, 1.0, free_slots=1))
    leases = of_type(await new_messages(runtime, sent, build_of("skyline-long-1-1")), TaskLeasedV1)
    if fast_trust == "core":
        assert leases == []
        row = await task_of(runtime, "skyline-long-1-1")
        assert row["state"] == "queued" and row["declined_at"] is not None
    else:
        assert [lease.body["host"] for lease in leases] == ["slow"]


async def test_within_a_priority_the_longer_path_is_leased_first(runtime: Runtime, sent) -> None:
    """One owner's queue: priority first, then the longest critical path, then a task
    without one (no history), each pull taking the best left (pull_candidates' order)."""
    for package, seconds in (("skyline-short", 10.0), ("skyline-long", 300.0)):
        await history(runtime, package, seconds)
    nvrs = ["skyline-none-1-1", "skyline-short-1-1", "skyline-long-1-1", "skyline-urgent-1-1"]
    await history(runtime, "skyline-urgent", 5.0)
    for nvr in nvrs:  # queued while no host is online, in this (id) order
        priority = 200 if nvr.startswith("skyline-urgent") else 150
        assert (
            of_type(
                await new_messages(runtime, sent, build_of(nvr, priority=priority)), TaskLeasedV1
            )
            == []
        )
    leased = []
    for n in range(len(nvrs)):
        [lease] = of_type(
            await new_messages(runtime, sent, rated(f"host-{n}", 0.5, 1.0, free_slots=1)),
            TaskLeasedV1,
        )
        leased.append(lease.body["task_id"])
    ids = {nvr: (await task_of(runtime, nvr))["id"] for nvr in nvrs}
    assert leased == [
        ids[n]
        for n in ("skyline-urgent-1-1", "skyline-long-1-1", "skyline-short-1-1", "skyline-none-1-1")
    ]
