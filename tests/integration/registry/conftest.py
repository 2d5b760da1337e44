"""A registry Runtime on a fresh database, its HTTP API, and what it put in its outbox."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from fedora_messaging import message as fm

from services.common import db, outbox
from services.common.config import Config
from services.common.http import make_app
from services.common.service import RUNTIME, Runtime
from services.registry.routes import ROUTES

REPO = Path(__file__).resolve().parents[3]
SERVICE = "registry"


class OutboxOnlyBus:
    """Handlers write to the outbox; these tests read it and never run the relay."""

    async def publish(self, msg: fm.Message) -> None:  # pragma: no cover - never called
        raise AssertionError("tests read the outbox table; nothing is published")


@pytest.fixture
async def runtime(config: Config) -> AsyncIterator[Runtime]:
    pool = await db.create_pool(config.database_url, SERVICE)
    try:
        await db.migrate(pool, SERVICE, REPO / "services" / SERVICE / "migrations")
        bus = OutboxOnlyBus()
        async with aiohttp.ClientSession() as http:
            yield Runtime(SERVICE, config, pool, bus, outbox.Relay(pool, bus), http)  # type: ignore[arg-type]
    finally:
        await pool.close()


@pytest.fixture
def sent(runtime: Runtime) -> Callable[[], Awaitable[list[fm.Message]]]:
    """Every message the service queued for publication so far, oldest first."""

    async def read() -> list[fm.Message]:
        rows = await runtime.pool.fetch("SELECT message FROM outbox ORDER BY id")
        return [fm.load_message(json.loads(r["message"])) for r in rows]

    return read


@pytest.fixture
async def client(runtime: Runtime) -> AsyncIterator[TestClient]:
    app = make_app(ROUTES)
    app[RUNTIME] = runtime
    async with TestClient(TestServer(app)) as client:
        yield client
