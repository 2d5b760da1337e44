"""PostgreSQL: a pool bound to one service's schema, and that schema's migrations.

Each service owns one Postgres schema (its tables are read by no other service); the pool sets
`search_path` so a service's SQL never names its schema.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import asyncpg

from . import telemetry
from .errors import BriefWhenUnavailable

log = logging.getLogger(__name__)
# While PostgreSQL is down, the pool retries its connection floor with a traceback each time.
logging.getLogger("asyncpg.pool").addFilter(BriefWhenUnavailable())

# Tables every service with a database has: the ids of messages it has processed (so
# redelivered messages are ignored) and the outbox of messages to publish after a commit.
PLUMBING_SQL = """
CREATE TABLE IF NOT EXISTS processed_messages (
    message_id  text PRIMARY KEY,
    processed_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS outbox (
    id          bigserial PRIMARY KEY,
    message     jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    sent_at     timestamptz
);
CREATE INDEX IF NOT EXISTS outbox_unsent ON outbox (id) WHERE sent_at IS NULL;
CREATE TABLE IF NOT EXISTS schema_migrations (
    name        text PRIMARY KEY,
    applied_at  timestamptz NOT NULL DEFAULT now()
);
"""

# Changes to those tables, applied once per service schema like the service's own migrations
# (recorded in schema_migrations under a `common_` name, which a service's `NNNN_` never is).
PLUMBING_MIGRATIONS = (
    (
        # The outbox keeps the wire form (validated once, when written), so the relay
        # publishes rows as they are. `message` stays for rows written before this change.
        # `aggregate` names what a message is about (a task, a build, a host): the relay keeps
        # order within one. Indexes keep retention deletes cheap.
        "common_0001_outbox_wire_form",
        """
        ALTER TABLE outbox ALTER COLUMN message DROP NOT NULL;
        ALTER TABLE outbox ADD COLUMN routing_key text;
        ALTER TABLE outbox ADD COLUMN body bytea;
        ALTER TABLE outbox ADD COLUMN headers jsonb;
        ALTER TABLE outbox ADD COLUMN message_id text;
        ALTER TABLE outbox ADD COLUMN priority integer;
        ALTER TABLE outbox ADD COLUMN aggregate text;
        CREATE INDEX outbox_unsent_aggregate ON outbox (aggregate, id)
            WHERE sent_at IS NULL AND aggregate IS NOT NULL;
        CREATE INDEX outbox_sent ON outbox (sent_at) WHERE sent_at IS NOT NULL;
        CREATE INDEX processed_messages_at ON processed_messages (processed_at);
        """,
    ),
    (
        # The trace each build belongs to (outbox.build_traces): what a service says about a
        # build later, whatever it is handling then, joins that build's trace.
        "common_0002_trace_contexts",
        """
        CREATE TABLE trace_contexts (
            aggregate   text PRIMARY KEY,
            traceparent text NOT NULL,
            created_at  timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX trace_contexts_at ON trace_contexts (created_at);
        """,
    ),
)


class TracedConnection(asyncpg.Connection):
    """A pool connection whose statements get a span each (telemetry.query_span): every
    query of every service, whichever way it reaches the database."""

    async def execute(self, query: str, *args: Any, **kwargs: Any) -> str:
        with telemetry.query_span(query):
            return await super().execute(query, *args, **kwargs)

    async def executemany(self, command: str, args: Any, **kwargs: Any) -> None:
        with telemetry.query_span(command):
            await super().executemany(command, args, **kwargs)

    async def fetch(self, query: str, *args: Any, **kwargs: Any) -> list[Any]:
        with telemetry.query_span(query):
            return await super().fetch(query, *args, **kwargs)

    async def fetchrow(self, query: str, *args: Any, **kwargs: Any) -> Any:
        with telemetry.query_span(query):
            return await super().fetchrow(query, *args, **kwargs)

    async def fetchval(self, query: str, *args: Any, **kwargs: Any) -> Any:
        with telemetry.query_span(query):
            return await super().fetchval(query, *args, **kwargs)


_SCHEMA_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_MIGRATION_NAME = re.compile(r"^\d{4}_[a-z0-9_]+\.sql$")


async def create_pool(
    url: str, schema: str, *, min_size: int = 1, max_size: int = 8
) -> asyncpg.Pool:
    if not _SCHEMA_NAME.match(schema):
        raise ValueError(f"bad schema name {schema!r}")
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    finally:
        await conn.close()
    pool = await asyncpg.create_pool(
        url,
        min_size=min_size,
        max_size=max_size,
        server_settings={"search_path": schema, "application_name": f"skyline-{schema}"},
        connection_class=TracedConnection,
    )
    assert pool is not None
    return pool


async def migrate(pool: asyncpg.Pool, schema: str, migrations: Path | None) -> list[str]:
    """Apply the service's `NNNN_name.sql` files not yet applied, in order; return their names.

    An advisory lock serialises replicas of one service starting at the same time.
    """
    applied_now: list[str] = []
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"migrate:{schema}")
        await conn.execute(PLUMBING_SQL)
        done = {r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")}
        for name, sql in [*PLUMBING_MIGRATIONS, *_read_migrations(migrations)]:
            if name in done:
                continue
            log.info("applying migration %s/%s", schema, name)
            await conn.execute(sql)
            await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", name)
            applied_now.append(name)
    return applied_now


def _read_migrations(folder: Path | None) -> list[tuple[str, str]]:
    files = sorted(folder.glob("*.sql")) if folder else []
    for file in files:
        if not _MIGRATION_NAME.match(file.name):
            raise ValueError(f"migration {file} is not named NNNN_name.sql")
    return [(file.name, file.read_text()) for file in files]
