"""Transactional outbox: a state change and the messages it announces commit together.

A handler writes its messages into the `outbox` table in its own transaction, already encoded
(routing key, body bytes, headers with the trace context, message id): they are validated once,
there. A relay claims committed rows (`FOR UPDATE SKIP LOCKED`, so several relays, one per
service process, never publish a row twice while it is claimed), publishes a claimed batch with
its publisher confirms pipelined, and marks sent the rows whose confirm arrived, in the claim's
transaction. A crash between the commit and the publish only delays a message; a crash after
the publish and before the mark sends it again with the same message id, which idempotent
consumers ignore.

Order. Each row has an `aggregate` (what the message is about: its task, else its build, else
its host). A relay publishes a claim in id order on one channel, and never publishes a row
while an older unsent row of the same aggregate is claimed by another relay (or another round
of its own): that row waits for the next round. So the messages about one task, one build or
one host go out in the order they were written (for one aggregate, writers hold its row lock,
so that is also commit order). Messages about different aggregates, or with none (a build
request), may overtake one another across relays and rounds. Should the broker refuse one
message of a batch, later messages of its aggregate in that batch may already be out: the
refused one follows them on the next round.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Sequence
from typing import Any

import asyncpg
import pika
from fedora_messaging import message as fm

from . import telemetry
from .bus import Bus, Wire, encode
from .errors import describe, is_unavailable

log = logging.getLogger(__name__)

# Which body field names a message's aggregate, most specific first.
AGGREGATE_FIELDS = ("task_id", "build_id", "host")

_INSERT = (
    "INSERT INTO outbox (routing_key, body, headers, message_id, priority, aggregate)"
    " SELECT * FROM unnest($1::text[], $2::bytea[], $3::jsonb[], $4::text[], $5::int[],"
    " $6::text[])"
)

# Claim the oldest unsent rows nobody else holds. A row is `blocked` when an older unsent row
# of its aggregate is outside this claim (someone else is publishing it right now): it stays
# unsent for a later round.
_CLAIM = """
WITH claimed AS (
    SELECT id, aggregate FROM outbox WHERE sent_at IS NULL
    ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED
)
SELECT o.id, o.routing_key, o.body, o.headers::text AS headers, o.message_id, o.priority,
       o.message::text AS message,
       c.aggregate IS NOT NULL AND EXISTS (
           SELECT 1 FROM outbox p
           WHERE p.aggregate = c.aggregate AND p.sent_at IS NULL AND p.id < c.id
             AND p.id NOT IN (SELECT id FROM claimed)
       ) AS blocked
FROM claimed c JOIN outbox o USING (id)
ORDER BY o.id
"""
# How often, and how long apart, a flush looks again at rows blocked by another relay.
BLOCKED_RETRIES = 40
BLOCKED_PAUSE = 0.05


def aggregate_of(msg: fm.Message) -> str | None:
    body = msg.body if isinstance(msg.body, dict) else {}
    for field in AGGREGATE_FIELDS:
        if field in body:
            return f"{field}:{body[field]}"
    return None


async def add(conn: asyncpg.Connection, msg: fm.Message) -> None:
    """Queue `msg` for publication when the caller's transaction commits."""
    await add_many(conn, [msg])


# Each build's trace: the first context that wrote a message about it here. The CTE's insert
# is invisible to the SELECT (one snapshot), which so returns only contexts recorded before.
_BUILD_TRACES = """
WITH recorded AS (
    INSERT INTO trace_contexts (aggregate, traceparent)
    SELECT a, $2::text FROM unnest($1::text[]) AS a WHERE $2::text IS NOT NULL
    ON CONFLICT DO NOTHING
)
SELECT aggregate, traceparent FROM trace_contexts WHERE aggregate = ANY($1::text[])
"""


def build_of(msg: fm.Message) -> str | None:
    body = msg.body if isinstance(msg.body, dict) else {}
    return f"build_id:{body['build_id']}" if "build_id" in body else None


async def build_traces(conn: asyncpg.Connection, msgs: Sequence[fm.Message]) -> dict[str, str]:
    """The trace of each build `msgs` speak of, recording the current one for new builds."""
    builds = sorted({b for b in map(build_of, msgs) if b})
    if not builds:
        return {}
    rows = await conn.fetch(_BUILD_TRACES, builds, telemetry.current_traceparent())
    return {r["aggregate"]: r["traceparent"] for r in rows}


