"""Quality of service from the bus: leases, finishes and verdicts update each host's counters
and score (qos.py); a score that moved is published in the host's status.

- `task.leased` (the dispatcher) and `task.finished` (the host) are the two halves of a build:
  whichever arrives second counts it. A finish only counts for a lease the dispatcher made to
  that host, and its duration is the wall time from the lease (the dispatcher's sent-at) to
  the registry's receipt of the finish, so a host cannot report itself fast.
- `task.verified` (agreeing: valid; odd ones out: invalid) and `task.mismatch` (invalid, when
  the reason is the host's doing) make the valid-result rate.
Redeliveries are skipped by the bus's processed-message ids, so nothing counts twice.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import math
from typing import Any

import asyncpg
from skyline_messages import TaskFinishedV1, TaskLeasedV1, TaskMismatchV1, TaskVerifiedV1

from services.common.bus import sent_at
from services.common.errors import SignatureError
from services.common.service import Context, Runtime
from services.common.signing import verify_body

from . import qos, qos_store, store

log = logging.getLogger(__name__)

# Mismatch reasons that say nothing about the host: the policy found no agreement among
# several hosts, or the host is not enrolled at all.
NOT_THE_HOSTS_DOING = frozenset({"no_agreement", "unknown_host"})
REFRESH_BATCH = 500  # hosts whose score a periodic run recomputes at most


async def on_task_leased(msg: TaskLeasedV1, ctx: Context) -> None:
    if await store.get_host(ctx.conn, msg.host) is None:
        return  # the dispatcher leased to a host this registry does not know: nothing to rate
    leased_at = sent_at(msg) or datetime.datetime.now(datetime.UTC)
    row = await qos_store.record_lease(ctx.conn, msg, leased_at)
    if row is None:
        log.warning("lease %s already known for another host: not counted", msg.lease_id)
        return
    await _count_if_complete(ctx, row)


async def on_task_finished(msg: TaskFinishedV1, ctx: Context) -> None:
    host = await store.get_host(ctx.conn, msg.host)
    if host is None:
        return
    try:  # the broker vouches for the sender; the signature makes sure it is the attestation
        verify_body(msg.body, host["public_key"])
    except SignatureError:
        log.error("task.finished of lease %s with a bad signature: not counted", msg.lease_id)
        return
    row = await qos_store.record_finish(ctx.conn, msg.lease_id, msg.host, msg.status)
    if row is None:
        log.warning("lease %s finished twice or by another host: not counted", msg.lease_id)
        return
    await _count_if_complete(ctx, row)


async def _count_if_complete(ctx: Context, row: asyncpg.Record) -> None:
    if row["leased_at"] is None or row["finished_at"] is None or row["counted"]:
        return
    config = ctx.config.registry.qos
    host = row["host"]
    duration = max(0.0, (row["finished_at"] - row["leased_at"]).total_seconds())
    succeeded = row["status"] == "succeeded"
    c = await qos_store.lock_counters(ctx.conn, host)
    c = dataclasses.replace(c, finished=c.finished + 1, succeeded=c.succeeded + succeeded)
    if succeeded:
        ref = await qos_store.reference(
            ctx.conn, row["package"], row["arch"], host, config.reference_builds
        )
        sample = qos.speed_sample(duration, ref)
        if sample is not None:
            c = qos.add_speed_sample(c, sample, config)
    await qos_store.save_counters(ctx.conn, host, c)
    await qos_store.mark_counted(ctx.conn, row["lease_id"], duration)
    await refresh(ctx, host)


async def on_verdict(msg: TaskVerifiedV1, ctx: Context) -> list[str]:
    """Agreeing hosts gave a valid result; the odd ones out an invalid one. Returns the hosts
    whose score was recomputed: the caller publishes their statuses (`publish_changed`) once
    their trust is graded too, so one status carries both."""
    verdicts: dict[str, tuple[str, str, bool]] = {}
    for odd in msg.odd_ones_out:
        verdicts.setdefault(odd["host"], (odd["lease_id"], "odd_one_out", False))
    for agreed in msg.agreeing:
        verdicts.setdefault(agreed["host"], (agreed["lease_id"], "agreed", True))
    for host in sorted(verdicts):  # the order trust grading locks rows in
        lease_id, verdict, valid = verdicts[host]
        await _record_validity(ctx, host, lease_id, verdict, valid, publish=False)
    return sorted(verdicts)


async def on_task_mismatch(msg: TaskMismatchV1, ctx: Context) -> None:
    if msg.reason in NOT_THE_HOSTS_DOING:
        return
    await _record_validity(ctx, msg.host, msg.lease_id, f"mismatch:{msg.reason}", False)


async def _record_validity(
    ctx: Context, host: str, lease_id: str, verdict: str, valid: bool, *, publish: bool = True
) -> None:
    if await store.get_host(ctx.conn, host) is None:
        return
    c = await qos_store.lock_counters(ctx.conn, host)
    c = dataclasses.replace(c, valid=c.valid + valid, invalid=c.invalid + (not valid))
    await qos_store.save_counters(ctx.conn, host, c)
    await qos_store.set_verdict(ctx.conn, lease_id, verdict)
    await refresh(ctx, host, publish=publish)


async def compute(conn: asyncpg.Connection, host: asyncpg.Record, config: Any) -> dict[str, Any]:
    """The host's QoS figures now, with what they were computed from."""
    c = await qos_store.counters(conn, host["host"])
    up, now = await qos_store.uptime(conn, host, config.window_seconds)
    figures = qos.compute(c, up, config)
    return {
        "qos": figures.view(),
        "counters": dataclasses.asdict(c),
        "uptime": dataclasses.asdict(up),
        "at": now.isoformat(),
    }


async def refresh(ctx: Context, host: str, *, publish: bool = True) -> None:
    """Recompute the host's score, and publish its status if that changed it."""
    row = await store.get_host(ctx.conn, host)
    if row is None:
        return
    config = ctx.config.registry.qos
    c = await qos_store.counters(ctx.conn, host)
    up, _ = await qos_store.uptime(ctx.conn, row, config.window_seconds)
    figures = qos.compute(c, up, config)
    # No timed build yet: no speed to tell (the dispatcher takes the farm's pace).
    speed = figures.speed_factor if c.speed_samples else None
    await qos_store.save_score(ctx.conn, host, figures.score, speed)
    if publish:
        await publish_changed(ctx, [host])


async def publish_changed(ctx: Context, hosts: list[str]) -> None:
    """The statuses of `hosts` that differ from the last one published (store.status_due).

    Only a change, and only of a host whose status was published before: a host never seen
    gets its first status from its first heartbeat, and the periodic refresh of statuses is
    the heartbeats' business."""
    due = []
    for host in hosts:
        row = await store.get_host(ctx.conn, host)
        if row is None or row["revoked_at"] is not None or row["status_published"] is None:
            continue
        if store.status_due(row, math.inf):
            due.append(store.status_message(row))
    if due:
        await ctx.publish_many(due)
        await store.record_published(ctx.conn, due)


async def refresh_stale(runtime: Runtime) -> None:
    """Periodic: scores older than [registry.qos] refresh_seconds, as availability drifts."""
    older_than = runtime.config.registry.qos.refresh_seconds
    async with runtime.pool.acquire() as conn:
        hosts = await qos_store.stale_hosts(conn, older_than, REFRESH_BATCH)
    for host in hosts:
        async with runtime.transaction() as ctx:
            await refresh(ctx, host)
