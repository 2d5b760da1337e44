"""A dispatcher Runtime on a fresh database, its HTTP API, what it put in its outbox, and a
stand-in for the collector's lease API (checked against the real one in
test_collector_contract.py)."""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from fedora_messaging import message as fm

from services.common.config import Config
from services.common.service import Runtime
from services.common.testing import api_client, outbox_messages, service_runtime
from services.dispatcher.routes import ROUTES


@pytest.fixture
async def runtime(config: Config) -> AsyncIterator[Runtime]:
    async with service_runtime(config, "dispatcher") as runtime:
        yield runtime


@pytest.fixture
def sent(runtime: Runtime) -> Callable[[], Awaitable[list[fm.Message]]]:
    """Every message the service queued for publication so far, oldest first."""
    return lambda: outbox_messages(runtime)


@pytest.fixture
async def client(runtime: Runtime) -> AsyncIterator[TestClient]:
    async with api_client(runtime, ROUTES) as client:
        yield client


def _error(status: int, message: str) -> web.Response:
    """The JSON error body of services.common.http.error."""
    return web.Response(
        status=status,
        text=json.dumps({"error": message, "status": status}),
        content_type="application/json",
    )


@dataclasses.dataclass
class CollectorDouble:
    """The collector's GET /api/v1/leases/{lease_id} as collector/routes.py answers it.

    `leases` maps a lease id to (state, stored files); any other lease is unknown (404).
    """

    leases: dict[str, tuple[str, list[dict[str, Any]]]] = dataclasses.field(default_factory=dict)
    status: int = 200  # anything else: the collector is in trouble and answers that
    asked: list[str] = dataclasses.field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/api/v1/leases/{lease_id}", self.get_lease)
        return app

    async def get_lease(self, request: web.Request) -> web.Response:
        raw = request.match_info["lease_id"]
        self.asked.append(raw)
        if self.status != 200:
            return _error(self.status, "down")
        try:
            lease_id = str(uuid.UUID(raw))
        except ValueError:
            return _error(400, "the lease id is not a UUID")
        if lease_id not in self.leases:
            return _error(404, "unknown lease")
        state, files = self.leases[lease_id]
        return web.json_response({"lease_id": lease_id, "state": state, "files": files})


@pytest.fixture
async def collector_double() -> AsyncIterator[tuple[CollectorDouble, str]]:
    """A served CollectorDouble and its base URL."""
    double = CollectorDouble()
    server = TestServer(double.app())
    await server.start_server()
    try:
        yield double, str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


@pytest.fixture(autouse=True)
def collector(runtime: Runtime, collector_double: tuple[CollectorDouble, str]) -> CollectorDouble:
    """The collector the dispatcher asks at lease expiry: by default it knows no lease."""
    double, url = collector_double
    config = runtime.config
    runtime.config = dataclasses.replace(
        config, dispatcher=dataclasses.replace(config.dispatcher, collector_url=url)
    )
    return double
