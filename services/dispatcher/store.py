"""The dispatcher's SQL: builds, their tasks and leases, and its view of the hosts."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any

import asyncpg
from skyline_messages import HostStatusV1

from . import failures, matching
from .matching import HostView, TaskView

JSON_COLUMNS = ("files", "failures", "agreeing")


async def create_build(
    conn: asyncpg.Connection, request_id: str, nvr: str, body: Mapping[str, Any]
) -> asyncpg.Record | None:
    """A new build with one queued task per arch; None if this request was already taken."""
    build = await conn.fetchrow(
        "INSERT INTO builds (request_id, owner, nvr, srpm_url, srpm_sha256, release, scratch,"
        " priority) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        " ON CONFLICT (request_id) DO NOTHING RETURNING *",
        request_id,
        body["owner"],
        nvr,
        body["srpm_url"],
        body["srpm_sha256"],
        body.get("release"),
        body.get("scratch", False),
        body.get("priority", 100),
    )
    if build is not None:
        await conn.executemany(
            "INSERT INTO tasks (build_id, arch, priority) VALUES ($1, $2, $3)",
            [(build["id"], arch, build["priority"]) for arch in body["arches"]],
        )
    return build


async def build_tasks(conn: asyncpg.Connection, build_id: int) -> list[asyncpg.Record]:
    return await conn.fetch("SELECT * FROM tasks WHERE build_id = $1 ORDER BY id", build_id)


async def get_build(conn: asyncpg.Connection, build_id: int) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM builds WHERE id = $1", build_id)


async def upsert_host(conn: asyncpg.Connection, msg: HostStatusV1) -> None:
    b = msg.body
    await conn.execute(
        "INSERT INTO hosts (host, owner, state, trust, arches, releases, free_slots, running,"
        " max_slots, seen_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::text::timestamptz)"
        " ON CONFLICT (host) DO UPDATE SET owner = $2, state = $3, trust = $4, arches = $5,"
        " releases = $6, free_slots = $7, running = $8, max_slots = $9,"
        " seen_at = $10::text::timestamptz"
        " WHERE hosts.seen_at <= $10::text::timestamptz",  # never go back to an older status
        b["host"],
        b["owner"],
        b["state"],
        b["trust"],
        b["arches"],
        b["releases"],
        b["free_slots"],
        msg.running,
        msg.max_slots,
        b["seen_at"],
    )


async def get_host(conn: asyncpg.Connection, host: str) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM hosts WHERE host = $1", host)


async def lock_available_hosts(conn: asyncpg.Connection) -> list[HostView]:
    """Online hosts with a free slot, locked so two dispatchers never fill one slot twice.

    Free slots are counted from the dispatcher's own open leases, in a statement of its own
    run after the locks are held: a concurrent schedule that leased on one of these hosts
    committed before we got its lock, so this statement sees its leases.
    """
    rows = await conn.fetch(
        "SELECT * FROM hosts WHERE state = 'online' AND free_slots > 0"
        " ORDER BY host FOR UPDATE SKIP LOCKED"
    )
    if not rows:
        return []
    counts = await conn.fetch(
        "SELECT host, count(*) AS n FROM leases WHERE state = 'open' AND host = ANY($1::text[])"
        " GROUP BY host",
        [r["host"] for r in rows],
    )
    open_leases = {c["host"]: c["n"] for c in counts}
    hosts = [
        HostView(
            r["host"],
            r["trust"],
            frozenset(r["arches"]),
            frozenset(r["releases"]),
            matching.free_slots(
                r["free_slots"], r["running"], r["max_slots"], open_leases.get(r["host"], 0)
            ),
            owner=r["owner"],
        )
        for r in rows
    ]
    return [h for h in hosts if h.free_slots > 0]


async def lock_queued_tasks(conn: asyncpg.Connection, limit: int) -> list[TaskView]:
    rows = await conn.fetch(
        "SELECT t.id, t.arch, t.failures, t.refused_hosts, t.purpose, t.min_trust,"
        " t.exclude_hosts, t.exclude_owners, b.release, b.scratch"
        " FROM tasks t JOIN builds b ON b.id = t.build_id"
        " WHERE t.state = 'queued' ORDER BY t.priority DESC, t.id LIMIT $1"
        " FOR UPDATE OF t SKIP LOCKED",
        limit,
    )
    views = []
    for r in rows:
        failed = failures.parse(r["failures"])
        views.append(
            TaskView(
                r["id"],
                r["arch"],
                r["release"],
                r["scratch"],
                failed_hosts=frozenset(f.host for f in failed) | set(r["refused_hosts"]),
                failed_owners=frozenset(f.owner for f in failed),
                purpose=r["purpose"],
                min_trust=r["min_trust"],
                exclude_hosts=frozenset(r["exclude_hosts"]),
                exclude_owners=frozenset(r["exclude_owners"]),
            )
        )
    return views


async def lease(
    conn: asyncpg.Connection, task: TaskView, host: HostView, lease_seconds: int
) -> asyncpg.Record:
    """Lease a task to a host, recorded in leases; returns the task joined with its build for
    the lease message. A build lease counts in attempts, a replica or tie-break in
    replica_attempts (each bounded by handlers.MAX_ATTEMPTS)."""
    row = await conn.fetchrow(
        "UPDATE tasks t SET state = 'leased', host = $2, lease_id = $3,"
        " attempts = attempts + (t.purpose = 'build')::int,"
        " replica_attempts = replica_attempts + (t.purpose <> 'build')::int,"
        " lease_expires = now() + make_interval(secs => $4), updated_at = now()"
        " FROM builds b WHERE t.id = $1 AND b.id = t.build_id"
        " RETURNING t.*, b.owner, b.nvr, b.srpm_url, b.srpm_sha256, b.release, b.scratch",
        task.task_id,
        host.host,
        uuid.uuid4(),
        lease_seconds,
    )
    await conn.execute(
        "INSERT INTO leases (lease_id, task_id, host, owner, purpose, expires_at)"
        " VALUES ($1, $2, $3, $4, $5, $6)",
        row["lease_id"],
        row["id"],
        host.host,
        host.owner,
        row["purpose"],
        row["lease_expires"],
    )
    return row


async def task_by_lease(conn: asyncpg.Connection, lease_id: str) -> asyncpg.Record | None:
    """The task currently holding this lease (locked); None for expired or unknown leases."""
    return await conn.fetchrow("SELECT * FROM tasks WHERE lease_id = $1::uuid FOR UPDATE", lease_id)


async def lease_and_task(
    conn: asyncpg.Connection, lease_id: str
) -> tuple[asyncpg.Record, asyncpg.Record] | None:
    """Any lease the task ever had (not only its current one) and its task, locked."""
    found = await conn.fetchrow(
        "SELECT l.lease_id, l.task_id, l.state AS lease_state, l.host AS lease_host"
        " FROM leases l JOIN tasks t ON t.id = l.task_id WHERE l.lease_id = $1::uuid"
        " FOR UPDATE OF t, l",
        lease_id,
    )
    if found is None:
        return None
    task = await conn.fetchrow("SELECT * FROM tasks WHERE id = $1", found["task_id"])
    return found, task


async def end_lease(
    conn: asyncpg.Connection, lease_id: Any, state: str, *, only_from: tuple[str, ...] = ("open",)
) -> None:
    """Move a lease on (finished, accepted, refused, expired, failed, superseded)."""
    await conn.execute(
        "UPDATE leases SET state = $2 WHERE lease_id = $1 AND state = ANY($3::text[])",
        lease_id,
        state,
        list(only_from),
    )


async def supersede_leases(conn: asyncpg.Connection, task_id: int, keep: Any) -> None:
    """The task was accepted through lease `keep`: its other leases' results are not stored."""
    await conn.execute(
        "UPDATE leases SET state = 'superseded' WHERE task_id = $1 AND lease_id <> $2"
        " AND state IN ('open', 'finished')",
        task_id,
        keep,
    )


