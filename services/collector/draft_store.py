"""The collector's records of Koji draft builds (table koji_drafts, migration 0006)."""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg


async def add_waiting(
    conn: asyncpg.Connection,
    build_id: int,
    nvr: str,
    owner: str,
    task_id: int,
    hosts: Sequence[str],
) -> bool:
    """Note that the verifier asked a replica for `task_id` with results from `hosts`, and make
    the build's draft due; False if the task was noted already or the draft is past choosing."""
    waiting = json.dumps({str(task_id): sorted(hosts)})
    added = await conn.fetchval(
        "INSERT INTO koji_drafts (build_id, nvr, owner, waiting) VALUES ($1, $2, $3, $4::jsonb)"
        " ON CONFLICT (build_id) DO UPDATE"
        " SET waiting = koji_drafts.waiting || EXCLUDED.waiting, next_try = now()"
        " WHERE koji_drafts.state = 'pending' AND koji_drafts.leases IS NULL"
        "  AND NOT koji_drafts.waiting ? $5"
        " RETURNING true",
        build_id,
        nvr,
        owner,
        waiting,
        str(task_id),
    )
    return bool(added)


async def build_info(conn: asyncpg.Connection, build_id: int) -> asyncpg.Record | None:
    """The build's owner and whether it is a scratch build, from its first lease here."""
    return await conn.fetchrow(
        "SELECT owner, scratch FROM leases WHERE build_id = $1 ORDER BY created_at LIMIT 1",
        build_id,
    )


async def claim(conn: asyncpg.Connection, claim: datetime.timedelta) -> asyncpg.Record | None:
    """The next due draft, its next_try pushed `claim` on so that nobody else takes it."""
    return await conn.fetchrow(
        "UPDATE koji_drafts SET attempts = attempts + 1, next_try = now() + $1::interval"
        " WHERE build_id = (SELECT build_id FROM koji_drafts"
        "  WHERE state = 'pending' AND next_try <= now()"
        "  ORDER BY next_try LIMIT 1 FOR UPDATE SKIP LOCKED)"
        " RETURNING *",
        claim,
    )


async def get(conn: asyncpg.Connection, build_id: int) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM koji_drafts WHERE build_id = $1", build_id)


async def build_leases(conn: asyncpg.Connection, build_id: int) -> list[asyncpg.Record]:
    """Every lease of the build, oldest first, with whether its host attested a result."""
    return await conn.fetch(
        "SELECT lease_id, task_id, host, arch, state, srpm_sha256, env_manifest,"
        " env_manifest IS NOT NULL AS finished, cleaned_at IS NOT NULL AS cleaned,"
        " created_at AS leased_at"
        " FROM leases WHERE build_id = $1 ORDER BY created_at, lease_id",
        build_id,
    )


async def staged_files(conn: asyncpg.Connection, lease_ids: Sequence[Any]) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT lease_id, name, size, sha256 FROM staged_files"
        " WHERE lease_id = ANY($1::uuid[]) ORDER BY lease_id, name",
        list(lease_ids),
    )


async def stored_files(conn: asyncpg.Connection, lease_ids: Sequence[Any]) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT lease_id, name, path, sha256, size, arch FROM stored_files"
        " WHERE lease_id = ANY($1::uuid[]) ORDER BY lease_id, name",
        list(lease_ids),
    )


async def set_candidate(
    conn: asyncpg.Connection, build_id: int, leases: Mapping[int, Any], files: Mapping[str, str]
) -> bool:
    """Record the draft's candidate before it is imported; False if one was recorded already."""
    done = await conn.fetchval(
        "UPDATE koji_drafts SET leases = $2::jsonb, files = $3::jsonb"
        " WHERE build_id = $1 AND leases IS NULL RETURNING true",
        build_id,
        json.dumps({str(t): str(lease) for t, lease in leases.items()}),
        json.dumps(dict(files)),
    )
    return bool(done)


async def imported(conn: asyncpg.Connection, build_id: int, koji_build_id: int) -> None:
    await conn.execute(
        "UPDATE koji_drafts SET state = 'imported', koji_build_id = $2, imported_at = now(),"
        " error = NULL WHERE build_id = $1 AND state = 'pending'",
        build_id,
        koji_build_id,
    )


async def retry(conn: asyncpg.Connection, build_id: int, error: str, pause: float) -> None:
    await conn.execute(
        "UPDATE koji_drafts SET error = $2, next_try = now() + make_interval(secs => $3)"
        " WHERE build_id = $1 AND state = 'pending'",
        build_id,
        error,
        pause,
    )


async def settle(
    conn: asyncpg.Connection,
    build_id: int,
    state: str,
    error: str | None = None,
    koji_build_id: int | None = None,
) -> None:
    """A draft's end: promoted, rejected or skipped (never to be imported or promoted)."""
    await conn.execute(
        "UPDATE koji_drafts SET state = $2, error = COALESCE($3, error),"
        " koji_build_id = COALESCE($4, koji_build_id), settled_at = now()"
        " WHERE build_id = $1 AND state IN ('pending', 'imported')",
        build_id,
        state,
        error,
        koji_build_id,
    )
