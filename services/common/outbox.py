"""Transactional outbox: a state change and the messages it announces commit together.

A handler writes its messages into the `outbox` table in its own transaction; a relay publishes
committed rows (with publisher confirms) and marks them sent. A crash between the commit and
the publish only delays the message; a crash between the publish and the mark sends it again
with the same message id, which idempotent consumers ignore.
"""

from __future__ import annotations

import asyncio
import json
import logging

import asyncpg
from fedora_messaging import message as fm

from . import telemetry
from .bus import Bus
from .errors import describe, is_unavailable

log = logging.getLogger(__name__)


async def add(conn: asyncpg.Connection, msg: fm.Message) -> None:
    """Queue `msg` for publication when the caller's transaction commits."""
    telemetry.inject(msg._headers)
    serialized = fm.dumps(msg)  # validates; keeps id, headers and trace context
    await conn.execute("INSERT INTO outbox (message) VALUES ($1::jsonb)", serialized)


class Relay:
    """Publishes committed outbox rows; safe to run in several replicas (SKIP LOCKED)."""

    def __init__(self, pool: asyncpg.Pool, bus: Bus, *, batch: int = 100) -> None:
        self.pool = pool
        self.bus = bus
        self.batch = batch
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def flush(self) -> int:
        """Publish everything committed so far; returns how many messages were sent."""
        sent = 0
        while True:
            async with self.pool.acquire() as conn, conn.transaction():
                rows = await conn.fetch(
                    "SELECT id, message FROM outbox WHERE sent_at IS NULL"
                    " ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
                    self.batch,
                )
                for row in rows:
                    msg = fm.load_message(json.loads(row["message"]))
                    await self.bus.publish(msg)
                if rows:
                    await conn.execute(
                        "UPDATE outbox SET sent_at = now() WHERE id = ANY($1::bigint[])",
                        [r["id"] for r in rows],
                    )
            sent += len(rows)
            if len(rows) < self.batch:
                return sent

    async def run(self, interval: float = 2.0) -> None:
        """Flush whenever woken, and every `interval` seconds to pick up anything missed."""
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), interval)
            except TimeoutError:
                pass
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