async def awaits_agreement(conn: asyncpg.Connection, task_id: int) -> bool:
    """Whether a succeeded result of the task waits for another to agree with it."""
    return await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM leases WHERE task_id = $1 AND state = 'finished')", task_id
    )


async def task_leases(conn: asyncpg.Connection, task_ids: list[int]) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT * FROM leases WHERE task_id = ANY($1::bigint[]) ORDER BY created_at, lease_id",
        task_ids,
    )


async def extend_lease(
    conn: asyncpg.Connection, task_id: int, seconds: float, *, finished: bool = False
) -> None:
    """Push the task's current lease's expiry to at least `seconds` from now; `finished`:
    its host reported the build done."""
    expires = await conn.fetchval(
        "UPDATE tasks SET lease_expires = GREATEST(lease_expires,"
        " now() + make_interval(secs => $2)), updated_at = now() WHERE id = $1"
        " RETURNING lease_expires",
        task_id,
        seconds,
    )
    await conn.execute(
        "UPDATE leases l SET expires_at = $2,"
        " finished_at = CASE WHEN $3 THEN coalesce(l.finished_at, now()) ELSE l.finished_at END"
        " FROM tasks t WHERE t.id = $1 AND l.lease_id = t.lease_id",
        task_id,
        expires,
        finished,
    )


