"""The statistics' SQL: record facts from the bus (idempotent upserts), read aggregates."""

from __future__ import annotations

import datetime
import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg
from skyline_messages import (
    BuildCompleteV1,
    BuildFailedV1,
    BuildQueuedV1,
    HostStatusV1,
    TaskFinishedV1,
    ThrottleEngagedV1,
    ThrottleReleasedV1,
)
from skyline_messages.base import package_of

from . import stats

MAX_CLAIM_SECONDS = stats.MAX_CLAIM_HOURS * 3600

# -- recording ------------------------------------------------------------------------------


async def record_host(conn: asyncpg.Connection, msg: HostStatusV1) -> None:
    await conn.execute(
        "INSERT INTO stats_hosts (host, owner, state, trust, arches, seen_at)"
        " VALUES ($1, $2, $3, $4, $5, $6::text::timestamptz)"
        " ON CONFLICT (host) DO UPDATE SET owner = EXCLUDED.owner, state = EXCLUDED.state,"
        " trust = EXCLUDED.trust, arches = EXCLUDED.arches, seen_at = EXCLUDED.seen_at,"
        " updated_at = now()"
        # An older status delivered late does not overwrite a newer one.
        " WHERE stats_hosts.seen_at IS NULL OR EXCLUDED.seen_at >= stats_hosts.seen_at",
        msg.host,
        msg.owner,
        msg.state,
        msg.trust,
        msg.arches,
        msg.seen_at,
    )


async def record_finished(conn: asyncpg.Connection, msg: TaskFinishedV1) -> None:
    """A host's report of a result: its status and claimed duration."""
    await conn.execute(
        "INSERT INTO stats_results (lease_id, task_id, build_id, host, arch, package, status,"
        " duration, finished_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now())"
        " ON CONFLICT (lease_id) DO UPDATE SET status = EXCLUDED.status,"
        " duration = EXCLUDED.duration, build_id = EXCLUDED.build_id, arch = EXCLUDED.arch,"
        " package = EXCLUDED.package, finished_at = COALESCE(stats_results.finished_at, now())",
        uuid.UUID(msg.lease_id),
        msg.task_id,
        msg.build_id,
        msg.host,
        msg.arch,
        package_of(msg.nvr),
        msg.status,
        msg.duration,
    )


async def judge_result(
    conn: asyncpg.Connection,
    *,
    lease_id: str,
    task_id: int,
    host: str,
    verdict: str,
    build_id: int | None = None,
    owner: str | None = None,
    arch: str | None = None,
    package: str | None = None,
    reason: str | None = None,
) -> None:
    """Record a verdict on a result; an accepted result stays accepted."""
    await conn.execute(
        "INSERT INTO stats_results (lease_id, task_id, build_id, host, owner, arch, package,"
        " verdict, reason, judged_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, now())"
        " ON CONFLICT (lease_id) DO UPDATE SET"
        " build_id = COALESCE(EXCLUDED.build_id, stats_results.build_id),"
        " owner = COALESCE(EXCLUDED.owner, stats_results.owner),"
        " arch = COALESCE(EXCLUDED.arch, stats_results.arch),"
        " package = COALESCE(EXCLUDED.package, stats_results.package),"
        " verdict = EXCLUDED.verdict, reason = EXCLUDED.reason,"
        " judged_at = COALESCE(stats_results.judged_at, now())"
        " WHERE stats_results.verdict <> 'accepted'",
        uuid.UUID(lease_id),
        task_id,
        build_id,
        host,
        owner,
        arch,
        package,
        verdict,
        reason,
    )


async def record_task(
    conn: asyncpg.Connection,
    *,
    task_id: int,
    build_id: int | None,
    package: str | None,
    arch: str | None,
    outcome: str,
    rule: str | None = None,
    agreeing: Sequence[str] = (),
    odd_ones_out: int = 0,
    not_reproducible: bool = False,
) -> None:
    """A task's judgement; an acceptance replaces an earlier no_agreement, never the reverse."""
    await conn.execute(
        "INSERT INTO stats_tasks (task_id, build_id, package, arch, outcome, rule, agreeing,"
        " odd_ones_out, not_reproducible) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        " ON CONFLICT (task_id) DO UPDATE SET outcome = EXCLUDED.outcome, rule = EXCLUDED.rule,"
        " agreeing = EXCLUDED.agreeing, odd_ones_out = EXCLUDED.odd_ones_out,"
        " not_reproducible = EXCLUDED.not_reproducible,"
        " build_id = COALESCE(EXCLUDED.build_id, stats_tasks.build_id),"
        " package = COALESCE(EXCLUDED.package, stats_tasks.package),"
        " arch = COALESCE(EXCLUDED.arch, stats_tasks.arch)"
        " WHERE stats_tasks.outcome = 'no_agreement' AND EXCLUDED.outcome = 'accepted'",
        task_id,
        build_id,
        package,
        arch,
        outcome,
        rule,
        list(agreeing),
        odd_ones_out,
        not_reproducible,
    )


