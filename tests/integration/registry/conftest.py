"""A registry Runtime on a fresh database, its HTTP API, and what it put in its outbox."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp.test_utils import TestClient
from fedora_messaging import message as fm

from services.common.config import Config
from services.common.service import Runtime
from services.common.testing import api_client, outbox_messages, service_runtime
from services.registry.routes import ROUTES


@pytest.fixture
async def runtime(config: Config) -> AsyncIterator[Runtime]:
    async with service_runtime(config, "registry") as runtime:
        yield runtime


@pytest.fixture
def sent(runtime: Runtime) -> Callable[[], Awaitable[list[fm.Message]]]:
    """Every message the service queued for publication so far, oldest first."""
    return lambda: outbox_messages(runtime)


@pytest.fixture
async def client(runtime: Runtime) -> AsyncIterator[TestClient]:
    async with api_client(runtime, ROUTES) as client:
        yield client
