"""The registry's SQL for quality of service: counters, leases and their ends, uptime."""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any

import asyncpg
from skyline_messages import TaskLeasedV1
from skyline_messages.base import package_of

from . import qos

_COUNTERS = [f.name for f in dataclasses.fields(qos.Counters)]


async def counters(conn: asyncpg.Connection, host: str) -> qos.Counters:
    row = await conn.fetchrow("SELECT * FROM host_qos WHERE host = $1", host)
    return qos.Counters() if row is None else qos.Counters(**{k: row[k] for k in _COUNTERS})


async def save_counters(conn: asyncpg.Connection, host: str, c: qos.Counters) -> None:
    values = [getattr(c, k) for k in _COUNTERS]
    columns = ", ".join(_COUNTERS)
    params = ", ".join(f"${i}" for i in range(2, len(values) + 2))
    updates = ", ".join(f"{k} = EXCLUDED.{k}" for k in _COUNTERS)
    await conn.execute(
        f"INSERT INTO host_qos (host, {columns}) VALUES ($1, {params})"
        f" ON CONFLICT (host) DO UPDATE SET {updates}",
        host,
        *values,
    )


async def lock_counters(conn: asyncpg.Connection, host: str) -> qos.Counters:
    """The host's counters, its row locked until the transaction ends (made if missing)."""
    await conn.execute("INSERT INTO host_qos (host) VALUES ($1) ON CONFLICT DO NOTHING", host)
    await conn.execute("SELECT 1 FROM host_qos WHERE host = $1 FOR UPDATE", host)
    return await counters(conn, host)


async def record_lease(
    conn: asyncpg.Connection, msg: TaskLeasedV1, leased_at: datetime.datetime
) -> asyncpg.Record | None:
    """The dispatcher's lease (its finish may be there already); None when the lease is
    known for another host (a finish published by a host it was not leased to)."""
    return await conn.fetchrow(
        "INSERT INTO host_tasks (lease_id, host, task_id, build_id, nvr, package, arch,"
        " leased_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        " ON CONFLICT (lease_id) DO UPDATE SET task_id = EXCLUDED.task_id,"
        " build_id = EXCLUDED.build_id, nvr = EXCLUDED.nvr, package = EXCLUDED.package,"
        " arch = EXCLUDED.arch, leased_at = EXCLUDED.leased_at"
        " WHERE host_tasks.host = EXCLUDED.host AND host_tasks.leased_at IS NULL"
        " RETURNING *",
        msg.lease_id,
        msg.host,
        msg.task_id,
        msg.build_id,
        msg.nvr,
        package_of(msg.nvr),
        msg.arch,
        leased_at,
    )


async def record_finish(
    conn: asyncpg.Connection, lease_id: str, host: str, status: str
) -> asyncpg.Record | None:
    """The host's finish, timed now (the lease may come later); None when the lease is
    another host's or already finished."""
    return await conn.fetchrow(
        "INSERT INTO host_tasks (lease_id, host, status, finished_at) VALUES ($1, $2, $3, now())"
        " ON CONFLICT (lease_id) DO UPDATE SET status = EXCLUDED.status,"
        " finished_at = EXCLUDED.finished_at"
        " WHERE host_tasks.host = EXCLUDED.host AND host_tasks.finished_at IS NULL"
        " RETURNING *",
        lease_id,
        host,
        status,
    )


async def mark_counted(conn: asyncpg.Connection, lease_id: Any, duration: float | None) -> None:
    await conn.execute(
        "UPDATE host_tasks SET counted = true, duration = $2 WHERE lease_id = $1",
        lease_id,
        duration,
    )


async def reference(
    conn: asyncpg.Connection, package: str, arch: str, host: str, limit: int
) -> list[float]:
    """Durations of the newest successful builds of the package and arch on other hosts."""
    rows = await conn.fetch(
        "SELECT duration FROM host_tasks WHERE package = $1 AND arch = $2 AND host <> $3"
        " AND status = 'succeeded' AND duration IS NOT NULL"
        " ORDER BY finished_at DESC LIMIT $4",
        package,
        arch,
        host,
        limit,
    )
    return [r["duration"] for r in rows]


async def set_verdict(conn: asyncpg.Connection, lease_id: str, verdict: str) -> None:
    await conn.execute("UPDATE host_tasks SET verdict = $2 WHERE lease_id = $1", lease_id, verdict)


async def uptime(
    conn: asyncpg.Connection, host: asyncpg.Record, window: float
) -> tuple[qos.Uptime, datetime.datetime]:
    """The host's uptime over the window (from its enrolment at the earliest), and now."""
    now = await conn.fetchval("SELECT now()")
    start = max(host["enrolled_at"], now - datetime.timedelta(seconds=window))
    before = await conn.fetchval(
        "SELECT new_state FROM host_state_changes WHERE host = $1 AND at <= $2"
        " ORDER BY at DESC, id DESC LIMIT 1",
        host["host"],
        start,
    )
    rows = await conn.fetch(
        "SELECT at, old_state, new_state, reason FROM host_state_changes"
        " WHERE host = $1 AND at > $2 ORDER BY at, id",
        host["host"],
        start,
    )
    changes = [(r["at"], r["old_state"], r["new_state"], r["reason"]) for r in rows]
    return qos.uptime(changes, before or "offline", start, now), now


async def save_score(
    conn: asyncpg.Connection, host: str, score: float, speed_factor: float | None
) -> asyncpg.Record:
    return await conn.fetchrow(
        "UPDATE hosts SET qos_score = $2, speed_factor = $3, qos_computed_at = now()"
        " WHERE host = $1 RETURNING *",
        host,
        score,
        speed_factor,
    )


async def stale_hosts(conn: asyncpg.Connection, older_than: float, limit: int) -> list[str]:
    """Hosts whose score is oldest and older than `older_than` seconds (never computed first)."""
    rows = await conn.fetch(
        "SELECT host FROM hosts WHERE revoked_at IS NULL AND (qos_computed_at IS NULL"
        " OR qos_computed_at < now() - make_interval(secs => $1))"
        " ORDER BY qos_computed_at NULLS FIRST LIMIT $2",
        older_than,
        limit,
    )
    return [r["host"] for r in rows]


async def recent_builds(conn: asyncpg.Connection, host: str, limit: int) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT * FROM host_tasks WHERE host = $1 AND leased_at IS NOT NULL"
        " ORDER BY leased_at DESC LIMIT $2",
        host,
        limit,
    )
    return [
        {
            "lease_id": str(r["lease_id"]),
            "task_id": r["task_id"],
            "build_id": r["build_id"],
            "nvr": r["nvr"],
            "arch": r["arch"],
            "leased_at": r["leased_at"].isoformat(),
            "finished_at": r["finished_at"].isoformat() if r["finished_at"] else None,
            "status": r["status"],
            "duration": r["duration"],
            "verdict": r["verdict"],
        }
        for r in rows
    ]


async def state_changes(conn: asyncpg.Connection, host: str, limit: int) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT * FROM host_state_changes WHERE host = $1 ORDER BY id DESC LIMIT $2", host, limit
    )
    return [
        {
            "old": r["old_state"],
            "new": r["new_state"],
            "reason": r["reason"],
            "at": r["at"].isoformat(),
        }
        for r in rows
    ]