async def add_many(conn: asyncpg.Connection, msgs: Sequence[fm.Message]) -> None:
    """Queue `msgs`, in order, with one statement; raises ValidationError before writing any.

    Each row's headers carry the trace context of a producer span: a child of the current
    span, or of the build's own trace when the current one is another (see telemetry.py).
    """
    traces = await build_traces(conn, msgs)
    wires = []
    for msg in msgs:
        build = build_of(msg)
        span = telemetry.start_publish_span(msg.topic, traces.get(build) if build else None)
        try:
            wire = encode(msg, telemetry.traceparent_of(span))
        except BaseException as exc:
            telemetry.end_span(span, exc)
            raise
        span.end()
        wires.append(wire)
    if not wires:
        return
    await conn.execute(
        _INSERT,
        [w.routing_key for w in wires],
        [w.body for w in wires],
        [json.dumps(w.headers) for w in wires],
        [w.message_id for w in wires],
        [w.priority for w in wires],
        [aggregate_of(m) for m in msgs],
    )


def row_wire(row: Any) -> Wire:
    """The wire form of an outbox row (rows written before the wire columns are re-encoded)."""
    if row["body"] is None:
        return encode(fm.load_message(json.loads(row["message"])))
    return Wire(
        row["routing_key"],
        row["body"],
        json.loads(row["headers"]),
        row["message_id"],
        row["priority"],
    )


def wire_to_message(wire: Wire) -> fm.Message:
    """Decode a wire form as a consumer would (for tests and tools, not the relay)."""
    props = pika.BasicProperties(
        content_type="application/json",
        content_encoding="utf-8",
        headers=dict(wire.headers),
        message_id=wire.message_id,
        priority=wire.priority,
        delivery_mode=2,
    )
    return fm.get_message(wire.routing_key, props, wire.body)


class Relay:
    """Publishes committed outbox rows; safe to run in several processes at once."""

    def __init__(
        self, pool: asyncpg.Pool, bus: Bus, *, batch: int = 100, concurrency: int = 1
    ) -> None:
        self.pool = pool
        self.bus = bus
        self.batch = batch
        self.concurrency = max(1, concurrency)
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def flush(self) -> int:
        """Publish everything committed so far; returns how many messages were confirmed.

        Raises the first publish error after marking what was confirmed.
        """
        sent = 0
        blocked_rounds = 0
        while True:
            rounds = await asyncio.gather(
                *(self._round() for _ in range(self.concurrency)), return_exceptions=True
            )
            errors = [r for r in rounds if isinstance(r, BaseException)]
            done = [r for r in rounds if not isinstance(r, BaseException)]
            sent += sum(confirmed for confirmed, _, _ in done)
            if errors:
                raise errors[0]
            if any(claimed == self.batch for _, claimed, _ in done):
                continue
            if not any(blocked for _, _, blocked in done):
                return sent
            # Rows wait for another relay's older rows of their aggregate: look again soon.
            blocked_rounds += 1
            if blocked_rounds > BLOCKED_RETRIES:
                return sent  # the periodic flush picks them up
            await asyncio.sleep(BLOCKED_PAUSE)

    async def _round(self) -> tuple[int, int, int]:
        """Claim, publish and mark one batch: (confirmed, claimed, blocked)."""
        async with self.pool.acquire() as conn, conn.transaction():
            claimed = await conn.fetch(_CLAIM, self.batch)
            rows = [r for r in claimed if not r["blocked"]]
            if not rows:
                return 0, len(claimed), len(claimed)
            wires = [row_wire(r) for r in rows]
            # One span for the batch; each message keeps its producer's context (telemetry).
            span = telemetry.start_relay_span([w.headers for w in wires])
            results = await self.bus.publish_encoded(wires)
            failed = next((e for e in results if e is not None), None)
            telemetry.end_span(span, failed)
            telemetry.record_sent_many(
                (w.routing_key, w.body)
                for w, error in zip(wires, results, strict=True)
                if error is None
            )
            confirmed = [r["id"] for r, error in zip(rows, results, strict=True) if error is None]
            if confirmed:
                await conn.execute(
                    "UPDATE outbox SET sent_at = now() WHERE id = ANY($1::bigint[])", confirmed
                )
        if failed is not None:
            log.warning(
                "%d of %d outbox messages not confirmed", len(rows) - len(confirmed), len(rows)
            )
            raise failed
        return len(confirmed), len(claimed), len(claimed) - len(rows)

    async def run(self, interval: float = 2.0) -> None:
        """Flush whenever woken, and every `interval` seconds to pick up anything missed."""
        while True:
            # Not asyncio.wait_for: on Python 3.11 it swallows a cancellation that arrives as
            # the wait ends, which under load (a wake per transaction) left the relay running
            # after shutdown cancelled it, and the service never stopped.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.flush()
            except Exception as exc:
                # The database or the broker being down (asyncpg's InterfaceError included,
                # which is no PostgresError) is expected: no traceback every interval.
                if is_unavailable(exc):
                    log.warning("outbox flush failed, will retry: %s", describe(exc))
                else:
                    log.exception("outbox flush failed, will retry")
