"""The builder unit tests' stand-in (tests/builder_fakes.py) answers as the real registry and
collector do, for what the agent relies on.

The same services/builder/client.py calls the agent makes (enrol, fetch_srpm, upload) run
against the stand-in and against the real registry and collector (their routes on real
PostgreSQL, the registry making broker users on real RabbitMQ). Every HTTP exchange is
recorded, so each test checks both what the client makes of an answer and the answer itself:
its status, and for a refusal the JSON error body {"error", "status"} whose `error` the client
shows the volunteer.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from skyline_messages import TaskLeasedV1

from services.builder import client
from services.collector.__main__ import SERVICE as COLLECTOR
from services.common.broker_admin import Principals
from services.common.config import Config
from services.common.signing import public_key_b64
from services.common.testing import api_client, build_test_package, service_runtime
from services.registry import owners
from services.registry.routes import ROUTES as REGISTRY_ROUTES
from tests.builder_fakes import TOKEN, Services

pytestmark = pytest.mark.integration

NVR = "skyline-hello-1.0-1"


@dataclasses.dataclass(frozen=True)
class Exchange:
    method: str
    path: str
    status: int
    content_type: str
    body: Any  # the JSON answer; None for any other


@dataclasses.dataclass
class Side:
    """One implementation of the builder's peers, and a session that records every answer."""

    name: str
    registry_url: str
    collector_url: str
    token: str  # alice's owner token there
    open_lease: Callable[[str], Awaitable[str]]  # a lease for this host: its id
    serve_srpm: Callable[[Path], Awaitable[str]]  # the srpm_url a lease would carry for it
    http: aiohttp.ClientSession
    exchanges: list[Exchange]

    @property
    def last(self) -> Exchange:
        return self.exchanges[-1]

    async def enrol(
        self, host: str, key: Ed25519PrivateKey, *, signed_by: Ed25519PrivateKey | None = None
    ) -> dict[str, Any]:
        """client.enrol as the agent calls it, with alice's token."""
        return await self.enrol_with(host, key, token=self.token, signed_by=signed_by)

    async def enrol_with(
        self,
        host: str,
        key: Ed25519PrivateKey,
        *,
        token: str,
        signed_by: Ed25519PrivateKey | None = None,
    ) -> dict[str, Any]:
        profile = client.HostProfile(
            host, "alice", public_key_b64(key), ["noarch"], ["f41"], 4, 8192, 100, "bwrap"
        )
        return await client.enrol(
            self.http,
            self.registry_url,
            profile,
            signing_key=signed_by or key,
            token=token,
            deadline=3,  # a 5xx (a stand-in that crashed) fails the test quickly
            base_delay=0.01,
        )

    async def upload(
        self,
        lease_id: str,
        path: Path,
        *,
        host: str,
        key: Ed25519PrivateKey,
        sha256: str | None = None,
    ) -> None:
        """client.upload as the agent calls it; two tries, so a 5xx or 404 shows quickly."""
        digest = sha256 or hashlib.sha256(path.read_bytes()).hexdigest()
        await client.upload(
            self.http,
            self.collector_url,
            lease_id,
            path,
            digest,
            host=host,
            key=key,
            tries=2,
            base_delay=0.01,
        )


def recorder(exchanges: list[Exchange]) -> aiohttp.TraceConfig:
    """Records each answer. A JSON body read here stays cached for the client's own read;
    anything else (an SRPM) is left for the client to stream."""

    async def on_request_end(
        session: aiohttp.ClientSession,
        ctx: SimpleNamespace,
        params: aiohttp.TraceRequestEndParams,
    ) -> None:
        resp = params.response
        body = await resp.json() if resp.content_type == "application/json" else None
        exchanges.append(
            Exchange(params.method, params.url.path, resp.status, resp.content_type, body)
        )

    trace = aiohttp.TraceConfig()
    trace.on_request_end.append(on_request_end)
    return trace


@contextlib.asynccontextmanager
async def recording_session() -> AsyncIterator[tuple[aiohttp.ClientSession, list[Exchange]]]:
    exchanges: list[Exchange] = []
    async with aiohttp.ClientSession(trace_configs=[recorder(exchanges)]) as http:
        yield http, exchanges


@pytest.fixture
async def fake_side() -> AsyncIterator[Side]:
    services = Services()
    server = TestServer(services.app())
    await server.start_server()
    url = str(server.make_url("")).rstrip("/")

    async def open_lease(host: str) -> str:
        return str(uuid.uuid4())  # the stand-in takes uploads to any lease

    async def serve_srpm(srpm: Path) -> str:
        services.srpm = srpm.read_bytes()
        return f"{url}/srpms/{srpm.name}"

    try:
        async with recording_session() as (http, exchanges):
            yield Side("fake", url, url, TOKEN, open_lease, serve_srpm, http, exchanges)
    finally:
        await server.close()


