"""The dispatcher prefers hosts by the registry's QoS score (host.status qos_score, and its
speed_factor, kept for critical tasks), on a real database; a status without them still
schedules, the host rated neutral."""

from __future__ import annotations

import pytest
from skyline_messages import HostStatusV1, TaskLeasedV1

from services.common.service import Runtime
from services.dispatcher.__main__ import SERVICE
from tests.integration.dispatcher.test_dispatcher_service import (
    new_messages,
    of_type,
    request,
    status,
)

pytestmark = pytest.mark.integration


def rated(host: str, qos: float | None, speed: float | None, free_slots: int) -> HostStatusV1:
    msg = status(host, free_slots=free_slots)
    if qos is not None:
        msg.body["qos_score"] = qos
    if speed is not None:
        msg.body["speed_factor"] = speed
    msg.validate()
    return msg


@pytest.mark.parametrize("good_first", [True, False])
async def test_a_task_goes_to_the_free_host_of_the_better_qos_score(
    runtime: Runtime, sent, good_first: bool
) -> None:
    # The worse host has more free slots: before QoS, it would have won.
    good = rated("good", 0.9, 2.0, free_slots=1)
    bad = rated("bad", 0.3, 0.5, free_slots=8)
    for msg in (good, bad) if good_first else (bad, good):
        assert of_type(await new_messages(runtime, sent, msg), TaskLeasedV1) == []
    rows = {
        r["host"]: r for r in await runtime.pool.fetch("SELECT host, qos_score, speed FROM hosts")
    }
    assert (rows["good"]["qos_score"], rows["good"]["speed"]) == (0.9, 2.0)
    assert (rows["bad"]["qos_score"], rows["bad"]["speed"]) == (0.3, 0.5)
    [lease] = of_type(await new_messages(runtime, sent, request()), TaskLeasedV1)
    assert lease.body["host"] == "good"
    # Full, the better host gives the next task to the other one.
    [lease] = of_type(await new_messages(runtime, sent, request()), TaskLeasedV1)
    assert lease.body["host"] == "bad"


@pytest.mark.parametrize(("other_score", "expected"), [(0.2, "unrated"), (0.8, "rated")])
async def test_a_status_without_qos_or_speed_schedules_as_neutral(
    runtime: Runtime, sent, other_score: float, expected: str
) -> None:
    old = status("unrated", free_slots=1)  # as a registry before qos_score / speed_factor
    assert "qos_score" not in old.body and "speed_factor" not in old.body
    await SERVICE.handle(runtime, old)
    await SERVICE.handle(runtime, rated("rated", other_score, None, free_slots=1))
    row = await runtime.pool.fetchrow("SELECT qos_score, speed FROM hosts WHERE host = 'unrated'")
    assert (row["qos_score"], row["speed"]) == (None, None)
    [lease] = of_type(await new_messages(runtime, sent, request()), TaskLeasedV1)
    assert lease.body["host"] == expected


async def test_a_newer_status_without_the_figures_forgets_them(runtime: Runtime, sent) -> None:
    """The registry's word is the latest status's: a figure it no longer sends is unknown."""
    await SERVICE.handle(runtime, rated("h", 0.9, 1.5, free_slots=0))
    await SERVICE.handle(runtime, status("h", free_slots=0))
    row = await runtime.pool.fetchrow("SELECT qos_score, speed FROM hosts WHERE host = 'h'")
    assert (row["qos_score"], row["speed"]) == (None, None)
