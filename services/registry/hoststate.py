"""A host's state as an admin or the trust policy sets it: quarantine also cuts it off."""

from __future__ import annotations

import asyncpg

from services.common.service import Context

from . import broker, store

QUARANTINED = "quarantined"


async def set_state(
    ctx: Context, host: str, state: str, reason: str | None = None
) -> asyncpg.Record | None:
    """Set `host`'s state in the current transaction (None: no such host); `reason` goes in
    its availability history (default: the state's name).

    Quarantine deletes the host's broker user (its connections closed), so it can neither
    publish nor read its leases; that happens inside the transaction, so a host is never
    marked quarantined but still connected. Raises Retry when the broker's API is down.
    """
    await store.state_reason(ctx.conn, reason or state)
    row = await store.set_state(ctx.conn, host, state)
    if row is None:
        return None
    admin = ctx.runtime.state.get("broker_admin")
    if state == QUARANTINED and admin is not None:
        await broker.revoke_credentials(admin, host)
    return row
