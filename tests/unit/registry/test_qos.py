"""The QoS formulas (services/registry/qos.py): documented figures, bounded, monotonic."""

from __future__ import annotations

import datetime
import math

import pytest

from services.registry import qos

CONFIG = qos.QosConfig()
T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def at(hours: float) -> datetime.datetime:
    return T0 + datetime.timedelta(hours=hours)


def test_rates_are_smoothed_towards_one_half() -> None:
    assert qos.smoothed_rate(0, 0) == 0.5
    assert qos.smoothed_rate(1, 1) == pytest.approx(2 / 3)
    assert qos.smoothed_rate(98, 100) == pytest.approx(99 / 102)


def test_speed_sample_is_the_log_ratio_to_the_median_of_other_hosts() -> None:
    assert qos.speed_sample(300, [500, 600, 10_000]) == pytest.approx(math.log(2))
    assert qos.speed_sample(1200, [600]) == pytest.approx(math.log(0.5))
    assert qos.speed_sample(1, [600]) == pytest.approx(math.log(10))  # clamped
    assert qos.speed_sample(600, []) is None  # nothing to compare with
    assert qos.speed_sample(0, [600]) is None


def test_speed_is_smoothed_after_the_first_sample() -> None:
    c = qos.add_speed_sample(qos.Counters(), math.log(2), CONFIG)
    assert math.exp(c.speed_log) == pytest.approx(2)  # the first sample is taken whole
    c = qos.add_speed_sample(c, 0.0, CONFIG)  # one build at the farm's pace
    assert c.speed_log == pytest.approx(0.8 * math.log(2))
    assert c.speed_samples == 2


def test_uptime_counts_online_time_and_silent_falls_in_the_window() -> None:
    changes = [
        (at(1), "offline", "online", "heartbeat"),
        (at(3), "online", "offline", "silent"),  # a failure
        (at(4), "offline", "online", "heartbeat"),
        (at(5), "online", "quarantined", "quarantine"),  # an admin's act: no failure
        (at(6), "quarantined", "offline", "release"),
        (at(7), "offline", "online", "heartbeat"),
    ]
    up = qos.uptime(changes, "offline", T0, at(10))
    assert up.online_seconds == pytest.approx((2 + 1 + 3) * 3600)
    assert up.observed_seconds == pytest.approx(10 * 3600)
    assert up.failures == 1
    # A window that opens with the host online counts from the window's start.
    assert qos.uptime([], "online", T0, at(2)).online_seconds == pytest.approx(7200)


def test_a_new_host_scores_in_the_middle() -> None:
    figures = qos.compute(qos.Counters(), qos.Uptime(0, 0, 0), CONFIG)
    assert (figures.success_rate, figures.valid_result_rate, figures.availability) == (
        0.5,
        0.5,
        0.5,
    )
    assert figures.speed_factor == 1 and figures.mtbf_seconds is None
    assert figures.score == pytest.approx(0.48, abs=0.005)


def test_a_reliable_fast_honest_host_outscores_every_kind_of_bad_one() -> None:
    week = 7 * 86400.0
    good = qos.Counters(finished=50, succeeded=49, valid=40, invalid=0, speed_log=math.log(1.5))
    best = qos.compute(good, qos.Uptime(week * 0.95, week, 1), CONFIG)
    assert best.score > 0.7
    assert best.mtbf_seconds == pytest.approx(week * 0.95)
    worse = [
        qos.compute(
            qos.Counters(**{**vars(good), "invalid": 10}), qos.Uptime(week * 0.95, week, 1), CONFIG
        ),
        qos.compute(
            qos.Counters(**{**vars(good), "succeeded": 10}),
            qos.Uptime(week * 0.95, week, 1),
            CONFIG,
        ),
        qos.compute(good, qos.Uptime(week * 0.3, week, 1), CONFIG),
        qos.compute(good, qos.Uptime(week * 0.95, week, 150), CONFIG),  # falls silent hourly
        qos.compute(
            qos.Counters(**{**vars(good), "speed_log": math.log(0.3)}),
            qos.Uptime(week * 0.95, week, 1),
            CONFIG,
        ),
    ]
    for figures in worse:
        assert 0 <= figures.score < best.score


def test_score_stays_within_bounds_at_the_extremes() -> None:
    awful = qos.Counters(finished=1000, succeeded=0, valid=0, invalid=1000, speed_log=math.log(0.1))
    assert 0 <= qos.compute(awful, qos.Uptime(0, 1e9, 0), CONFIG).score <= 0.05
    perfect = qos.Counters(finished=10**6, succeeded=10**6, valid=10**6, speed_log=math.log(10))
    assert 0.9 <= qos.compute(perfect, qos.Uptime(1e9, 1e9, 0), CONFIG).score <= 1


@pytest.mark.parametrize(
    "bad",
    [{"speed_alpha": 0}, {"speed_alpha": 1.5}, {"reference_builds": 0}, {"window_seconds": 0}],
)
def test_bad_settings_are_refused(bad: dict) -> None:
    with pytest.raises(ValueError):
        qos.QosConfig(**bad)
