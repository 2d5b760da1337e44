"""The collector's SQL: leases, staged and stored files, source RPMs."""

from __future__ import annotations

import datetime
import json
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import asyncpg
from skyline_messages import TaskLeasedV1

from .limits import Usage
from .storage import Result


async def add_lease(conn: asyncpg.Connection, msg: TaskLeasedV1) -> bool:
    """Record a lease; False if it was known already."""
    added = await conn.fetchval(
        "INSERT INTO leases (lease_id, task_id, build_id, host, arch, owner, nvr, srpm_sha256,"
        " scratch) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        " ON CONFLICT DO NOTHING RETURNING true",
        uuid.UUID(msg.lease_id),
        msg.task_id,
        msg.build_id,
        msg.host,
        msg.arch,
        msg.owner,
        msg.nvr,
        msg.srpm_sha256,
        msg.scratch,
    )
    return bool(added)


async def get_lease(
    conn: asyncpg.Connection, lease_id: uuid.UUID, *, for_update: bool = False
) -> asyncpg.Record | None:
    lock = " FOR UPDATE" if for_update else ""
    return await conn.fetchrow(f"SELECT * FROM leases WHERE lease_id = $1{lock}", lease_id)


async def lease_takes_uploads(conn: asyncpg.Connection, lease_id: uuid.UUID) -> bool:
    """Whether the lease is open; FOR SHARE waits for a storing transaction to finish first."""
    return bool(
        await conn.fetchval(
            "SELECT state = 'open' AND cleaned_at IS NULL FROM leases WHERE lease_id = $1"
            " FOR SHARE",
            lease_id,
        )
    )


async def lock_nvr(conn: asyncpg.Connection, nvr: str) -> None:
    """Serialise storing of one N-V-R (its tasks share paths) until the transaction ends."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"store:{nvr}")


async def set_state(conn: asyncpg.Connection, lease_id: uuid.UUID, state: str) -> None:
    await conn.execute(
        "UPDATE leases SET state = $2, stored_at = CASE WHEN $2 = 'stored' THEN now() END"
        " WHERE lease_id = $1",
        lease_id,
        state,
    )


async def stored_lease_of_task(
    conn: asyncpg.Connection, task_id: int, lease_id: uuid.UUID
) -> uuid.UUID | None:
    """Another lease of the same task whose results are stored already, if any."""
    return await conn.fetchval(
        "SELECT lease_id FROM leases WHERE task_id = $1 AND lease_id <> $2 AND state = 'stored'",
        task_id,
        lease_id,
    )


async def supersede_other_leases(
    conn: asyncpg.Connection, task_id: int, lease_id: uuid.UUID
) -> list[uuid.UUID]:
    """The task was stored from `lease_id`: its other open leases (replicas, tie-breaks whose
    uploads the verifier read facts from) are superseded, so the sweep removes them."""
    rows = await conn.fetch(
        "UPDATE leases SET state = 'superseded' WHERE task_id = $1 AND lease_id <> $2"
        " AND state = 'open' RETURNING lease_id",
        task_id,
        lease_id,
    )
    return [r["lease_id"] for r in rows]


async def staged_files(conn: asyncpg.Connection, lease_id: uuid.UUID) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT name, size, sha256 FROM staged_files WHERE lease_id = $1 ORDER BY name", lease_id
    )


async def staged_listing(conn: asyncpg.Connection, lease_id: uuid.UUID) -> list[dict[str, Any]]:
    """The staged files with each RPM's recorded header (None for logs)."""
    rows = await conn.fetch(
        "SELECT name, size, sha256, rpm FROM staged_files WHERE lease_id = $1 ORDER BY name",
        lease_id,
    )
    return [{**dict(r), "rpm": None if r["rpm"] is None else json.loads(r["rpm"])} for r in rows]


async def stored_files(conn: asyncpg.Connection, lease_id: uuid.UUID) -> list[asyncpg.Record]:
    """What the lease put into Koji storage, as BuildStoredV1 lists it."""
    return await conn.fetch(
        "SELECT name, path, sha256, size, arch FROM stored_files WHERE lease_id = $1 ORDER BY name",
        lease_id,
    )


