"""Tests for matching.preference / pick_host by the registry's QoS score and speed, and for
matching.declines (a slower host leaves a critical task to a faster one)."""

from __future__ import annotations

import dataclasses

import pytest

from services.dispatcher.matching import (
    HostView,
    Outlook,
    TaskView,
    declines,
    pick_host,
    preference,
)


def host(
    name: str,
    *,
    qos: float = 0.5,
    speed: float = 1.0,
    slots: int = 2,
    trust: str = "trusted",
    owner: str = "infra",
) -> HostView:
    return HostView(
        name,
        trust,
        frozenset({"noarch", "x86_64"}),
        frozenset({"f42"}),
        slots,
        owner=owner,
        qos_score=qos,
        speed=speed,
    )


def task(
    task_id: int = 1,
    *,
    work: float | None = None,
    path: float | None = None,
    scratch: bool = True,
    purpose: str = "build",
    exclude_owners: frozenset[str] = frozenset(),
) -> TaskView:
    return TaskView(
        task_id,
        "x86_64",
        None,
        scratch,
        purpose=purpose,
        exclude_owners=exclude_owners,
        work=work,
        path=path,
    )


CRITICAL = {"work": 600.0, "path": 6000.0}


@pytest.mark.parametrize(
    ("hosts", "weights", "expected"),
    [
        # The better QoS score wins over more free slots, for any task.
        ([host("good", qos=0.9, slots=1), host("bad", qos=0.3, slots=8)], {}, "good"),
        ([host("good", qos=0.9, slots=1), host("bad", qos=0.3, slots=8)], CRITICAL, "good"),
        # Equal scores: the most free slots (spreading load), as before.
        ([host("a", slots=1), host("b", slots=4)], {}, "b"),
        # A task without a critical-path weight: speed alone does not decide (QoS does,
        # and the score already counts speed).
        ([host("fast", speed=2.0, qos=0.5), host("slow", speed=0.5, qos=0.6)], {}, "slow"),
        # A critical task: the fastest host, even of a lower score.
        ([host("fast", speed=2.0, qos=0.5), host("slow", speed=0.5, qos=0.6)], CRITICAL, "fast"),
        # Not rated (HostView defaults): neutral, between a good and a bad host.
        (
            [
                HostView("new", "trusted", frozenset({"x86_64"}), frozenset(), 2),
                host("bad", qos=0.2),
            ],
            {},
            "new",
        ),
        (
            [
                HostView("new", "trusted", frozenset({"x86_64"}), frozenset(), 2),
                host("good", qos=0.8),
            ],
            {},
            "good",
        ),
    ],
)
def test_pick_host_by_qos_and_speed(
    hosts: list[HostView], weights: dict[str, float], expected: str
) -> None:
    for task_id in range(1, 20):
        picked = pick_host(task(task_id, **weights), hosts)
        assert picked is not None and picked.host == expected
        assert picked.host == pick_host(task(task_id, **weights), list(reversed(hosts))).host


def test_core_claim_still_comes_before_qos_and_speed() -> None:
    hosts = [host("core", trust="core", qos=0.3, speed=0.5), host("fast", qos=0.9, speed=3.0)]
    official = task(scratch=False, **CRITICAL)
    assert pick_host(official, hosts).host == "core"
    assert pick_host(dataclasses.replace(official, scratch=True), hosts).host == "fast"


def test_owner_diversity_is_a_constraint_before_any_preference() -> None:
    """A replica never goes to an excluded owner's host, however good it is."""
    hosts = [host("alice-best", owner="alice", qos=1.0, speed=5.0), host("bob", owner="bob")]
    replica = task(purpose="replica", exclude_owners=frozenset({"alice"}), **CRITICAL)
    assert pick_host(replica, hosts).host == "bob"


def test_preference_orders_by_core_then_speed_then_qos_then_slots() -> None:
    t = task(**CRITICAL)
    ranked = sorted(
        [
            host("slow-good", speed=0.5, qos=0.9),
            host("fast-bad", speed=2.0, qos=0.2),
            host("fast-good-small", speed=2.0, qos=0.8, slots=1),
            host("fast-good-big", speed=2.0, qos=0.8, slots=6),
        ],
        key=lambda h: preference(t, h),
        reverse=True,
    )
    assert [h.host for h in ranked] == ["fast-good-big", "fast-good-small", "fast-bad", "slow-good"]


# declines(): times in seconds at the farm's pace; the host pulling has speed 0.5.
SLOW = host("slow", speed=0.5)


@pytest.mark.parametrize(
    ("weights", "outlook", "expected"),
    [
        # Critical (600 s here = 1200 s, then 5400 s at speed 2 = 3900 s > deadline 3000 s),
        # and a speed-2 host free in 100 s ends it at 400 s < 1200 s: declined.
        (CRITICAL, Outlook(0, 3000, 2.0, [(2.0, 100)]), True),
        # The faster host is free now: declined too (it takes the task at once).
        (CRITICAL, Outlook(0, 3000, 2.0, [(2.0, 0)]), True),
        # The faster host frees too late: waiting would end it later than here.
        (CRITICAL, Outlook(0, 3000, 2.0, [(2.0, 1000)]), False),
        # No faster host at all: take it.
        (CRITICAL, Outlook(0, 3000, 2.0, []), False),
        # Only an equally slow host listed: not faster, take it.
        (CRITICAL, Outlook(0, 3000, 2.0, [(0.5, 0)]), False),
        # Slack: the path ends by the deadline even built here: take it (an idle slot helps).
        (CRITICAL, Outlook(0, 10_000, 2.0, [(2.0, 0)]), False),
        # No critical-path weight (an ordinary build): never declined.
        ({}, Outlook(0, 0, 2.0, [(2.0, 0)]), False),
        ({"work": 600.0}, Outlook(0, 0, 2.0, [(2.0, 0)]), False),
        # Late in the batch (now past the deadline): behind, every critical task is critical.
        (CRITICAL, Outlook(5000, 3000, 2.0, [(2.0, 5100)]), True),
    ],
)
def test_declines(weights: dict[str, float], outlook: Outlook, expected: bool) -> None:
    assert declines(SLOW, task(**weights), outlook) is expected


def test_the_fastest_host_never_declines() -> None:
    fastest = host("fastest", speed=2.0)
    assert not declines(fastest, task(**CRITICAL), Outlook(0, 0, 2.0, [(2.0, 0), (1.0, 0)]))
