"""Tests for services.dispatcher.fairshare: priority classes and decaying per-owner usage."""

from __future__ import annotations

import math

import pytest

from services.dispatcher import fairshare

HOUR = 3600.0
HALF_LIFE = 4 * HOUR


@pytest.mark.parametrize(
    ("priority", "klass"),
    [(1000, 0), (500, 0), (499, 1), (100, 1), (99, 2), (0, 2)],
)
def test_priority_classes(priority: int, klass: int) -> None:
    assert fairshare.priority_class(priority) == klass


def test_usage_halves_every_half_life() -> None:
    now = 1.8e9  # 2027: far from the epoch, where a plain 2^(t/h) would overflow
    key = fairshare.add_key(None, fairshare.charge_term(now, 100, HALF_LIFE))
    assert fairshare.usage_at(key, now, HALF_LIFE) == pytest.approx(100)
    assert fairshare.usage_at(key, now + HALF_LIFE, HALF_LIFE) == pytest.approx(50)
    assert fairshare.usage_at(key, now + 3 * HALF_LIFE, HALF_LIFE) == pytest.approx(12.5)
    # Charges add up, each decayed from its own time.
    later = now + HALF_LIFE
    key = fairshare.add_key(key, fairshare.charge_term(later, 10, HALF_LIFE))
    assert fairshare.usage_at(key, later, HALF_LIFE) == pytest.approx(60)
    assert fairshare.usage_at(None, now, HALF_LIFE) == 0
    assert math.isfinite(key)


def test_ordering_by_key_is_ordering_by_decayed_usage() -> None:
    now = 1.8e9
    heavy_old = fairshare.charge_term(now - 24 * HOUR, 1000, HALF_LIFE)  # 1000 / 64 now
    light_new = fairshare.charge_term(now, 20, HALF_LIFE)
    assert heavy_old < light_new
    assert fairshare.usage_at(heavy_old, now, HALF_LIFE) < 20


def test_one_owner_with_many_tasks_does_not_starve_another() -> None:
    candidates = {(1, "alice"): [f"a{i}" for i in range(500)], (1, "bob"): ["b0"]}
    # Alice has been running hundreds of builds; Bob nothing: Bob's build is the first.
    assert fairshare.interleave(candidates, {(1, "alice"): 300.0}, 1) == ["b0"]
    # Equal usage: picks alternate (the first group breaks the tie), one slot each.
    assert fairshare.interleave(candidates, {}, 3) == ["a0", "b0", "a1"]


def test_a_better_class_always_goes_first() -> None:
    candidates = {(2, "bob"): ["mass"], (0, "alice"): ["i0", "i1"]}
    assert fairshare.interleave(candidates, {(0, "alice"): 1e6}, 3) == ["i0", "i1", "mass"]
