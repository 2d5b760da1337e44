"""The collector's upload limits as pure decisions."""

from __future__ import annotations

import pytest

from services.collector.limits import RateLimiter, Refusal, Usage, lease_room, source_room


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_lease_room_is_what_is_left_of_the_total() -> None:
    assert lease_room(Usage(2, 300), max_files=3, max_bytes=1000, size=None) == 700
    assert lease_room(Usage(2, 300), max_files=3, max_bytes=1000, size=700) == 700
    assert lease_room(Usage(0, 0), max_files=1, max_bytes=0, size=0) == 0  # an empty file fits
    # A lowered limit leaves no room rather than a negative one.
    assert lease_room(Usage(1, 5000), max_files=3, max_bytes=1000, size=None) == 0


def test_lease_room_refuses_past_a_limit() -> None:
    with pytest.raises(Refusal, match=r"holds 3 files already.*max_files_per_lease = 3"):
        lease_room(Usage(3, 0), max_files=3, max_bytes=1000, size=1)
    with pytest.raises(Refusal, match=r"701 bytes would take the lease past its 1000 byte"):
        lease_room(Usage(2, 300), max_files=3, max_bytes=1000, size=701)


def test_source_room_counts_an_owners_hour_and_day() -> None:
    mb = 1024**2
    assert source_room("alice", Usage(0, 0), per_hour=2, bytes_per_day=mb, size=mb) == mb
    assert source_room("alice", Usage(1, mb - 10), per_hour=2, bytes_per_day=mb, size=None) == 10
    with pytest.raises(Refusal, match=r"alice uploaded 2 sources in the last hour"):
        source_room("alice", Usage(2, 0), per_hour=2, bytes_per_day=mb, size=1)
    with pytest.raises(Refusal, match=r"alice may upload 10 more bytes today, not 11"):
        source_room("alice", Usage(1, mb - 10), per_hour=2, bytes_per_day=mb, size=11)


def test_rate_limiter_allows_a_burst_then_the_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(60, clock=clock)  # one a second, bursts of 60
    assert [limiter.take("h1") for _ in range(60)] == [0.0] * 60
    assert limiter.take("h1") == pytest.approx(1.0)
    assert limiter.take("h2") == 0.0  # each key has its own bucket
    clock.now += 0.5
    assert limiter.take("h1") == pytest.approx(0.5)  # a refused try takes nothing
    clock.now += 0.5
    assert limiter.take("h1") == 0.0
    assert limiter.take("h1") == pytest.approx(1.0)
    clock.now += 3600  # refills to the burst size, no more
    assert [limiter.take("h1") for _ in range(61)].count(0.0) == 60


def test_rate_limiter_forgets_full_buckets_when_it_holds_too_many() -> None:
    clock = Clock()
    limiter = RateLimiter(60, clock=clock, max_keys=2)
    limiter.take("a")
    limiter.take("b")
    clock.now += 10  # both refilled
    limiter.take("c")
    assert set(limiter._buckets) == {"c"}
    limiter.take("d")
    limiter.take("e")  # c and d are not full yet: kept, the map grows rather than forgive them
    assert set(limiter._buckets) == {"c", "d", "e"}