async def staged_file(
    conn: asyncpg.Connection, lease_id: uuid.UUID, name: str
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT name, size, sha256 FROM staged_files WHERE lease_id = $1 AND name = $2",
        lease_id,
        name,
    )


async def stage_file(
    conn: asyncpg.Connection,
    lease_id: uuid.UUID,
    name: str,
    size: int,
    sha256: str,
    rpm: Mapping[str, Any] | None = None,
) -> asyncpg.Record | None:
    """Record an upload (with its RPM header, if it is one), replacing an earlier one of the
    same name; return that earlier row.

    The row stays locked until the transaction ends, so the caller can move the file in place
    before a parallel upload of the same name gets its turn: row and file end up agreeing.
    """
    previous = await conn.fetchrow(
        "SELECT name, size, sha256 FROM staged_files WHERE lease_id = $1 AND name = $2 FOR UPDATE",
        lease_id,
        name,
    )
    await conn.execute(
        "INSERT INTO staged_files (lease_id, name, size, sha256, rpm)"
        " VALUES ($1, $2, $3, $4, $5::jsonb) ON CONFLICT (lease_id, name) DO UPDATE"
        " SET size = EXCLUDED.size, sha256 = EXCLUDED.sha256, rpm = EXCLUDED.rpm,"
        " uploaded_at = now()",
        lease_id,
        name,
        size,
        sha256,
        json.dumps(rpm) if rpm is not None else None,
    )
    return previous


async def stored_by_siblings(
    conn: asyncpg.Connection, build_id: int, lease_id: uuid.UUID, paths: Iterable[str]
) -> set[str]:
    """Which of `paths` another task of the same build stored (noarch subpackages)."""
    rows = await conn.fetch(
        "SELECT DISTINCT f.path FROM stored_files f JOIN leases l USING (lease_id)"
        " WHERE l.build_id = $1 AND l.lease_id <> $2 AND f.path = ANY($3::text[])",
        build_id,
        lease_id,
        list(paths),
    )
    return {r["path"] for r in rows}


async def record_stored(
    conn: asyncpg.Connection, lease_id: uuid.UUID, results: Iterable[Result]
) -> None:
    await conn.executemany(
        "INSERT INTO stored_files (lease_id, name, path, arch, sha256, size)"
        " VALUES ($1, $2, $3, $4, $5, $6)",
        [(lease_id, r.name, r.path, r.arch, r.sha256, r.size) for r in results],
    )
    await set_state(conn, lease_id, "stored")


async def claim_leases_to_clean(
    conn: asyncpg.Connection, retention: datetime.timedelta, limit: int
) -> list[uuid.UUID]:
    """Leases whose staging folder can go: stored or superseded ones at once, others when stale.

    An open lease of a task not yet accepted stays until `retention`: the verifier reads its
    RPM facts whenever a later result of the task is compared with it.

    SKIP LOCKED: a lease being stored right now is left alone, and replicas share the work.
    """
    rows = await conn.fetch(
        "SELECT lease_id FROM leases WHERE cleaned_at IS NULL"
        " AND (state IN ('stored', 'superseded') OR created_at < now() - $1::interval)"
        " ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED",
        retention,
        limit,
    )
    return [r["lease_id"] for r in rows]


async def mark_cleaned(conn: asyncpg.Connection, lease_ids: list[uuid.UUID]) -> None:
    await conn.execute("DELETE FROM staged_files WHERE lease_id = ANY($1::uuid[])", lease_ids)
    await conn.execute(
        "UPDATE leases SET cleaned_at = now() WHERE lease_id = ANY($1::uuid[])", lease_ids
    )


async def get_source(conn: asyncpg.Connection, sha256: str) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM sources WHERE sha256 = $1", sha256)


async def add_source(
    conn: asyncpg.Connection, sha256: str, name: str, size: int, owner: str
) -> None:
    await conn.execute(
        "INSERT INTO sources (sha256, name, size, owner) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT DO NOTHING",
        sha256,
        name,
        size,
        owner,
    )


async def lease_usage(conn: asyncpg.Connection, lease_id: uuid.UUID, besides: str) -> Usage:
    """The files a lease has staged other than `besides` (which an upload would replace)."""
    row = await conn.fetchrow(
        "SELECT count(*) AS files, coalesce(sum(size), 0)::bigint AS bytes FROM staged_files"
        " WHERE lease_id = $1 AND name <> $2",
        lease_id,
        besides,
    )
    return Usage(row["files"], row["bytes"])


