"""Upload limits as pure decisions (no I/O): what a lease may hold, what an owner may upload
in a day, how fast a host may send. The routes gather the numbers and turn a Refusal into a
clear 4xx; the message says which limit and which setting.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

from services.common.errors import SkylineError


class Refusal(SkylineError):
    """A limit says no; the message is for the client."""


@dataclasses.dataclass(frozen=True)
class Usage:
    files: int
    bytes: int


def lease_room(others: Usage, *, max_files: int, max_bytes: int, size: int | None) -> int:
    """How many bytes one more file of a lease may have; `others` are its other staged files.

    `size` is the declared Content-Length, if any: refused at once when it cannot fit.
    """
    if others.files >= max_files:
        raise Refusal(
            f"the lease holds {others.files} files already, the most a lease may hold"
            f" (max_files_per_lease = {max_files})"
        )
    room = max(0, max_bytes - others.bytes)
    if size is not None and size > room:
        raise Refusal(
            f"{size} bytes would take the lease past its {max_bytes} byte total"
            f" (max_lease_mb); {room} bytes are left"
        )
    return room


def source_room(
    owner: str, recent: Usage, *, per_hour: int, bytes_per_day: int, size: int | None
) -> int:
    """How many bytes `owner`'s next source may have, given its uploads of the last hour
    (`recent.files`) and bytes of the last day (`recent.bytes`)."""
    if recent.files >= per_hour:
        raise Refusal(
            f"owner {owner} uploaded {recent.files} sources in the last hour, the most allowed"
            f" (source_uploads_per_hour = {per_hour}); try again later"
        )
    room = max(0, bytes_per_day - recent.bytes)
    if size is not None and size > room:
        raise Refusal(
            f"owner {owner} may upload {room} more bytes today, not {size}"
            f" (source_mb_per_day = {bytes_per_day // 1024**2}); try again later"
        )
    return room


class RateLimiter:
    """A token bucket per key: `per_minute` requests a minute, in bursts of up to as many.

    In memory, per process: it guards this collector's disk and bandwidth, and a restart
    forgiving a host's recent burst costs nothing.
    """

    def __init__(
        self,
        per_minute: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0  # tokens per second
        self.clock = clock
        self.max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, when)

    def take(self, key: str) -> float:
        """Take one token: 0 if allowed, else the seconds to wait before one is free."""
        now = self.clock()
        tokens, then = self._buckets.get(key, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - then) * self.rate)
        if tokens < 1:
            self._buckets[key] = (tokens, now)
            return (1 - tokens) / self.rate if self.rate > 0 else float("inf")
        if key not in self._buckets and len(self._buckets) >= self.max_keys:
            self._prune(now)
        self._buckets[key] = (tokens - 1, now)
        return 0.0

    def _prune(self, now: float) -> None:
        # A bucket that has refilled is the same as no bucket.
        self._buckets = {
            k: (t, w)
            for k, (t, w) in self._buckets.items()
            if t + (now - w) * self.rate < self.capacity
        }