@pytest.fixture
async def real_side(config: Config, broker: Principals) -> AsyncIterator[Side]:
    """The registry (making each host's broker user) and a collector that asks it for keys."""
    async with (
        service_runtime(config, "registry") as registry,
        api_client(registry, REGISTRY_ROUTES) as registry_api,
    ):
        registry.state["broker_admin"] = broker.admin
        async with registry.pool.acquire() as conn:
            token = await owners.create(conn, "alice")
        registry_url = str(registry_api.make_url("")).rstrip("/")
        collector_config = dataclasses.replace(
            config,
            collector=dataclasses.replace(config.collector, registry_url=registry_url),
        )
        async with (
            service_runtime(collector_config, "collector") as collector,
            api_client(collector, COLLECTOR.routes) as collector_api,
            recording_session() as (http, exchanges),
        ):

            async def open_lease(host: str) -> str:
                # As the dispatcher's lease reaches the collector over the bus.
                lease_id = str(uuid.uuid4())
                body = {
                    "task_id": 11,
                    "build_id": 7,
                    "lease_id": lease_id,
                    "host": host,
                    "arch": "noarch",
                    "owner": "alice",
                    "nvr": NVR,
                    "srpm_url": f"http://127.0.0.1:1/sources/{NVR}.src.rpm",
                    "srpm_sha256": "a" * 64,
                    "release": "f41",
                    "lease_expires": "2099-01-01T00:00:00+00:00",
                }
                await COLLECTOR.handle(
                    collector, TaskLeasedV1(body=body, topic=TaskLeasedV1.topic_for(host))
                )
                return lease_id

            collector_url = str(collector_api.make_url("")).rstrip("/")

            async def serve_srpm(srpm: Path) -> str:
                # As `skyline build` stores a packager's source (Bearer: the owner token).
                sha256 = hashlib.sha256(srpm.read_bytes()).hexdigest()
                path = f"/api/v1/sources/{sha256}/{srpm.name}"
                auth = {"Authorization": f"Bearer {token}"}
                async with http.put(
                    collector_url + path, data=srpm.read_bytes(), headers=auth
                ) as resp:
                    assert resp.status == 201, await resp.text()
                return f"{collector_url}/sources/{sha256}/{srpm.name}"

            yield Side(
                "real", registry_url, collector_url, token, open_lease, serve_srpm, http, exchanges
            )


@pytest.fixture(params=["fake", "real"])
def side(request: pytest.FixtureRequest) -> Side:
    """Each test runs once against the stand-in and once against the real services."""
    return request.getfixturevalue(f"{request.param}_side")


def new_host() -> str:
    # Unique: the broker users the real registry makes outlive a test's database.
    return f"b-{uuid.uuid4().hex[:8]}"


def assert_refusal(exchange: Exchange, status: int) -> str:
    """A refusal as the services make it (services/common/http.error); returns its `error`."""
    assert (exchange.status, exchange.content_type) == (status, "application/json"), exchange
    assert isinstance(exchange.body, dict) and set(exchange.body) == {"error", "status"}
    assert exchange.body["status"] == status
    assert isinstance(exchange.body["error"], str) and exchange.body["error"]
    return exchange.body["error"]


# -- enrolment ---------------------------------------------------------------------------------


async def test_enrolment_is_201_then_200_and_another_key_is_409(side: Side) -> None:
    host, key = new_host(), Ed25519PrivateKey.generate()
    first = await side.enrol(host, key)
    assert side.last.status == 201
    # What the agent reads: the trust it logs and its own broker user, for the lease queue.
    assert first["trust"] == "untrusted"
    assert first["broker"]["user"] == f"host-{host}"
    assert first["broker"]["queue"] == f"skyline.builder.{host}"
    assert isinstance(first["broker"]["password"], str) and first["broker"]["password"]
    # Every start of the agent enrols again with its key: a confirmation, with a new password.
    again = await side.enrol(host, key)
    assert side.last.status == 200
    assert again["broker"]["user"] == f"host-{host}"
    assert again["broker"]["password"] != first["broker"]["password"]
    # Another machine (another key) under the same name: the name is taken.
    with pytest.raises(client.EnrolmentError, match="already has a host named") as err:
        await side.enrol(host, Ed25519PrivateKey.generate())
    assert assert_refusal(side.last, 409) in str(err.value)
    assert len(side.exchanges) == 3  # a refusal is final: not retried


