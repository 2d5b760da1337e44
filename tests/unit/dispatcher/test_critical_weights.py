"""Tests for services.dispatcher.critical: estimates from history, paths over a chain's DAG,
and when a decline stops holding a task back."""

from __future__ import annotations

import dataclasses

import pytest

from services.dispatcher import critical
from services.dispatcher.matching import HostView, Outlook, TaskView


def test_package_of_an_nvr_is_its_name_with_dashes_kept() -> None:
    assert critical.package_of("python-requests-2.31.0-1.fc40") == "python-requests"
    assert critical.package_of("bash-5.2-3") == "bash"


@pytest.mark.parametrize(
    ("elapsed", "speed", "expected"),
    [
        (100.0, 2.0, 200.0),  # twice as fast: 200 s of the farm's pace
        (100.0, 0.5, 50.0),
        (100.0, None, 100.0),  # not rated: the farm's pace
        (100.0, 0.0, 100.0),
        (0.2, 1.0, None),  # too short to be a build
        (30 * 24 * 3600.0, 1.0, None),  # a lease held for a month is no estimate
        (float("nan"), 1.0, None),
    ],
)
def test_farm_seconds(elapsed: float, speed: float | None, expected: float | None) -> None:
    assert critical.farm_seconds(elapsed, speed) == expected


def test_the_estimate_averages_its_first_samples_then_moves_by_a_share() -> None:
    est, n = critical.update_estimate(None, 0, 100.0)
    assert (est, n) == (100.0, 1)
    est, n = critical.update_estimate(est, n, 200.0)
    assert (est, n) == (150.0, 2)
    est, n = critical.update_estimate(est, n, 300.0)
    assert (est, n) == (pytest.approx(200.0), 3)
    # Past a few samples, one odd build moves it by EWMA_WEIGHT of the difference, no more.
    est, n = 100.0, 50
    odd, _ = critical.update_estimate(est, n, 1100.0)
    assert odd == pytest.approx(100.0 + critical.EWMA_WEIGHT * 1000.0)


def test_downstream_is_the_longest_path_after_each_build() -> None:
    # 1 -> 2 -> 4 and 1 -> 3 -> 4; 5 alone. Work: 1:10, 2:100, 3:5, 4:20, 5:7.
    work = {1: 10.0, 2: 100.0, 3: 5.0, 4: 20.0, 5: 7.0}
    after = [(2, 1), (3, 1), (4, 2), (4, 3)]
    below = critical.downstream(work, after)
    assert below == {1: 120.0, 2: 20.0, 3: 20.0, 4: 0.0, 5: 0.0}
    # A task's path is its work plus its build's downstream: the first link's is the longest.
    assert max(work, key=lambda b: work[b] + below[b]) == 1


def test_downstream_counts_unknown_work_as_nothing_and_survives_a_long_chain() -> None:
    assert critical.downstream({1: 5.0, 2: None, 3: 4.0}, [(2, 1), (3, 2)]) == {
        1: 4.0,
        2: 4.0,
        3: 0.0,
    }
    n = 5000  # deeper than Python's recursion limit
    below = critical.downstream({i: 1.0 for i in range(n)}, [(i + 1, i) for i in range(n - 1)])
    assert below[0] == n - 1


def test_build_work_is_its_longest_known_task() -> None:
    assert critical.build_work([None, 30.0, 10.0]) == 30.0
    assert critical.build_work([None]) is None


def slow_host() -> HostView:
    return HostView("slow", "core", frozenset({"x86_64"}), frozenset(), 1, speed=1.0)


def critical_task(task_id: int = 1) -> TaskView:
    return TaskView(task_id, "x86_64", None, True, work=100.0, path=300.0)


def outlook(free_at: float) -> Outlook:
    # The task is the longest queued: only the fastest host meets the deadline.
    return Outlook(now=0.0, deadline=300.0 / 2.0, fastest=2.0, faster=[(2.0, free_at)])


def test_declining_leaves_a_critical_task_to_a_faster_host_free_soon() -> None:
    declining = critical.Declining({"x86_64": outlook(free_at=20.0)}, {}, max_seconds=600)
    assert declining.leaves(slow_host(), critical_task())
    assert declining.reasons == {1: "waiting for a faster host (speed 2, free in 20 s)"}


def test_declining_stops_after_the_bound_and_without_an_outlook() -> None:
    outlooks = {"x86_64": outlook(free_at=20.0)}
    assert not critical.Declining(outlooks, {1: 600.0}, 600).leaves(slow_host(), critical_task())
    assert critical.Declining(outlooks, {1: 570.0}, 600).leaves(slow_host(), critical_task())
    # A slot free only after the bound runs out (in 1 s here) is not waited for.
    assert not critical.Declining(outlooks, {1: 599.0}, 600).leaves(slow_host(), critical_task())
    assert not critical.Declining({}, {}, 600).leaves(slow_host(), critical_task())


def test_no_decline_when_the_faster_host_is_free_too_late() -> None:
    # Free in 80 s, it would end at 130 s; the slow host now ends at 100 s.
    declining = critical.Declining({"x86_64": outlook(free_at=80.0)}, {}, 600)
    assert not declining.leaves(slow_host(), critical_task())
    assert declining.reasons == {}


def test_awaited_names_the_faster_host_that_ends_it_soonest() -> None:
    look = Outlook(now=10.0, deadline=0.0, fastest=4.0, faster=[(2.0, 0.0), (4.0, 30.0)])
    # speed 2 free now: ends at 10 + 50; speed 4 free at 30: ends at 30 + 25.
    assert critical.awaited(slow_host(), critical_task(), look) == (4.0, 20.0)
    assert critical.waiting_reason(2.0, 0.0) == "waiting for a faster host (speed 2, free now)"


def fast_host(owner: str = "alice", trust: str = "trusted") -> HostView:
    return HostView("fast", trust, frozenset({"x86_64"}), frozenset(), 0, owner, speed=2.0)


@pytest.mark.parametrize(
    ("task_changes", "fast", "waits"),
    [
        ({}, fast_host(), True),
        # A replica another owner must build: the fast host is the owner it excludes.
        ({"purpose": "replica", "exclude_owners": frozenset({"alice"})}, fast_host(), False),
        ({"exclude_hosts": frozenset({"fast"})}, fast_host(), False),
        ({"failed_hosts": frozenset({"fast"})}, fast_host(), False),
        ({"min_trust": "core"}, fast_host(), False),
        ({"min_trust": "core"}, fast_host(trust="core"), True),
    ],
)
def test_a_task_waits_only_for_a_faster_host_that_may_build_it(
    task_changes: dict, fast: HostView, waits: bool
) -> None:
    task = dataclasses.replace(critical_task(), **task_changes)
    declining = critical.Declining(
        {"x86_64": outlook(free_at=20.0)}, {}, 600, hosts={"x86_64": [fast]}
    )
    assert declining.leaves(slow_host(), task) is waits
