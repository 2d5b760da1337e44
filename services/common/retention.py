"""Retention: the plumbing tables of every service stay small.

Processed-message ids are kept for `bus.processed_retention_hours` (longer than any
redelivery can take, so a redelivered message is still recognised), sent outbox rows for
`bus.sent_retention_hours`. Deletes go in chunks of `bus.retention_chunk` rows along the
`processed_messages_at` and `outbox_sent` indexes, so none holds locks or bloats for long.

A service's own tables that grow with its traffic (the registry's availability history and
builds) are declared as `History`: the same job deletes their rows past their window, in the
same chunks.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import asyncpg

from .config import BusConfig, Config

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


@dataclasses.dataclass(frozen=True)
class History:
    """A table of a service's own that grows with its traffic, kept `seconds(config)`.

    `delete` deletes at most $2 rows older than $1 seconds (it returns "DELETE n")."""

    table: str
    delete: str
    seconds: Callable[[Config], float]


async def _chunked(pool: asyncpg.Pool, sql: str, seconds: float, chunk: int) -> int:
    """Run a chunked DELETE until a chunk comes back short; returns the rows deleted."""
    total = 0
    while True:
        status = await pool.execute(sql, seconds, chunk)
        count = int(status.split()[-1])  # "DELETE n"
        total += count
        if count < chunk:
            return total


async def prune_history(
    pool: asyncpg.Pool, config: Config, histories: Sequence[History]
) -> dict[str, int]:
    """Delete what is past each history table's window; returns rows deleted per table."""
    chunk = config.bus.retention_chunk
    return {h.table: await _chunked(pool, h.delete, h.seconds(config), chunk) for h in histories}


async def prune(pool: asyncpg.Pool, settings: BusConfig) -> tuple[int, int]:
    """Delete what is past its window; returns (processed ids, outbox rows) deleted."""
    chunk = settings.retention_chunk
    processed = await _chunked(
        pool, _PRUNE_PROCESSED, settings.processed_retention_hours * 3600, chunk
    )
    sent = await _chunked(pool, _PRUNE_SENT, settings.sent_retention_hours * 3600, chunk)
    return processed, sent


async def run(runtime: Runtime, histories: Sequence[History] = ()) -> None:
    """The periodic job every Service runs (with its own `histories`)."""
    processed, sent = await prune(runtime.pool, runtime.config.bus)
    settings = runtime.config.bus
    await runtime.pool.execute(
        _PRUNE_TRACES, settings.processed_retention_hours * 3600, settings.retention_chunk
    )
    if processed or sent:
        log.info("retention: deleted %d processed ids, %d sent outbox rows", processed, sent)
    for table, count in (await prune_history(runtime.pool, runtime.config, histories)).items():
        if count:
            log.info("retention: deleted %d rows of %s", count, table)