@pytest.mark.parametrize("case", ["no token", "unknown token", "signed by another key"])
async def test_refused_enrolment(side: Side, case: str) -> None:
    host, key = new_host(), Ed25519PrivateKey.generate()
    with pytest.raises(client.EnrolmentError, match=r"enrol_token") as err:
        if case == "no token":
            await side.enrol_with(host, key, token="")
        elif case == "unknown token":
            await side.enrol_with(host, key, token="x" * 43)
        else:  # the public key is no proof: only its private half's holder may enrol it
            await side.enrol(host, key, signed_by=Ed25519PrivateKey.generate())
    status = 403 if case == "signed by another key" else 401
    assert assert_refusal(side.last, status) in str(err.value)
    assert len(side.exchanges) == 1


# -- uploads -----------------------------------------------------------------------------------


async def enrolled_lease(side: Side) -> tuple[str, Ed25519PrivateKey, str]:
    host, key = new_host(), Ed25519PrivateKey.generate()
    await side.enrol(host, key)
    side.exchanges.clear()
    return host, key, await side.open_lease(host)


def answer(path: Path) -> dict[str, Any]:
    data = path.read_bytes()
    return {"name": path.name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


async def test_signed_uploads_are_staged_again_and_replaced(side: Side, tmp_path: Path) -> None:
    host, key, lease = await enrolled_lease(side)
    path = tmp_path / "x+y^z~1.noarch.rpm"  # characters RPM names use, escaped in the URL
    path.write_bytes(b"payload")
    await side.upload(lease, path, host=host, key=key)
    assert (side.last.status, side.last.body) == (201, answer(path))
    # A retry whose answer was lost (the agent resumes a lease and uploads again): accepted.
    await side.upload(lease, path, host=host, key=key)
    assert (side.last.status, side.last.body) == (200, answer(path))
    # A resumed lease's rebuilt log has other bytes: they replace the staged ones.
    path.write_bytes(b"other payload")
    await side.upload(lease, path, host=host, key=key)
    assert (side.last.status, side.last.body) == (200, answer(path))
    assert len(side.exchanges) == 3


@pytest.mark.parametrize("case", ["wrong digest", "signed by another key", "host not enrolled"])
async def test_refused_upload(side: Side, tmp_path: Path, case: str) -> None:
    host, key, lease = await enrolled_lease(side)
    path = tmp_path / "build.log"
    path.write_bytes(b"log")
    if case == "host not enrolled":
        host, key = new_host(), Ed25519PrivateKey.generate()
        lease = await side.open_lease(host)
    with pytest.raises(client.UploadError) as err:
        if case == "wrong digest":
            await side.upload(lease, path, host=host, key=key, sha256="0" * 64)
        elif case == "signed by another key":
            await side.upload(lease, path, host=host, key=Ed25519PrivateKey.generate())
        else:
            await side.upload(lease, path, host=host, key=key)
    status = 422 if case == "wrong digest" else 403
    assert f"HTTP {status}: {assert_refusal(side.last, status)}" in str(err.value)
    assert len(side.exchanges) == 1  # final: the agent fails the task with the reason


async def test_unsigned_upload_is_401(side: Side) -> None:
    *_, lease = await enrolled_lease(side)
    url = f"{side.collector_url}/api/v1/uploads/{lease}/build.log"
    headers = {client.SHA256_HEADER: hashlib.sha256(b"log").hexdigest()}
    async with side.http.put(url, data=b"log", headers=headers) as resp:
        assert resp.status == 401
    assert_refusal(side.last, 401)


# -- both at once ------------------------------------------------------------------------------


async def test_the_stand_in_says_nothing_the_registry_does_not(
    fake_side: Side, real_side: Side
) -> None:
    """The stand-in's enrolment reply is a part of the real one: no key the agent could come
    to rely on that the registry never sends."""
    replies = []
    for side in (fake_side, real_side):
        replies.append(await side.enrol(new_host(), Ed25519PrivateKey.generate()))
    fake, real = replies
    assert set(fake) <= set(real), set(fake) - set(real)
    assert set(fake["broker"]) == set(real["broker"])
    for key in set(fake) - {"broker"}:
        assert type(fake[key]) is type(real[key]), key


# -- the SRPM ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def srpm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real source RPM (rpmbuild): the collector stores only intact ones."""
    srpm, _ = build_test_package(tmp_path_factory.mktemp("srpm"), name="skyline-hello")
    return srpm


async def test_the_srpm_is_served_whole_with_its_length(
    side: Side, srpm: Path, tmp_path: Path
) -> None:
    url = await side.serve_srpm(srpm)
    data = srpm.read_bytes()
    sha256 = hashlib.sha256(data).hexdigest()
    dest = tmp_path / srpm.name
    # Content-Length is sent: the agent refuses an oversized SRPM before reading it.
    with pytest.raises(client.FetchError, match=rf"is {len(data)} bytes, over the"):
        await client.fetch_srpm(side.http, url, dest, sha256, len(data) - 1, tries=1)
    assert await client.fetch_srpm(side.http, url, dest, sha256, len(data), tries=1) == sha256
    assert dest.read_bytes() == data
