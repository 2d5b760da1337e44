"""The farm-wide throttle as the dispatcher follows it: the verifier decides (its throttle.py)
and announces; the dispatcher keeps the last announcement (store.throttle reads it) and
matches by it (matching.Throttle).

Engaged: non-core hosts get no new leases (leases already given run on) and queued tasks say
why they wait. Released: every host with free slots pulls again. Throttled builds wait for
core hosts; they are not sent to a central Koji. The bus accepted the message only from the
verifier's broker user (principals.py), and an announcement older than the one kept (by its
sent-at) changes nothing, so a late redelivery cannot undo a newer change.
"""

from __future__ import annotations

import datetime
import logging

from skyline_messages import ThrottleEngagedV1, ThrottleReleasedV1

from services.common.bus import sent_at
from services.common.service import Context

from . import handlers, store

log = logging.getLogger(__name__)
EXPLAIN_QUEUED = 1000  # queued tasks whose waiting reason a change updates at once, at most


async def _keep(
    ctx: Context, msg: ThrottleEngagedV1 | ThrottleReleasedV1, *, engaged: bool
) -> bool:
    """Record the announcement unless a newer one is kept; whether it was recorded."""
    at = sent_at(msg) or datetime.datetime.now(datetime.UTC)
    kept = await ctx.conn.fetchval(
        "UPDATE throttle SET engaged = $1, bad_rate = $2, results = $3, reason = $4,"
        " changed_at = $5 WHERE id = 1 AND (changed_at IS NULL OR changed_at <= $5)"
        " RETURNING true",
        engaged,
        msg.bad_rate,
        msg.results,
        msg.reason[:500],
        at,
    )
    if not kept:
        log.info("ignoring an older throttle announcement (%s, sent %s)", msg.topic, at)
    return bool(kept)


async def on_throttle_engaged(msg: ThrottleEngagedV1, ctx: Context) -> None:
    if not await _keep(ctx, msg, engaged=True):
        return
    log.warning("throttle engaged: only core hosts get new leases (%s)", msg.reason)
    await explain_queued(ctx)


async def on_throttle_released(msg: ThrottleReleasedV1, ctx: Context) -> None:
    if not await _keep(ctx, msg, engaged=False):
        return
    log.warning("throttle released: every host gets work again (%s)", msg.reason)
    await handlers.schedule(ctx)
    await explain_queued(ctx)


async def explain_queued(ctx: Context) -> None:
    """Say again why queued tasks wait, now that the throttle changed (the first in line
    first: the rest are explained as they are scheduled)."""
    ids = await ctx.conn.fetch(
        "SELECT id FROM tasks WHERE state = 'queued' ORDER BY priority DESC, id LIMIT $1",
        EXPLAIN_QUEUED,
    )
    await handlers.explain(ctx, await store.queued_tasks(ctx.conn, [r["id"] for r in ids]))
