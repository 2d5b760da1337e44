"""Tests for matching.critical_path_ends and the Outlook options declines() reads: estimates
padded for their error (pad), slack shared along the path (pro_rata), and the critical tasks
a pull already left to faster hosts (declines' `ahead`)."""

from __future__ import annotations

import pytest

from services.dispatcher.matching import (
    HostView,
    Outlook,
    TaskView,
    critical_path_ends,
    declines,
)


def host(speed: float) -> HostView:
    return HostView(f"h{speed}", "core", frozenset({"x86_64"}), frozenset({"f42"}), 2, speed=speed)


def task(work: float = 600.0, path: float = 6000.0) -> TaskView:
    return TaskView(1, "x86_64", "f42", False, work=work, path=path)


# Times in seconds at the farm's pace; the arch's fastest host has speed 2.
@pytest.mark.parametrize(
    ("speed", "outlook", "expected"),
    [
        # Greedy: 600 s at speed 0.5 = 1200 s, then 5400 s at speed 2 = 2700 s.
        (0.5, Outlook(0, 0, 2.0), 3900.0),
        # Padded: the path counts as 1.5 times its estimate.
        (0.5, Outlook(0, 0, 2.0, pad=1.5), 5850.0),
        # Pro rata: the whole path at this host's pace.
        (0.5, Outlook(0, 0, 2.0, pro_rata=True), 12_000.0),
        (2.0, Outlook(100, 0, 2.0, pro_rata=True), 3100.0),
        (0.5, Outlook(0, 0, 2.0, pad=1.5, pro_rata=True), 18_000.0),
    ],
)
def test_critical_path_ends(speed: float, outlook: Outlook, expected: float) -> None:
    assert critical_path_ends(host(speed), task(), outlook) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("outlook", "expected"),
    [
        # Greedy: ends at 3900 s by a 10,000 s deadline: slack, take it.
        (Outlook(0, 10_000, 2.0, [(2.0, 0)]), False),
        # Pro rata: the whole path at speed 0.5 (12,000 s) misses it: left to the faster host.
        (Outlook(0, 10_000, 2.0, [(2.0, 0)], pro_rata=True), True),
        # Pro rata with a deadline the slow pace meets: take it.
        (Outlook(0, 12_000, 2.0, [(2.0, 0)], pro_rata=True), False),
        # Padded estimates: 3900 s taken at its word meets 5000 s; 1.5 times it does not.
        (Outlook(0, 5000, 2.0, [(2.0, 0)]), False),
        (Outlook(0, 5000, 2.0, [(2.0, 0)], pad=1.5), True),
        # Critical, but the faster host frees too late to end it sooner: take it.
        (Outlook(0, 10_000, 2.0, [(2.0, 1000)], pro_rata=True), False),
    ],
)
def test_declines_with_pad_and_pro_rata(outlook: Outlook, expected: bool) -> None:
    assert declines(host(0.5), task(), outlook) is expected


@pytest.mark.parametrize(
    ("faster", "ahead", "expected"),
    [
        # One faster slot, free now: the first critical task counts on it...
        ([(2.0, 0)], 0, True),
        # ...a second one may not (that slot is spoken for): built here.
        ([(2.0, 0)], 1, False),
        # Two faster slots: the second task counts on the later one (ends at 700 s < 1200 s).
        ([(2.0, 0), (2.0, 400)], 1, True),
        # The second slot frees too late to beat this host: built here.
        ([(2.0, 0), (2.0, 1000)], 1, False),
        # Slots are taken soonest first, whatever their order in the list.
        ([(2.0, 1000), (2.0, 0)], 1, False),
        ([(2.0, 400), (2.0, 0), (2.0, 300)], 2, True),
    ],
)
def test_declines_leaves_a_faster_slot_to_the_tasks_ahead(
    faster: list[tuple[float, float]], ahead: int, expected: bool
) -> None:
    outlook = Outlook(0, 0, 2.0, faster)
    assert declines(host(0.5), task(), outlook, ahead=ahead) is expected
