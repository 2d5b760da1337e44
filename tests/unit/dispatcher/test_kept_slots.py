"""Tests for matching.keeps and critical.Declining.keeping: a fast host leaves a free slot
idle for a critical chain link about to be queued, when no other slot as fast is free by
then; never for long, for a link with slack, or for one a faster host will take."""

from __future__ import annotations

import dataclasses

import pytest

from services.dispatcher import critical
from services.dispatcher.matching import Coming, HostView, Outlook, TaskView, keeps
from tests.unit.dispatcher.test_critical_slack import host, task

FAST, SLOW = host(2.0), host(1.0)
# A link of 600 s of work on a 6000 s path, queued in 100 s; the batch's expected end at
# 3000 s: critical (its path alone takes 3000 s at the fastest pace, padded more).
LINK = Coming(task(600.0, 6000.0), ready_at=100.0)


def outlook(*faster: tuple[float, float], deadline: float = 3000.0) -> Outlook:
    return Outlook(
        0.0, deadline, 2.0, faster, pad=1.15, pro_rata=True, work_pad=1.5, heavy_share=0.25
    )


@pytest.mark.parametrize(
    ("pulling", "link", "look", "expected"),
    [
        # Only slower slots besides this host's own: it keeps one.
        (FAST, LINK, outlook((1.0, 0.0)), True),
        # Queued past the window (600 s): nothing kept.
        (FAST, dataclasses.replace(LINK, ready_at=700.0), outlook(), False),
        # Slack (the batch ends much later) and not heavy: any host will do.
        (FAST, LINK, outlook(deadline=100_000.0), False),
        # Another slot as fast is free by then: that one takes it.
        (FAST, LINK, outlook((2.0, 50.0)), False),
        # ... but not one free only after it is queued.
        (FAST, LINK, outlook((2.0, 150.0)), True),
        # A slower host keeps nothing for a link a faster slot free soon after will take.
        (SLOW, LINK, outlook((2.0, 150.0)), False),
    ],
)
def test_keeps(pulling: HostView, link: Coming, look: Outlook, expected: bool) -> None:
    assert keeps(pulling, link, look, window=600.0) is expected


def test_a_link_before_it_takes_the_one_fast_slot_free_by_then() -> None:
    look = outlook((2.0, 50.0))
    assert not keeps(FAST, LINK, look, ahead=0, window=600.0)
    assert keeps(FAST, LINK, look, ahead=1, window=600.0)


def declining(free_slots: int = 2) -> tuple[critical.Declining, HostView]:
    """A pull of the fast host (its free slots are the outlook's entries free now) beside a
    slower one free now."""
    fast = dataclasses.replace(FAST, free_slots=free_slots)
    look = outlook(*[(2.0, 0.0)] * free_slots, (1.0, 0.0))
    hosts = [fast] * free_slots + [SLOW]
    found = critical.Declining(
        {"x86_64": look},
        {},
        600.0,
        {"x86_64": hosts},
        coming={"x86_64": [LINK]},
        keep_seconds=600.0,
    )
    return found, fast


def test_a_fast_host_keeps_a_slot_for_a_longer_path_than_it_could_take() -> None:
    found, fast = declining()
    # Its own free slots do not count as another fast slot: it keeps one, once a pull.
    light = task(60.0, 1000.0)  # slack, and light
    assert found.keeping(fast, [light]) == 1
    assert found.kept == {LINK.task.task_id}
    assert found.keeping(fast, [light]) == 0


@pytest.mark.parametrize(
    "queued",
    [
        task(60.0, 6000.0),  # as long a path
        task(60.0, 7000.0),
        task(5000.0, 5000.0),  # a shorter path, but heavy here: it takes that one
    ],
)
def test_nothing_is_kept_from_a_queued_task_of_as_long_a_path_or_a_heavy_one(
    queued: TaskView,
) -> None:
    found, fast = declining()
    assert found.keeping(fast, [queued]) == 0


def test_nothing_is_kept_without_the_window() -> None:
    found, fast = declining()
    assert dataclasses.replace(found, keep_seconds=0.0).keeping(fast, []) == 0
