"""Owner accounts (packagers and tools that submit builds) and their tokens.

An owner's token is shown once, when it is made; only its SHA-256 is stored. The same token is
the owner's broker password, so making or revoking an owner here is where the caller also
makes or deletes the owner's broker user.
"""

from __future__ import annotations

import re
from typing import Any

import asyncpg
from skyline_messages.base import USER

from services.common.errors import SkylineError
from services.common.tokens import new_token, token_sha256

from .standing import Standing, StandingConfig, host_limit, standing

OWNER_NAME = re.compile(USER["pattern"])


class OwnerExists(SkylineError):
    """The name is taken, by a current or a revoked owner (names are never reused)."""


async def create(
    conn: asyncpg.Connection,
    name: str,
    *,
    sponsor: str | None = None,
    base: Standing = Standing.GOOD,
    max_hosts: int | None = None,
) -> str:
    """Make owner `name` and return its new token; raises OwnerExists.

    The broker user (same name, this token as password) is created by the caller, in the
    same transaction's scope, so a failure there leaves no owner behind.
    """
    token = new_token()
    added = await conn.fetchval(
        "INSERT INTO owners (name, token_sha256, sponsor, base_standing, max_hosts)"
        " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO NOTHING RETURNING true",
        name,
        token_sha256(token),
        sponsor,
        str(base),
        max_hosts,
    )
    if not added:
        raise OwnerExists(name)
    return token


async def revoke(conn: asyncpg.Connection, name: str) -> asyncpg.Record | None:
    """Revoke owner `name` (again is a no-op); None if there is none.

    The broker user is deleted by the caller.
    """
    return await conn.fetchrow(
        "UPDATE owners SET revoked_at = coalesce(revoked_at, now()) WHERE name = $1 RETURNING *",
        name,
    )


async def authenticate(conn: asyncpg.Connection, token: str) -> str | None:
    """The name of the current owner holding `token`, or None.

    Looked up by digest: the comparison never sees the token, so timing tells nothing about it.
    """
    return await conn.fetchval(
        "SELECT name FROM owners WHERE token_sha256 = $1 AND revoked_at IS NULL",
        token_sha256(token),
    )


# A current owner with its fraud counts: its own, and those of the owners it sponsored.
_RECORD = (
    "SELECT o.*,"
    " (SELECT count(*) FROM owner_frauds f WHERE f.owner = o.name) AS own_frauds,"
    " (SELECT count(*) FROM owner_frauds f JOIN owners s ON s.name = f.owner"
    "  WHERE s.sponsor = o.name) AS sponsored_frauds"
    " FROM owners o"
)


async def get(conn: asyncpg.Connection, name: str) -> asyncpg.Record | None:
    """Owner `name` (current or revoked) with its fraud counts, or None."""
    return await conn.fetchrow(_RECORD + " WHERE o.name = $1", name)


async def all_owners(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return await conn.fetch(_RECORD + " ORDER BY o.name")


def standing_of(row: asyncpg.Record, config: StandingConfig) -> Standing:
    return standing(
        Standing(row["base_standing"]), row["own_frauds"], row["sponsored_frauds"], config
    )


def view(row: asyncpg.Record, config: StandingConfig, default_max_hosts: int) -> dict[str, Any]:
    """An owner as the admin API shows it (never its token or the token's digest)."""
    return {
        "name": row["name"],
        "sponsor": row["sponsor"],
        "standing": str(standing_of(row, config)),
        "base_standing": row["base_standing"],
        "own_frauds": row["own_frauds"],
        "sponsored_frauds": row["sponsored_frauds"],
        "max_hosts": host_limit(row["max_hosts"], default_max_hosts),
        "max_hosts_override": row["max_hosts"],
        "created_at": row["created_at"].isoformat(),
        "revoked_at": row["revoked_at"].isoformat() if row["revoked_at"] else None,
    }


async def set_max_hosts(
    conn: asyncpg.Connection, name: str, max_hosts: int | None
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "UPDATE owners SET max_hosts = $2 WHERE name = $1 RETURNING name", name, max_hosts
    )


async def set_base_standing(
    conn: asyncpg.Connection, name: str, base: Standing
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "UPDATE owners SET base_standing = $2 WHERE name = $1 RETURNING name", name, str(base)
    )


async def record_fraud(
    conn: asyncpg.Connection,
    owner: str,
    detail: str,
    recorded_by: str,
    host: str | None = None,
    task_id: str | None = None,
) -> asyncpg.Record:
    return await conn.fetchrow(
        "INSERT INTO owner_frauds (owner, host, task_id, detail, recorded_by)"
        " VALUES ($1, $2, $3, $4, $5) RETURNING *",
        owner,
        host,
        task_id,
        detail,
        recorded_by,
    )


async def frauds(conn: asyncpg.Connection, owner: str) -> list[asyncpg.Record]:
    return await conn.fetch("SELECT * FROM owner_frauds WHERE owner = $1 ORDER BY id", owner)


def fraud_view(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": row["id"],
        "owner": row["owner"],
        "host": row["host"],
        "task_id": row["task_id"],
        "detail": row["detail"],
        "recorded_by": row["recorded_by"],
        "at": row["at"].isoformat(),
    }


async def host_count(conn: asyncpg.Connection, owner: str) -> int:
    """Hosts the owner has enrolled and not had revoked."""
    return await conn.fetchval(
        "SELECT count(*) FROM hosts WHERE owner = $1 AND revoked_at IS NULL", owner
    )


def tree(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Owner views nested under their sponsors (`sponsored`); roots are those nobody
    sponsored. Pure: `rows` are owner views."""
    children: dict[str | None, list[dict[str, Any]]] = {}
    for row in rows:
        children.setdefault(row["sponsor"], []).append(row)

    def node(row: dict[str, Any], seen: frozenset[str]) -> dict[str, Any]:
        if row["name"] in seen:  # sponsors are set once, at creation, so never a cycle
            return {**row, "sponsored": []}
        kids = children.get(row["name"], [])
        return {**row, "sponsored": [node(k, seen | {row["name"]}) for k in kids]}

    return [node(r, frozenset()) for r in children.get(None, [])]
