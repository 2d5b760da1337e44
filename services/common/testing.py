"""Test helpers for any service: a Runtime on a real database, its outbox, its HTTP API.

Handlers publish through the outbox table, so a test reads what a handler "sent" from there;
the relay never runs and nothing reaches a broker.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from fedora_messaging import message as fm

from . import db, outbox
from .config import Config
from .http import make_app
from .service import RUNTIME, Runtime

SERVICES_DIR = Path(__file__).resolve().parent.parent


class OutboxOnlyBus:
    """Stands in for the bus when only the outbox matters."""

    user = "test"

    async def publish(self, msg: fm.Message) -> None:  # pragma: no cover - never called
        raise AssertionError("tests read the outbox table; nothing is published")

    async def publish_encoded(self, wires: object) -> None:  # pragma: no cover - never called
        raise AssertionError("tests read the outbox table; nothing is published")


@contextlib.asynccontextmanager
async def service_runtime(
    config: Config, service: str, *, http_timeout: float = 60
) -> AsyncIterator[Runtime]:
    """A Runtime for `service` on `config.database_url`, its migrations applied."""
    pool = await db.create_pool(config.database_url, service)
    try:
        await db.migrate(pool, service, SERVICES_DIR / service / "migrations")
        bus = OutboxOnlyBus()
        timeout = aiohttp.ClientTimeout(total=http_timeout)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            yield Runtime(service, config, pool, bus, outbox.Relay(pool, bus), http)  # type: ignore[arg-type]
    finally:
        await pool.close()


async def outbox_messages(runtime: Runtime) -> list[fm.Message]:
    """Every message the service queued for publication so far, oldest first."""
    rows = await runtime.pool.fetch(
        "SELECT routing_key, body, headers::text AS headers, message_id, priority,"
        " message::text AS message FROM outbox ORDER BY id"
    )
    return [outbox.wire_to_message(outbox.row_wire(r)) for r in rows]


@contextlib.asynccontextmanager
async def api_client(runtime: Runtime, routes: Sequence[web.RouteDef]) -> AsyncIterator[TestClient]:
    """An HTTP client for the service's routes, served on a loopback port."""
    app = make_app(routes)
    app[RUNTIME] = runtime
    async with TestClient(TestServer(app)) as client:
        yield client
