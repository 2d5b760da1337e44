"""The collector stand-in of conftest.py answers as the real collector's lease API does.

The same leases, in every state, are asked of the real route (services/collector/routes.py on
a real database) and of the stand-in, raw over HTTP and through the dispatcher's client.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient
from skyline_messages import TaskLeasedV1

from services.collector import store as collector_store
from services.collector.__main__ import SERVICE as COLLECTOR
from services.collector.routes import ROUTES as COLLECTOR_ROUTES
from services.collector.storage import Result
from services.common.config import Config
from services.common.errors import Retry
from services.common.service import Runtime
from services.common.testing import api_client, service_runtime
from services.dispatcher import collector as collector_api

pytestmark = pytest.mark.integration

NVR = "skyline-hello-1.0-1"
FILES = [
    Result(
        f"{NVR}.noarch.rpm",
        Path("unused"),
        f"packages/skyline-hello/1.0/1/noarch/{NVR}.noarch.rpm",
        "c" * 64,
        10,
        "noarch",
    ),
    Result(
        "build.log",
        Path("unused"),
        "packages/skyline-hello/1.0/1/data/logs/x86_64/build.log",
        "d" * 64,
        3,
        "x86_64",
    ),
]


def by_name(entry: dict) -> str:
    return entry["name"]


@pytest.fixture
async def real(config: Config) -> AsyncIterator[tuple[Runtime, TestClient]]:
    async with service_runtime(config, "collector") as runtime:
        async with api_client(runtime, COLLECTOR_ROUTES) as client:
            yield runtime, client


async def lease(runtime: Runtime, task_id: int) -> str:
    lease_id = str(uuid.uuid4())
    body = {
        "task_id": task_id,
        "build_id": 7,
        "lease_id": lease_id,
        "host": "builder1",
        "arch": "x86_64",
        "owner": "alice",
        "nvr": NVR,
        "srpm_url": f"http://127.0.0.1:1/sources/{NVR}.src.rpm",
        "srpm_sha256": "a" * 64,
        "release": "local",
        "lease_expires": "2030-01-01T00:00:00+00:00",
    }
    await COLLECTOR.handle(runtime, TaskLeasedV1(body=body, topic=f"{TaskLeasedV1.topic}.x"))
    return lease_id


async def test_the_stand_in_answers_as_the_collector_does(real, collector, collector_double):
    runtime, real_client = real
    _, double_url = collector_double
    leases = {}
    leases["open"] = await lease(runtime, 1)
    leases["stored"] = await lease(runtime, 2)
    leases["failed"] = await lease(runtime, 3)
    async with runtime.transaction() as ctx:
        await collector_store.record_stored(ctx.conn, uuid.UUID(leases["stored"]), FILES)
        await collector_store.set_state(ctx.conn, uuid.UUID(leases["failed"]), "failed")
    # What the stand-in is told, in the form the dispatcher tests tell it.
    collector.leases[leases["open"]] = ("open", [])
    collector.leases[leases["stored"]] = ("stored", [r.entry() for r in FILES])
    collector.leases[leases["failed"]] = ("failed", [])

    real_url = str(real_client.make_url("")).rstrip("/")
    http = runtime.http
    for lease_id in [*leases.values(), str(uuid.uuid4()), "not-a-uuid"]:
        path = f"/api/v1/leases/{lease_id}"
        async with http.get(real_url + path) as a, http.get(double_url + path) as b:
            assert (a.status, a.content_type) == (b.status, b.content_type), path
            answer, stand_in = await a.json(), await b.json()
        if a.status == 200:
            # The same files, whatever the order each lists them in.
            answer["files"].sort(key=by_name)
            stand_in["files"].sort(key=by_name)
        assert answer == stand_in, path

    for state, lease_id in leases.items():
        found = await collector_api.lease(http, real_url, lease_id)
        told = await collector_api.lease(http, double_url, lease_id)
        assert (found.state, told.state) == (state, state)
        assert found.stored is told.stored is (state == "stored")
        assert sorted(found.files, key=by_name) == sorted(told.files, key=by_name)
        assert len(found.files) == (2 if state == "stored" else 0)
    assert await collector_api.lease(http, real_url, str(uuid.uuid4())) is None


async def test_the_client_refuses_what_it_cannot_trust(runtime, collector, collector_double):
    """A collector in trouble, or one that answers nonsense, says nothing about the lease."""
    _, url = collector_double
    lease_id = str(uuid.uuid4())
    collector.status = 500
    with pytest.raises(Retry, match="answered 500"):
        await collector_api.lease(runtime.http, url, lease_id)
    collector.status = 200
    collector.leases[lease_id] = ("stored", [{"name": "../../etc/passwd", "path": "/etc/passwd"}])
    with pytest.raises(Retry, match="unexpected answer"):
        await collector_api.lease(runtime.http, url, lease_id)
    with pytest.raises(Retry, match="failed"):
        await collector_api.lease(runtime.http, "http://127.0.0.1:9", lease_id)
