"""The end of a lease lets its host pull at once (handlers.pull_freed): a task a slower host
left to that host (matching.declines) starts when the verdict frees the slot, not at the
host's next status or the periodic sweep."""

from __future__ import annotations

import pytest
from skyline_messages import TaskLeasedV1

from services.common.service import Runtime
from services.dispatcher.__main__ import SERVICE
from tests.integration.dispatcher.test_critical_path import (
    build_of,
    fast_host_busy,
    history,
    task_of,
)
from tests.integration.dispatcher.test_dispatcher_service import (
    finished,
    new_messages,
    of_type,
    verified,
)
from tests.integration.dispatcher.test_host_qos import rated

pytestmark = pytest.mark.integration


async def test_a_verified_lease_lets_its_host_take_the_task_declined_for_it(
    runtime: Runtime, sent
) -> None:
    busy = await fast_host_busy(runtime, sent)
    await SERVICE.handle(runtime, rated("slow", 0.9, 1.0, free_slots=1))
    long_one = build_of("skyline-long-1-1", scratch=True)
    assert of_type(await new_messages(runtime, sent, long_one), TaskLeasedV1) == []
    declined = await task_of(runtime, "skyline-long-1-1")
    assert declined["state"] == "queued" and declined["declined_at"] is not None
    # The fast host ends its build and says it has a slot free before the verdict: its lease
    # is still open, so the dispatcher counts no slot free and the status leases nothing.
    await SERVICE.handle(runtime, finished(busy))
    assert (
        of_type(await new_messages(runtime, sent, rated("fast", 0.5, 4.0, 1)), TaskLeasedV1) == []
    )
    # The verdict ends the lease: the fast host pulls then, without another status.
    leases = of_type(await new_messages(runtime, sent, verified(busy)), TaskLeasedV1)
    assert [(m.body["host"], m.body["task_id"]) for m in leases] == [("fast", declined["id"])]
    row = await task_of(runtime, "skyline-long-1-1")
    assert (row["state"], row["host"], row["declined_at"]) == ("leased", "fast", None)


async def test_a_verified_lease_of_a_busy_host_leases_nothing(runtime: Runtime, sent) -> None:
    """Its status says every slot is taken (it took other work meanwhile): no pull."""
    await history(runtime, "skyline-short", 8.0)
    await SERVICE.handle(runtime, rated("fast", 0.5, 4.0, free_slots=1))
    [busy] = of_type(await new_messages(runtime, sent, build_of("skyline-short-1-1")), TaskLeasedV1)
    await SERVICE.handle(runtime, finished(busy))
    await SERVICE.handle(runtime, rated("fast", 0.5, 4.0, free_slots=0))
    queued = await new_messages(runtime, sent, build_of("skyline-short-2-1", scratch=True))
    assert of_type(queued, TaskLeasedV1) == []
    assert of_type(await new_messages(runtime, sent, verified(busy)), TaskLeasedV1) == []
    assert (await task_of(runtime, "skyline-short-2-1"))["state"] == "queued"