async def owner_source_usage(conn: asyncpg.Connection, owner: str) -> Usage:
    """The sources `owner` stored in the last hour (files) and their bytes in the last day."""
    row = await conn.fetchrow(
        "SELECT count(*) FILTER (WHERE created_at > now() - interval '1 hour') AS files,"
        " coalesce(sum(size), 0)::bigint AS bytes FROM sources"
        " WHERE owner = $1 AND created_at > now() - interval '1 day'",
        owner,
    )
    return Usage(row["files"], row["bytes"])


async def lock(conn: asyncpg.Connection, what: str) -> None:
    """Serialise the transactions that check and use one limit (a lease's, an owner's)."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", what)


async def record_env_manifest(
    conn: asyncpg.Connection, lease_id: uuid.UUID, host: str, manifest: Mapping[str, str]
) -> bool:
    """Keep the first environment manifest the lease's own host reported; False if none set."""
    done = await conn.fetchval(
        "UPDATE leases SET env_manifest = $3::jsonb"
        " WHERE lease_id = $1 AND host = $2 AND env_manifest IS NULL RETURNING true",
        lease_id,
        host,
        json.dumps(dict(manifest)),
    )
    return bool(done)


async def add_koji_import(
    conn: asyncpg.Connection, build_id: int, nvr: str, owner: str, tasks: list[Any]
) -> bool:
    """Record the intent to import a complete build; False if it was recorded already."""
    added = await conn.fetchval(
        "INSERT INTO koji_imports (build_id, nvr, owner, tasks) VALUES ($1, $2, $3, $4::jsonb)"
        " ON CONFLICT DO NOTHING RETURNING true",
        build_id,
        nvr,
        owner,
        json.dumps(tasks),
    )
    return bool(added)


async def claim_koji_import(
    conn: asyncpg.Connection, claim: datetime.timedelta
) -> asyncpg.Record | None:
    """The next due import, its next_try pushed `claim` on so that nobody else takes it."""
    return await conn.fetchrow(
        "UPDATE koji_imports SET attempts = attempts + 1, next_try = now() + $1::interval"
        " WHERE build_id = (SELECT build_id FROM koji_imports"
        "  WHERE state = 'pending' AND next_try <= now()"
        "  ORDER BY next_try LIMIT 1 FOR UPDATE SKIP LOCKED)"
        " RETURNING *",
        claim,
    )


async def koji_import_done(conn: asyncpg.Connection, build_id: int, koji_build_id: int) -> None:
    await conn.execute(
        "UPDATE koji_imports SET state = 'imported', koji_build_id = $2, imported_at = now(),"
        " error = NULL WHERE build_id = $1",
        build_id,
        koji_build_id,
    )


async def koji_import_retry(
    conn: asyncpg.Connection, build_id: int, error: str, pause: float
) -> None:
    await conn.execute(
        "UPDATE koji_imports SET error = $2, next_try = now() + make_interval(secs => $3)"
        " WHERE build_id = $1 AND state = 'pending'",
        build_id,
        error,
        pause,
    )


async def koji_import_failed(conn: asyncpg.Connection, build_id: int, error: str) -> None:
    await conn.execute(
        "UPDATE koji_imports SET state = 'failed', error = $2 WHERE build_id = $1",
        build_id,
        error,
    )


async def get_koji_import(conn: asyncpg.Connection, build_id: int) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM koji_imports WHERE build_id = $1", build_id)


async def build_stored_files(conn: asyncpg.Connection, build_id: int) -> list[asyncpg.Record]:
    """Every file the build's stored leases put into Koji storage, with its task and host."""
    return await conn.fetch(
        "SELECT f.name, f.path, f.sha256, f.size, f.arch, l.task_id, l.arch AS task_arch,"
        " l.host, l.env_manifest, l.srpm_sha256, l.created_at AS leased_at"
        " FROM stored_files f JOIN leases l USING (lease_id)"
        " WHERE l.build_id = $1 AND l.state = 'stored' ORDER BY l.task_id, f.name",
        build_id,
    )
