"""Tests for the rules for a task's own work in matching.declines: it counts at an upper
quantile of its estimate (Outlook.work_pad) while the rest of its path takes only `pad`, and
a heavy task (Outlook.heavy_share) is left to a faster host even with slack."""

from __future__ import annotations

import pytest

from services.common.config import DispatcherConfig
from services.dispatcher.matching import (
    Outlook,
    critical_path_ends,
    declines,
    heavy,
    padded_work,
)
from tests.unit.dispatcher.test_critical_slack import host, task


def test_the_own_work_takes_its_pad_and_the_rest_of_the_path_the_paths() -> None:
    giant = task(work=1000.0, path=1200.0)
    outlook = Outlook(0, 0, 2.0, pad=1.1, pro_rata=True, work_pad=1.5)
    assert padded_work(giant, outlook) == 1500.0
    # 1.5 x 1000 + 1.1 x 200 at speed 0.5.
    assert critical_path_ends(host(0.5), giant, outlook) == pytest.approx(3440.0)
    # Without a work_pad, the whole path takes `pad`, as before.
    uniform = Outlook(0, 0, 2.0, pad=1.1, pro_rata=True)
    assert padded_work(giant, uniform) == pytest.approx(1100.0)
    assert critical_path_ends(host(0.5), giant, uniform) == pytest.approx(2640.0)


def test_an_underestimated_giant_is_critical_by_its_own_works_quantile() -> None:
    """A giant at the end of its chain: its path is its work. Taken at pad 1.15 it ends by the
    deadline at this slow host; at its upper quantile it may not, and a faster host free soon
    ends it earlier: left to that one."""
    giant = task(work=1000.0, path=1000.0)
    fast_soon = [(2.0, 100.0)]
    loose = Outlook(0, 2500, 2.0, fast_soon, pad=1.15, pro_rata=True)
    assert not declines(host(0.5), giant, loose)
    quantile = Outlook(0, 2500, 2.0, fast_soon, pad=1.15, pro_rata=True, work_pad=1.5)
    assert declines(host(0.5), giant, quantile)


@pytest.mark.parametrize(
    ("work", "share", "expected"),
    [
        # 1.5 x 400 s at speed 1 = 600 s of the 2000 s left: heavy at a quarter...
        (400.0, 0.25, True),
        # ...not at half of it.
        (400.0, 0.5, False),
        # A small task is not heavy while much time is left.
        (60.0, 0.25, False),
        # No share: nothing is heavy.
        (400.0, None, False),
    ],
)
def test_heavy(work: float, share: float | None, expected: bool) -> None:
    outlook = Outlook(1000, 3000, 2.0, work_pad=1.5, heavy_share=share)
    assert heavy(host(1.0), task(work, work), outlook) is expected


def test_a_heavy_task_with_slack_is_left_to_a_faster_host() -> None:
    """Its path ends well before the deadline here (1.5 x 400 s at speed 1: 600 s of 10,000 s),
    yet the deadline is an estimate: a faster host that ends it sooner gets it."""
    big = task(work=400.0, path=400.0)
    fast_now = [(2.0, 0.0)]
    slack = Outlook(0, 10_000, 2.0, fast_now, pad=1.15, pro_rata=True, work_pad=1.5)
    assert not declines(host(1.0), big, slack)
    heavy_rule = Outlook(0, 2000, 2.0, fast_now, pad=1.15, pro_rata=True, work_pad=1.5)
    assert not declines(host(1.0), big, heavy_rule)  # not critical, no heavy rule
    with_share = Outlook(
        0, 2000, 2.0, fast_now, pad=1.15, pro_rata=True, work_pad=1.5, heavy_share=0.25
    )
    assert declines(host(1.0), big, with_share)
    # Only for a faster host that ends it earlier: one free too late does not hold it back.
    late = Outlook(
        0, 2000, 2.0, [(2.0, 300.0)], pad=1.15, pro_rata=True, work_pad=1.5, heavy_share=0.25
    )
    assert not declines(host(1.0), big, late)
    # A light task with slack is never held back.
    small = task(work=30.0, path=30.0)
    assert not declines(host(1.0), small, with_share)


def test_the_dispatchers_defaults_turn_both_rules_on() -> None:
    conf = DispatcherConfig()
    assert conf.work_pad > 1.0 and 0.0 < conf.heavy_share < 1.0