async def build_queued(conn: asyncpg.Connection, msg: BuildQueuedV1) -> None:
    await conn.execute(
        "INSERT INTO stats_builds (build_id, nvr, package, owner, scratch, state, queued_at)"
        " VALUES ($1, $2, $3, $4, $5, 'queued', now()) ON CONFLICT (build_id) DO NOTHING",
        msg.build_id,
        msg.nvr,
        package_of(msg.nvr),
        msg.owner,
        msg.scratch,
    )


async def build_finished(
    conn: asyncpg.Connection,
    msg: BuildCompleteV1 | BuildFailedV1,
    *,
    state: str,
    tasks: Sequence[Mapping[str, Any]] = (),
    reason: str | None = None,
) -> None:
    """A build's verdict; the first verdict stays (a repeated announcement changes nothing)."""
    await conn.execute(
        "INSERT INTO stats_builds (build_id, nvr, package, owner, scratch, state, tasks, reason,"
        " finished_at) VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8, now())"
        " ON CONFLICT (build_id) DO UPDATE SET state = EXCLUDED.state, tasks = EXCLUDED.tasks,"
        " reason = EXCLUDED.reason, finished_at = EXCLUDED.finished_at"
        " WHERE stats_builds.state = 'queued'",
        msg.build_id,
        msg.nvr,
        package_of(msg.nvr),
        msg.owner,
        msg.scratch,
        state,
        json.dumps(list(tasks)),
        reason,
    )


async def record_throttle(
    conn: asyncpg.Connection, msg: ThrottleEngagedV1 | ThrottleReleasedV1, *, engaged: bool
) -> None:
    await conn.execute(
        "INSERT INTO stats_throttle (engaged, bad_rate, threshold, window_seconds, reason)"
        " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO UPDATE SET engaged = EXCLUDED.engaged,"
        " bad_rate = EXCLUDED.bad_rate, threshold = EXCLUDED.threshold,"
        " window_seconds = EXCLUDED.window_seconds, reason = EXCLUDED.reason, changed_at = now()",
        engaged,
        msg.bad_rate,
        msg.threshold,
        msg.window_seconds,
        msg.reason or None,  # NULL where the verifier gave none
    )


# -- reading --------------------------------------------------------------------------------


def _capped(sql: str) -> str:
    """`sql` capped at $1 seconds; NULL (no duration heard) stays NULL, which LEAST alone
    would turn into the cap: PostgreSQL's LEAST ignores NULLs."""
    return f"CASE WHEN {sql} IS NULL THEN NULL ELSE LEAST({sql}, $1) END"


# Per result: the hours granted to it (its task's smallest accepted claim, capped) if accepted.
_RESULTS = f"""
WITH grants AS (
    SELECT task_id, {_capped("min(duration)")} AS seconds
    FROM stats_results WHERE verdict = 'accepted' GROUP BY task_id
)
SELECT r.host, COALESCE(r.owner, h.owner) AS owner, r.verdict, r.status,
       {_capped("r.duration")} AS claimed,
       CASE WHEN r.verdict = 'accepted' THEN g.seconds END AS granted
FROM stats_results r
LEFT JOIN grants g USING (task_id)
LEFT JOIN stats_hosts h USING (host)
"""


def _tally(row: Mapping[str, Any]) -> dict[str, Any]:
    accepted, refused = row["accepted"], row["refused"]
    return {
        "results": row["results"],
        "accepted": accepted,
        "refused": refused,
        "build_hours": round((row["claimed"] or 0) / 3600, 2),
        "credit": stats.credit((row["granted"] or 0) / 3600),
        "valid_rate": stats.rate(accepted, refused),
    }


_TALLY = (
    "count(*) AS results, count(*) FILTER (WHERE verdict = 'accepted') AS accepted,"
    " count(*) FILTER (WHERE verdict = 'refused') AS refused,"
    " sum(claimed) AS claimed, sum(granted) AS granted"
)


async def leaderboard(conn: asyncpg.Connection, limit: int) -> dict[str, list[dict[str, Any]]]:
    """Owners and hosts by credit, then valid rate."""
    hosts = await conn.fetch(
        f"SELECT host, max(owner) AS owner, {_TALLY} FROM ({_RESULTS}) r GROUP BY host",
        MAX_CLAIM_SECONDS,
    )
    owners = await conn.fetch(
        f"SELECT owner, count(DISTINCT host) AS hosts, {_TALLY} FROM ({_RESULTS}) r"
        " WHERE owner IS NOT NULL GROUP BY owner",
        MAX_CLAIM_SECONDS,
    )
    host_rows = [{"host": r["host"], "owner": r["owner"], **_tally(r)} for r in hosts]
    owner_rows = [{"owner": r["owner"], "hosts": r["hosts"], **_tally(r)} for r in owners]
    return {"owners": _ranked(owner_rows)[:limit], "hosts": _ranked(host_rows)[:limit]}


