"""host.status carries the host's speed factor to two significant digits (store.speed), so a
speed that drifts by a hair publishes no new status, and always within the schema's bounds."""

import datetime

import pytest
from skyline_messages import HostStatusV1

from services.registry import store


@pytest.mark.parametrize(
    ("factor", "said"),
    [
        (2.0, 2.0),
        (1.0412, 1.0),
        (1.049, 1.0),
        (1.051, 1.1),
        (0.4567, 0.46),
        (0.001, 0.01),
        (10.0, 10.0),
        (123.0, 100.0),
    ],
)
def test_speed_is_said_to_two_significant_digits_within_bounds(factor: float, said: float) -> None:
    assert store.speed(factor) == pytest.approx(said)


def row(**fields: object) -> dict[str, object]:
    now = datetime.datetime.now(datetime.UTC)
    base: dict[str, object] = {
        "host": "h1",
        "owner": "alice",
        "state": "online",
        "trust": "trusted",
        "arches": ["x86_64"],
        "releases": ["f41"],
        "free_slots": 2,
        "running": 0,
        "cpus": 4,
        "last_heartbeat": now,
        "enrolled_at": now,
        "qos_score": 0.7,
        "speed_factor": None,
    }
    return base | fields


def test_the_status_says_a_measured_speed_and_none_before() -> None:
    assert "speed_factor" not in store.status_body(row())
    measured = HostStatusV1(body=store.status_body(row(speed_factor=1.9234)))
    measured.validate()
    assert measured.speed_factor == pytest.approx(1.9)
    # A drift below the second digit leaves what the dispatcher acts on unchanged.
    fields = store.status_fields(store.status_body(row(speed_factor=1.9234)))
    assert fields == store.status_fields(store.status_body(row(speed_factor=1.9101)))
    assert fields != store.status_fields(store.status_body(row(speed_factor=2.04)))
