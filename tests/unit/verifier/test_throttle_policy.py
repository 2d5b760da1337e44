"""The throttle's pure policy: when it engages and releases, and what counts."""

from __future__ import annotations

import pytest
from skyline_messages import TaskVerifiedV1

from services.common.config import ConfigError, load_config
from services.verifier.throttle import (
    BAD_REFUSALS,
    Change,
    ThrottleConfig,
    Window,
    decide,
    reason,
    refusal_outcome,
    verdict_outcomes,
)

CONFIG = ThrottleConfig(engage_rate=0.25, release_rate=0.10, min_results=20)


@pytest.mark.parametrize(
    ("engaged", "bad", "total", "expected"),
    [
        # Released: engages at the threshold with enough results, not before.
        (False, 0, 0, None),
        (False, 19, 19, None),  # too few to judge, however bad
        (False, 4, 20, None),  # 20% < 25%
        (False, 5, 20, Change.ENGAGE),  # exactly the threshold
        (False, 50, 200, Change.ENGAGE),
        # Engaged: stays between the two thresholds (hysteresis), releases below the lower.
        (True, 5, 20, None),
        (True, 3, 20, None),  # 15%: under engage_rate but not under release_rate
        (True, 2, 20, None),  # exactly 10% is not below it
        (True, 1, 20, Change.RELEASE),
        (True, 0, 40, Change.RELEASE),
        # Engaged with too few left to judge: the bad results aged out (a cool-down).
        (True, 19, 19, Change.RELEASE),
        (True, 0, 0, Change.RELEASE),
    ],
)
def test_decide(engaged, bad, total, expected) -> None:
    assert decide(engaged, Window(bad, total, bad_owners=min(bad, 2)), CONFIG) == expected


@pytest.mark.parametrize(("owners", "expected"), [(0, None), (1, None), (2, Change.ENGAGE)])
def test_one_owner_alone_cannot_engage_it(owners, expected) -> None:
    assert decide(False, Window(20, 20, bad_owners=owners), CONFIG) == expected
    # Engaged, the owners do not matter: it is released by the rate alone.
    assert decide(True, Window(20, 20, bad_owners=owners), CONFIG) is None


def test_a_rate_between_the_thresholds_does_not_flap() -> None:
    engaged = False
    changes = []
    # The bad share wanders around 20%, between release (10%) and engage (25%) once engaged.
    for bad in (5, 4, 3, 4, 5, 3, 4):
        change = decide(engaged, Window(bad, 20, bad_owners=3), CONFIG)
        if change is not None:
            changes.append(change)
            engaged = change == Change.ENGAGE
    assert changes == [Change.ENGAGE]


def test_reasons_say_the_share_and_the_rule() -> None:
    assert reason(Change.ENGAGE, Window(6, 20, 3), CONFIG) == (
        "6 of the last 20 results bad (30%) from 3 owners, at or above 25%"
    )
    assert reason(Change.RELEASE, Window(1, 20, 1), CONFIG) == (
        "1 of the last 20 results bad (5%) from 1 owner, below 10%"
    )
    assert reason(Change.RELEASE, Window(0, 5, 0), CONFIG) == (
        "0 of the last 5 results bad (0%): fewer than 20 in 3600 s to judge"
    )


@pytest.mark.parametrize(
    ("refusal", "trust", "expected"),
    [
        ("wrong_package", "untrusted", True),
        ("wrong_arch", "trusted", True),
        ("bad_rpm", "untrusted", True),
        ("srpm_mismatch", "untrusted", True),
        ("digest_mismatch", "untrusted", True),
        ("wrong_package", "core", None),  # core results do not count
        # Not the build's fault, or not the host's word: nothing counted.
        ("missing_upload", "untrusted", None),
        ("unknown_lease", "untrusted", None),
        ("host_not_allowed", "untrusted", None),
        ("replayed", "untrusted", None),
    ],
)
def test_refusal_outcome(refusal, trust, expected) -> None:
    assert refusal_outcome(refusal, trust) is expected


def test_bad_refusals_are_mismatch_reasons() -> None:
    from skyline_messages.task import MISMATCH_REASONS

    assert BAD_REFUSALS <= set(MISMATCH_REASONS)


def test_verdict_outcomes() -> None:
    body = {
        "agreeing": [
            {"host": "core-1", "owner": "fedora", "trust": "core", "lease_id": "l-core"},
            {"host": "vol-1", "owner": "alice", "trust": "trusted", "lease_id": "l-vol"},
        ],
        "odd_ones_out": [
            {"host": "vol-2", "lease_id": "l-odd", "comparison_key": "k"},
            {"host": "vol-3", "lease_id": "l-gone", "comparison_key": "k"},
        ],
    }
    owners = {"l-core": "fedora", "l-vol": "alice", "l-odd": "bob"}
    assert verdict_outcomes(TaskVerifiedV1(body=body), owners) == {
        "l-vol": (False, "alice"),
        "l-odd": (True, "bob"),
        "l-gone": (True, "host vol-3"),  # its owner unknown: counted as its host's own
    }
    assert verdict_outcomes(TaskVerifiedV1(body={"agreeing": [], "odd_ones_out": []}), {}) == {}


@pytest.mark.parametrize(
    "settings",
    [
        {"throttle_engage_rate": 0.1, "throttle_release_rate": 0.2},  # release above engage
        {"throttle_engage_rate": 1.5},
        {"throttle_engage_rate": 0},
        {"throttle_min_results": 0},
        {"throttle_window_seconds": 0},
        {"throttle_min_results": 50, "throttle_window_results": 40},
        {"throttle_check_seconds": 0},
        {"throttle_min_bad_owners": 0},
    ],
)
def test_bad_settings_are_refused_at_load(tmp_path, settings) -> None:
    lines = ["[verifier]", *(f"{k} = {v}" for k, v in settings.items())]
    path = tmp_path / "skyline.toml"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError):
        load_config(path, env={})


def test_settings_reach_the_policy(tmp_path) -> None:
    path = tmp_path / "skyline.toml"
    path.write_text("[verifier]\nthrottle_engage_rate = 0.5\nthrottle_min_results = 5\n")
    config = load_config(path, env={}).verifier.throttle
    assert (config.engage_rate, config.min_results, config.release_rate) == (0.5, 5, 0.10)
