"""Waiting reasons stay true on a real database: the periodic sweep says again why queued
tasks wait (handlers.refresh_reasons) once hosts come, go or fill up, a bounded number of
them per pass, round the queue."""

from __future__ import annotations

import dataclasses

import pytest
from skyline_messages import TaskLeasedV1

from services.common.service import Runtime
from services.dispatcher import handlers
from services.dispatcher.__main__ import SERVICE
from tests.integration.dispatcher.test_dispatcher_service import (
    new_messages,
    of_type,
    request,
    status,
    task_rows,
)
from tests.integration.dispatcher.test_scheduling import queue_reasons

pytestmark = pytest.mark.integration

S390X = ("s390x",)
NONE_ONLINE = "no online s390x host"
BUSY = "all 1 eligible hosts busy"


def per_sweep(runtime: Runtime, n: int) -> None:
    """The runtime's config with dispatcher.reasons_per_sweep = n."""
    dispatcher = dataclasses.replace(runtime.config.dispatcher, reasons_per_sweep=n)
    runtime.config = dataclasses.replace(runtime.config, dispatcher=dispatcher)


async def reasons(runtime: Runtime) -> dict[int, str | None]:
    return {t["id"]: t["queue_reason"] for t in await task_rows(runtime) if t["state"] == "queued"}


async def test_a_reason_follows_hosts_coming_online_busy_and_going_offline(
    runtime: Runtime, sent, client
) -> None:
    await SERVICE.handle(runtime, request(arches=["s390x"], scratch=True))
    [task] = await task_rows(runtime)
    assert await queue_reasons(client, task["build_id"]) == {"s390x": NONE_ONLINE}
    # An s390x host comes online, busy: nothing leases, the status alone leaves the reason.
    busy = status("s390-1", arches=S390X, free_slots=0, running=1, max_slots=1)
    assert of_type(await new_messages(runtime, sent, busy), TaskLeasedV1) == []
    await handlers.requeue_expired_leases(runtime)
    assert await queue_reasons(client, task["build_id"]) == {"s390x": BUSY}
    # It goes offline: the next sweep says so again.
    await SERVICE.handle(runtime, status("s390-1", arches=S390X, free_slots=0, state="offline"))
    await handlers.requeue_expired_leases(runtime)
    assert await queue_reasons(client, task["build_id"]) == {"s390x": NONE_ONLINE}


async def test_a_task_waiting_for_busy_hosts_is_leased_when_a_slot_frees(
    runtime: Runtime, sent, client
) -> None:
    await SERVICE.handle(runtime, status("core-1", free_slots=0, running=1, max_slots=1))
    await SERVICE.handle(runtime, request())
    [task] = await task_rows(runtime)
    assert await queue_reasons(client, task["build_id"]) == {"noarch": BUSY}
    # The sweep does not change a true reason.
    await handlers.requeue_expired_leases(runtime)
    assert await queue_reasons(client, task["build_id"]) == {"noarch": BUSY}
    [lease] = of_type(
        await new_messages(runtime, sent, status("core-1", free_slots=1, max_slots=1)),
        TaskLeasedV1,
    )
    assert lease.body["task_id"] == task["id"]
    [row] = await task_rows(runtime)
    assert (row["state"], row["queue_reason"]) == ("leased", None)
    assert await queue_reasons(client, task["build_id"]) == {}


async def test_each_sweep_refreshes_at_most_its_bound_round_the_queue(runtime: Runtime) -> None:
    per_sweep(runtime, 3)
    for _ in range(7):
        await SERVICE.handle(runtime, request(arches=["s390x"], scratch=True))
    ids = sorted(await reasons(runtime))
    assert set((await reasons(runtime)).values()) == {NONE_ONLINE}
    await SERVICE.handle(runtime, status("s390-1", arches=S390X, free_slots=0, running=1))
    # Three a pass, the oldest first, on from where the last pass stopped.
    await handlers.requeue_expired_leases(runtime)
    assert [i for i, r in (await reasons(runtime)).items() if r == BUSY] == ids[:3]
    await handlers.requeue_expired_leases(runtime)
    assert [i for i, r in (await reasons(runtime)).items() if r == BUSY] == ids[:6]
    # The last one, then round to the oldest again.
    async with runtime.transaction() as ctx:
        assert await handlers.refresh_reasons(ctx) == [ids[6], ids[0], ids[1]]
    assert set((await reasons(runtime)).values()) == {BUSY}
    # Each task is looked at once every ceil(7 / 3) = 3 passes: the host goes offline.
    await SERVICE.handle(runtime, status("s390-1", arches=S390X, free_slots=0, state="offline"))
    for _ in range(3):
        async with runtime.transaction() as ctx:
            assert len(await handlers.refresh_reasons(ctx)) == 3
    assert set((await reasons(runtime)).values()) == {NONE_ONLINE}


async def test_a_refresh_leaves_a_task_another_transaction_holds(runtime: Runtime) -> None:
    await SERVICE.handle(runtime, request(arches=["s390x"], scratch=True))
    await SERVICE.handle(runtime, request(arches=["s390x"], scratch=True))
    held, free = sorted(await reasons(runtime))
    await SERVICE.handle(runtime, status("s390-1", arches=S390X, free_slots=0, running=1))
    async with runtime.pool.acquire() as other, other.transaction():
        await other.execute("SELECT 1 FROM tasks WHERE id = $1 FOR UPDATE", held)
        # Not waited for (a pull may be leasing it): the next pass does it.
        await handlers.requeue_expired_leases(runtime)
    assert await reasons(runtime) == {held: NONE_ONLINE, free: BUSY}
    await handlers.requeue_expired_leases(runtime)
    assert await reasons(runtime) == {held: BUSY, free: BUSY}


async def test_no_refresh_when_disabled(runtime: Runtime) -> None:
    per_sweep(runtime, 0)
    await SERVICE.handle(runtime, request(arches=["s390x"], scratch=True))
    await SERVICE.handle(runtime, status("s390-1", arches=S390X, free_slots=0, running=1))
    await handlers.requeue_expired_leases(runtime)
    assert set((await reasons(runtime)).values()) == {NONE_ONLINE}