def _ranked(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows.sort(key=lambda r: (-r["credit"], -(r["valid_rate"] or 0), -r["accepted"]))
    return [{"rank": i, **r} for i, r in enumerate(rows, 1)]


async def hosts(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT host, owner, state, trust, arches, seen_at FROM stats_hosts ORDER BY host"
    )
    return [{**dict(r), "arches": list(r["arches"]), "seen_at": _iso(r["seen_at"])} for r in rows]


async def packages(conn: asyncpg.Connection, limit: int) -> list[dict[str, Any]]:
    """Per package: builds and their verdicts, durations, and how reproducible it is."""
    rows = await conn.fetch(
        "WITH b AS (SELECT package, count(*) AS builds,"
        "  count(*) FILTER (WHERE state = 'complete') AS complete,"
        "  count(*) FILTER (WHERE state = 'failed') AS failed,"
        "  avg(extract(epoch FROM finished_at - queued_at))"
        "   FILTER (WHERE state = 'complete') AS mean_build_seconds,"
        "  max(finished_at) AS last_at FROM stats_builds GROUP BY package),"
        " r AS (SELECT package, avg(duration) AS mean_task_seconds,"
        "  max(duration) AS max_task_seconds FROM stats_results"
        "  WHERE status = 'succeeded' AND package IS NOT NULL GROUP BY package),"
        " t AS (SELECT package, count(*) AS tasks,"
        "  count(*) FILTER (WHERE cardinality(agreeing) >= 2) AS reproduced,"
        "  array_agg(DISTINCT arch) FILTER (WHERE not_reproducible) AS not_reproducible"
        "  FROM stats_tasks WHERE package IS NOT NULL GROUP BY package)"
        " SELECT * FROM b FULL JOIN r USING (package) FULL JOIN t USING (package)"
        " ORDER BY last_at DESC NULLS LAST, package LIMIT $1",
        limit,
    )
    return [
        {
            "package": r["package"],
            "builds": r["builds"] or 0,
            "complete": r["complete"] or 0,
            "failed": r["failed"] or 0,
            "mean_build_seconds": _round(r["mean_build_seconds"]),
            "mean_task_seconds": _round(r["mean_task_seconds"]),
            "max_task_seconds": _round(r["max_task_seconds"]),
            "tasks_verified": r["tasks"] or 0,
            "tasks_reproduced": r["reproduced"] or 0,  # agreed on by two hosts or more
            "not_reproducible_arches": sorted(r["not_reproducible"] or []),
        }
        for r in rows
    ]


async def recent_builds(conn: asyncpg.Connection, limit: int) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT * FROM stats_builds ORDER BY COALESCE(finished_at, queued_at) DESC NULLS LAST,"
        " build_id DESC LIMIT $1",
        limit,
    )
    return [
        {
            "build_id": r["build_id"],
            "nvr": r["nvr"],
            "owner": r["owner"],
            "scratch": r["scratch"],
            "verdict": r["state"],
            "reason": r["reason"],
            "tasks": json.loads(r["tasks"]),
            "queued_at": _iso(r["queued_at"]),
            "finished_at": _iso(r["finished_at"]),
        }
        for r in rows
    ]


async def summary(conn: asyncpg.Connection, now: datetime.datetime) -> dict[str, Any]:
    """Farm-wide figures: builds per hour, disagreement rate, throttle, open builds."""
    since = now - datetime.timedelta(hours=stats.SERIES_HOURS)
    hourly = await conn.fetch(
        "SELECT date_trunc('hour', finished_at) AS hour, count(*) AS n FROM stats_builds"
        " WHERE state = 'complete' AND finished_at > $1 GROUP BY 1",
        since,
    )
    series = stats.hourly_series({r["hour"]: r["n"] for r in hourly}, now)
    tasks = await conn.fetchrow(
        "SELECT count(*) AS judged, count(*) FILTER (WHERE outcome = 'no_agreement'"
        " OR odd_ones_out > 0 OR not_reproducible) AS disagreed FROM stats_tasks"
    )
    builds = await conn.fetchrow(
        "SELECT count(*) FILTER (WHERE state = 'queued') AS open,"
        " count(*) FILTER (WHERE state = 'complete') AS complete,"
        " count(*) FILTER (WHERE state = 'failed') AS failed FROM stats_builds"
    )
    throttle = await conn.fetchrow("SELECT * FROM stats_throttle")
    judged, disagreed = tasks["judged"], tasks["disagreed"]
    return {
        "builds_per_hour": series,
        "mean_builds_per_hour": stats.per_hour(series),
        "builds": dict(builds),
        "tasks_judged": judged,
        "disagreement_rate": round(disagreed / judged, 4) if judged else None,
        "throttle": _throttle(throttle),
    }


def _throttle(row: asyncpg.Record | None) -> dict[str, Any]:
    if row is None:
        return {"engaged": False, "known": False}
    return {
        "engaged": row["engaged"],
        "known": True,
        "bad_rate": row["bad_rate"],
        "threshold": row["threshold"],
        "window_seconds": row["window_seconds"],
        "reason": row["reason"],
        "changed_at": _iso(row["changed_at"]),
    }


def _iso(value: datetime.datetime | None) -> str | None:
    return value.isoformat() if value else None


def _round(value: Any) -> float | None:
    return None if value is None else round(float(value), 1)
