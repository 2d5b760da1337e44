"""Retention: the plumbing tables of every service stay small.

Processed-message ids are kept for `bus.processed_retention_hours` (longer than any
redelivery can take, so a redelivered message is still recognised), sent outbox rows for
`bus.sent_retention_hours`. Deletes go in chunks of `bus.retention_chunk` rows along the
`processed_messages_at` and `outbox_sent` indexes, so none holds locks or bloats for long.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import asyncpg

from .config import BusConfig

if TYPE_CHECKING:
    from .service import Runtime

log = logging.getLogger(__name__)

_PRUNE_PROCESSED = (
    "DELETE FROM processed_messages WHERE message_id IN ("
    " SELECT message_id FROM processed_messages"
    " WHERE processed_at < now() - make_interval(secs => $1) LIMIT $2)"
)
_PRUNE_SENT = (
    "DELETE FROM outbox WHERE id IN ("
    " SELECT id FROM outbox WHERE sent_at < now() - make_interval(secs => $1) LIMIT $2)"
)

# Build trace contexts are kept as long as processed ids: longer than a build takes.
_PRUNE_TRACES = (
    "DELETE FROM trace_contexts WHERE aggregate IN ("
    " SELECT aggregate FROM trace_contexts"
    " WHERE created_at < now() - make_interval(secs => $1) LIMIT $2)"
)


async def prune(pool: asyncpg.Pool, settings: BusConfig) -> tuple[int, int]:
    """Delete what is past its window; returns (processed ids, outbox rows) deleted."""
    deleted = []
    for sql, hours in (
        (_PRUNE_PROCESSED, settings.processed_retention_hours),
        (_PRUNE_SENT, settings.sent_retention_hours),
    ):
        total = 0
        while True:
            status = await pool.execute(sql, hours * 3600, settings.retention_chunk)
            count = int(status.split()[-1])  # "DELETE n"
            total += count
            if count < settings.retention_chunk:
                break
        deleted.append(total)
    return deleted[0], deleted[1]


async def run(runtime: Runtime) -> None:
    """The periodic job every Service runs."""
    processed, sent = await prune(runtime.pool, runtime.config.bus)
    settings = runtime.config.bus
    await runtime.pool.execute(
        _PRUNE_TRACES, settings.processed_retention_hours * 3600, settings.retention_chunk
    )
    if processed or sent:
        log.info("retention: deleted %d processed ids, %d sent outbox rows", processed, sent)
