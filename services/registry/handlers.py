"""Heartbeats: authenticated by the host's enrolled key, turned into the host's status."""

from __future__ import annotations

import datetime
import logging
from collections.abc import Sequence
from typing import Any

from skyline_messages import HostHeartbeatV1

from services.common.batch import idempotent
from services.common.service import Context, Runtime

from . import store, verifying

log = logging.getLogger(__name__)
MAX_CLOCK_SKEW = datetime.timedelta(minutes=10)


async def on_heartbeat(msg: HostHeartbeatV1, ctx: Context) -> None:
    await on_heartbeats([msg], ctx)


@idempotent
async def on_heartbeats(msgs: Sequence[HostHeartbeatV1], ctx: Context) -> None:
    """Authenticate heartbeats, record the newest per host, publish statuses that changed.

    Each heartbeat gets the checks it always had (enrolled host, signature, readable time, clock
    skew, replay), in delivery order; the signatures of the batch are checked together
    (verifying.py); the database sees two statements for the whole batch.
    Idempotent without processed-message ids: a heartbeat already applied is signed no later
    than its host's `last_signed_at`, so the replay check drops it when it is redelivered.
    """
    known = await store.hosts_for_heartbeats(ctx.conn, sorted({m.host for m in msgs}))
    newest: dict[str, datetime.datetime | None] = {h: r["last_signed_at"] for h, r in known.items()}
    enrolled = [m for m in msgs if _enrolled(m, known.get(m.host))]
    signed = await verifying.verify(
        [(m.body, known[m.host]["public_key"]) for m in enrolled],
        ctx.config.registry.verify_processes,
    )
    beats: dict[str, store.Beat] = {}
    for msg, ok in zip(enrolled, signed, strict=True):
        host = msg.host
        signed_at = _accept(msg, ok)
        if signed_at is None:
            continue
        last = newest[host]
        if last is not None and signed_at <= last:
            log.warning("stale or replayed heartbeat from %r dropped", host)
            continue
        newest[host] = signed_at
        beats[host] = (host, msg.free_slots, msg.running, signed_at, msg.sandbox)
    if not beats:
        return
    updated = await store.record_heartbeats(ctx.conn, list(beats.values()))
    if len(updated) < len(beats):
        log.warning("%d stale or replayed heartbeat(s) dropped", len(beats) - len(updated))
    refresh = ctx.config.registry.status_refresh
    due = [store.status_message(row) for row in updated if store.status_due(row, refresh)]
    if due:
        await ctx.publish_many(due)
        await store.record_published(ctx.conn, due)


def _enrolled(msg: HostHeartbeatV1, row: Any) -> bool:
    if row is None:
        # Heartbeats are high volume and transient: an unknown host is logged, not kept.
        log.error("heartbeat from unknown host %r dropped: enrol it first", msg.host)
        return False
    return True


def _accept(msg: HostHeartbeatV1, signed: bool) -> datetime.datetime | None:
    """The heartbeat's signing time if it passes every check but the replay one, else None
    (`signed`: its signature is its enrolled key's)."""
    if not signed:
        log.error("heartbeat for host %r with a bad signature dropped", msg.host)
        return None
    signed_at = _parse_signed_at(msg.signed_at)
    if signed_at is None:
        # The schema does not check formats: a signed but unreadable (or zone-less) time would
        # crash this handler on every redelivery. It can never become valid: drop it.
        log.error(
            "heartbeat from %r with unreadable signed_at %r dropped",
            msg.host,
            msg.signed_at,
        )
        return None
    if signed_at - datetime.datetime.now(datetime.UTC) > MAX_CLOCK_SKEW:
        log.error("heartbeat from %r signed in the future (%s) dropped", msg.host, signed_at)
        return None
    return signed_at


def _parse_signed_at(value: str) -> datetime.datetime | None:
    """An aware datetime, or None when `value` is not an ISO 8601 time with a UTC offset."""
    try:
        parsed = datetime.datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return None
    return parsed if parsed.utcoffset() is not None else None


async def mark_silent_hosts_offline(runtime: Runtime) -> None:
    async with runtime.transaction() as ctx:
        statuses = []
        for row in await store.mark_offline(ctx.conn, runtime.config.registry.heartbeat_timeout):
            log.info("host %s went silent: offline", row["host"])
            statuses.append(store.status_message(row))
        await ctx.publish_many(statuses)
        await store.record_published(ctx.conn, statuses)
