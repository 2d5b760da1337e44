"""The throttle's records: outcomes counted, the state announced (throttle.py decides).

Everything runs in the caller's transaction: a verdict's outcomes, and the throttle message
they may bring, commit with the verdict and its processed message id, so a redelivered
attestation counts nothing twice. Each evaluation locks the one state row last, so a change
is announced once however many verifiers judge at the same time.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import asyncpg
from fedora_messaging import message as fm
from skyline_messages import ThrottleEngagedV1, ThrottleReleasedV1

from services.common.service import Runtime

from .throttle import Change, Outcome, ThrottleConfig, Window, decide, reason

log = logging.getLogger(__name__)


async def count(
    conn: asyncpg.Connection, outcomes: Mapping[str, Outcome], config: ThrottleConfig
) -> list[fm.Message]:
    """Count outcomes (lease id -> (bad, owner)) and return the throttle message, if any, to
    publish."""
    if not outcomes:
        return []
    await conn.execute(
        "INSERT INTO throttle_outcomes (lease_id, bad, owner)"
        " SELECT * FROM unnest($1::uuid[], $2::boolean[], $3::text[])"
        " ON CONFLICT (lease_id) DO NOTHING",
        list(outcomes),
        [bad for bad, _ in outcomes.values()],
        [owner for _, owner in outcomes.values()],
    )
    return await evaluate(conn, config)


async def evaluate(conn: asyncpg.Connection, config: ThrottleConfig) -> list[fm.Message]:
    engaged = await conn.fetchval("SELECT engaged FROM throttle_state WHERE id = 1 FOR UPDATE")
    await conn.execute(
        "DELETE FROM throttle_outcomes WHERE at < now() - make_interval(secs => $1)"
        " OR seq < (SELECT min(seq) FROM (SELECT seq FROM throttle_outcomes"
        " ORDER BY seq DESC LIMIT $2) newest)",
        config.window_seconds,
        config.window_results,
    )
    row = await conn.fetchrow(
        "SELECT count(*) FILTER (WHERE bad) AS bad, count(*) AS total,"
        " count(DISTINCT owner) FILTER (WHERE bad) AS bad_owners FROM throttle_outcomes"
    )
    window = Window(bad=row["bad"], total=row["total"], bad_owners=row["bad_owners"])
    change = decide(bool(engaged), window, config)
    if change is None:
        return []
    why = reason(change, window, config)
    await conn.execute(
        "UPDATE throttle_state SET engaged = $1, bad_rate = $2, results = $3, reason = $4,"
        " changed_at = now() WHERE id = 1",
        change == Change.ENGAGE,
        window.rate,
        window.total,
        why,
    )
    body = {
        "bad_rate": round(window.rate, 4),
        "window_seconds": config.window_seconds,
        "results": window.total,
        "reason": why,
    }
    if change == Change.ENGAGE:
        log.warning("engaging the throttle: %s", why)
        return [ThrottleEngagedV1(body={**body, "threshold": config.engage_rate})]
    log.warning("releasing the throttle: %s", why)
    return [ThrottleReleasedV1(body={**body, "threshold": config.release_rate})]


async def reevaluate(runtime: Runtime) -> None:
    """The periodic check: results leave the window with time, not only with new ones."""
    async with runtime.transaction() as ctx:
        await ctx.publish_many(await evaluate(ctx.conn, ctx.config.verifier.throttle))
