"""skyline.throttle.* messages."""

from __future__ import annotations

import pytest
from schema_support import (
    assert_invalid,
    check_message,
    example,
    mutated,
    param_id,
)
from skyline_messages import ThrottleEngagedV1, ThrottleReleasedV1

CLASSES = [ThrottleEngagedV1, ThrottleReleasedV1]


@pytest.mark.parametrize(
    ("cls", "body", "summary"),
    [
        (
            ThrottleEngagedV1,
            example(ThrottleEngagedV1),
            "throttle engaged: 12.5% bad results over 3600 s (threshold 5.0%)",
        ),
        (
            ThrottleEngagedV1,
            {"bad_rate": 1, "threshold": 0, "window_seconds": 1},  # integers format too
            "throttle engaged: 100.0% bad results over 1 s (threshold 0.0%)",
        ),
        (
            ThrottleReleasedV1,
            example(ThrottleReleasedV1),
            "throttle released: 1.0% bad results over 3600 s",
        ),
        (
            ThrottleReleasedV1,
            {"bad_rate": 0, "threshold": 0.05, "window_seconds": 600, "reason": "quiet"},
            "throttle released: 0.0% bad results over 600 s",
        ),
    ],
    ids=param_id,
)
def test_valid_message(cls, body, summary):
    # The throttle is the farm's own decision: no agent, no users, no packages.
    check_message(cls, body, summary, None, [], [])


INVALID = [
    (field, value)
    for field, values in {
        "bad_rate": [-0.01, 1.01, "0.1", None, True],
        "threshold": [-1, 2],
        "window_seconds": [0, -60, 1.5, "3600"],
        "reason": [1, "x" * 2001],
        "results": [-1, 1.5, "40", None, 10**10],
    }.items()
    for value in values
]


@pytest.mark.parametrize(("field", "value"), INVALID)
@pytest.mark.parametrize("cls", CLASSES, ids=param_id)
def test_invalid_body(cls, field, value):
    assert_invalid(cls, mutated(example(cls), field, value))


def test_typed_fields():
    engaged = ThrottleEngagedV1(body=example(ThrottleEngagedV1))
    assert (engaged.bad_rate, engaged.threshold, engaged.window_seconds) == (0.125, 0.05, 3600)
    assert (engaged.results, engaged.reason) == (40, "too many digest mismatches")
    released = ThrottleReleasedV1(body=example(ThrottleReleasedV1))
    assert (released.results, released.reason) == (None, "")  # an older verifier's message
