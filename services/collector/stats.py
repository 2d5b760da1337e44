"""Pure statistics policy: credit, rates and the hourly series. No I/O.

Credit follows BOINC's principle: only results the verifier accepted earn it (a host named in
a task.verified's `agreeing` list), and each of a task's agreeing hosts is granted the smallest
duration any of them claimed, capped at MAX_CLAIM_HOURS (stats_store.py sums those grants), so
that claiming a longer build than one's peers earns nothing.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence

CREDIT_PER_HOUR = 100.0  # credit for one accepted build hour
MAX_CLAIM_HOURS = 48.0  # a claimed duration beyond this is counted as this
SERIES_HOURS = 24  # the builds-per-hour chart's span


def credit(granted_hours: float) -> float:
    return round(max(granted_hours, 0.0) * CREDIT_PER_HOUR, 2)


def rate(good: int, bad: int) -> float | None:
    """good / (good + bad); None when nothing was judged yet (no rate, rather than 0 %)."""
    total = good + bad
    return round(good / total, 4) if total else None


def hourly_series(
    counts: Mapping[datetime.datetime, int],
    now: datetime.datetime,
    hours: int = SERIES_HOURS,
) -> list[dict[str, object]]:
    """Builds per hour for the last `hours` hours, oldest first, hours without builds as 0."""
    top = now.replace(minute=0, second=0, microsecond=0)
    by_hour = {
        k.astimezone(datetime.UTC).replace(minute=0, second=0, microsecond=0): v
        for k, v in counts.items()
    }
    series = []
    for back in range(hours - 1, -1, -1):
        hour = (top - datetime.timedelta(hours=back)).astimezone(datetime.UTC)
        series.append({"hour": hour.isoformat(), "builds": by_hour.get(hour, 0)})
    return series


def per_hour(series: Sequence[Mapping[str, object]]) -> float:
    """The mean builds per hour over a series."""
    if not series:
        return 0.0
    return round(sum(int(s["builds"]) for s in series) / len(series), 2)  # type: ignore[call-overload]


def hosts_by_arch(hosts: Sequence[Mapping[str, object]]) -> dict[str, dict[str, int]]:
    """How many hosts build each arch, by trust level: {arch: {trust: n}}."""
    table: dict[str, dict[str, int]] = {}
    for h in hosts:
        for arch in h["arches"]:  # type: ignore[attr-defined]
            by_trust = table.setdefault(str(arch), {})
            by_trust[str(h["trust"])] = by_trust.get(str(h["trust"]), 0) + 1
    return dict(sorted(table.items()))
