"""Owner accounts (packagers and tools that submit builds) and their tokens.

An owner's token is shown once, when it is made; only its SHA-256 is stored. The same token is
the owner's broker password, so making or revoking an owner here is where the caller also
makes or deletes the owner's broker user.
"""

from __future__ import annotations

import re

import asyncpg
from skyline_messages.base import USER

from services.common.errors import SkylineError
from services.common.tokens import new_token, token_sha256

OWNER_NAME = re.compile(USER["pattern"])


class OwnerExists(SkylineError):
    """The name is taken, by a current or a revoked owner (names are never reused)."""


async def create(conn: asyncpg.Connection, name: str) -> str:
    """Make owner `name` and return its new token; raises OwnerExists.

    The broker user (same name, this token as password) is created by the caller, in the
    same transaction's scope, so a failure there leaves no owner behind.
    """
    token = new_token()
    added = await conn.fetchval(
        "INSERT INTO owners (name, token_sha256) VALUES ($1, $2)"
        " ON CONFLICT (name) DO NOTHING RETURNING true",
        name,
        token_sha256(token),
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