async def lock_task(conn: asyncpg.Connection, task_id: int) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM tasks WHERE id = $1 FOR UPDATE", task_id)


async def set_task(conn: asyncpg.Connection, task_id: int, state: str, **fields: Any) -> None:
    columns = {"state": state, **fields}
    for name in JSON_COLUMNS:
        if name in columns:
            columns[name] = json.dumps(columns[name])
    assignments = ", ".join(f"{name} = ${i}" for i, name in enumerate(columns, start=2))
    await conn.execute(
        f"UPDATE tasks SET {assignments}, updated_at = now() WHERE id = $1",
        task_id,
        *columns.values(),
    )


async def refuse_host(conn: asyncpg.Connection, task_id: int, host: str) -> None:
    await conn.execute(
        "UPDATE tasks SET refused_hosts = array_append(refused_hosts, $2) WHERE id = $1",
        task_id,
        host,
    )


async def requeue(conn: asyncpg.Connection, task_id: int, reason: str, **fields: Any) -> None:
    await set_task(
        conn,
        task_id,
        "queued",
        host=None,
        lease_id=None,
        lease_expires=None,
        reason=reason,
        **fields,
    )


async def cancel_queued(conn: asyncpg.Connection, build_id: int, reason: str) -> None:
    """Fail the build's tasks that wait for a host (leased ones finish or expire as usual)."""
    await conn.execute(
        "UPDATE tasks SET state = 'failed', reason = $2, updated_at = now()"
        " WHERE build_id = $1 AND state = 'queued'",
        build_id,
        reason,
    )


async def expired_leases(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """Leases past expiry whose results never got stored.

    'verified' counts too: if the collector refuses what the verifier accepted (say, RPMs of
    another SRPM than the lease's), nothing else would ever move the task on.
    """
    return await conn.fetch(
        "SELECT * FROM tasks WHERE state IN ('leased', 'verified') AND lease_expires < now()"
        " FOR UPDATE SKIP LOCKED"
    )


async def finish_build(
    conn: asyncpg.Connection, build_id: int, state: str, reason: str | None = None
) -> asyncpg.Record | None:
    """Move a building build to its final state once; None if it was already final."""
    return await conn.fetchrow(
        "UPDATE builds SET state = $2, reason = $3, finished_at = now()"
        " WHERE id = $1 AND state = 'building' RETURNING *",
        build_id,
        state,
        reason,
    )


async def active_builds(conn: asyncpg.Connection, owner: str, *, besides: int) -> int:
    """How many builds `owner` has in progress, other than build `besides`.

    An advisory lock per owner, held to the end of the transaction, makes concurrent requests
    of one owner count one after the other (each sees the builds the others committed).
    """
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"quota:{owner}")
    return await conn.fetchval(
        "SELECT count(*) FROM builds WHERE owner = $1 AND state = 'building' AND id <> $2",
        owner,
        besides,
    )
