"""The collector's HTTP uploads and its verified-results handler against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import hashlib
import json
import logging
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import koji
import pytest
import yarl
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fedora_messaging import message as fm
from skyline_messages import BuildStoredV1, TaskLeasedV1, TaskVerifiedV1

from services.builder import client as builder_client
from services.builder.rpmbuild import build
from services.collector import cleanup, routes, spool, storage
from services.collector.__main__ import SERVICE
from services.collector.limits import RateLimiter
from services.common import db, outbox
from services.common.config import Config
from services.common.errors import Reject
from services.common.http import make_app
from services.common.rpmfacts import comparison_key, facts_from_json, read_rpm_facts
from services.common.rpmfiles import (
    REPRODUCIBLE_MACROS,
    macro_args,
    make_srpm,
    read_rpm_info,
    sha256_file,
    tool_env,
)
from services.common.service import RUNTIME, Runtime
from services.common.signing import public_key_b64
from services.common.testing import build_test_package, outbox_messages, service_runtime
from services.registry import owners as registry_owners
from services.registry import owners_api

pytestmark = pytest.mark.integration

EXAMPLE_SPEC = Path(__file__).parents[3] / "examples/skyline-hello/skyline-hello.spec"
NVR = "skyline-hello-1.0-1"
RPM_NAME = f"{NVR}.noarch.rpm"
HOST = "builder1"
HOST_KEY = Ed25519PrivateKey.generate()  # builder1's enrolled key
OTHER_KEY = Ed25519PrivateKey.generate()


class FakeBus:
    """The outbox relay's bus: these tests read the outbox table instead."""

    def __init__(self) -> None:
        self.published: list[fm.Message] = []

    async def publish(self, msg: fm.Message) -> None:
        self.published.append(msg)


@dataclasses.dataclass
class Registry:
    """A stand-in for the registry's GET /api/v1/hosts/{host}: the collector's key source,
    served next to the real registry's owner routes (whoami), which count their calls."""

    hosts: dict[str, dict[str, str]] = dataclasses.field(
        default_factory=lambda: {HOST: {"public_key": public_key_b64(HOST_KEY), "state": "online"}}
    )
    status: int = 200  # anything else: the registry is in trouble
    lookups: list[str] = dataclasses.field(default_factory=list)
    whoami_calls: int = 0

    def app(self, runtime: Runtime) -> web.Application:
        """`runtime` is a real registry's, for its owner routes."""
        app = make_app(owners_api.ROUTES)
        app[RUNTIME] = runtime
        app.router.add_get("/api/v1/hosts/{host}", self.get_host)
        app.on_response_prepare.append(self._count)
        return app

    async def _count(self, request: web.Request, response: web.StreamResponse) -> None:
        if request.path == "/api/v1/owners/whoami":
            self.whoami_calls += 1

    async def get_host(self, request: web.Request) -> web.Response:
        host = request.match_info["host"]
        self.lookups.append(host)
        if self.status != 200:
            return web.json_response({"error": "down", "status": self.status}, status=self.status)
        if host not in self.hosts:
            return web.json_response({"error": "no such host", "status": 404}, status=404)
        return web.json_response({"host": host, **self.hosts[host]})


def signed(
    lease_id: str,
    name: str,
    digest: str,
    *,
    key: Ed25519PrivateKey = HOST_KEY,
    host: str = HOST,
    signed_at: str | None = None,
) -> dict[str, str]:
    """The headers a builder sends (made by the builder's own code, so the two must agree)."""
    return builder_client.upload_headers(
        lease_id, name, digest, host=host, key=key, signed_at=signed_at
    )


@dataclasses.dataclass
class Collector:
    runtime: Runtime
    client: TestClient
    registry: Registry
    registry_runtime: Runtime  # the real registry's, for owners

    def configure(self, **collector: Any) -> None:
        config = self.runtime.config
        self.runtime.config = dataclasses.replace(
            config, collector=dataclasses.replace(config.collector, **collector)
        )

    async def new_owner(self, name: str = "alice") -> str:
        """Make an owner in the real registry (as its admin API does); returns its token."""
        async with self.registry_runtime.transaction() as ctx:
            return await registry_owners.create(ctx.conn, name)

    async def put_source(
        self, srpm: Path, token: str | None, *, name: str | None = None, data: bytes | None = None
    ) -> aiohttp.ClientResponse:
        data = srpm.read_bytes() if data is None else data
        url = f"/api/v1/sources/{hashlib.sha256(data).hexdigest()}/{name or srpm.name}"
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        return await self.client.put(url, data=data, headers=headers)

    @property
    def topdir(self) -> Path:
        return storage.koji_topdir(self.runtime.config)

    async def lease(self, nvr: str = NVR, **extra: object) -> str:
        lease_id = str(uuid.uuid4())
        body = {
            "task_id": 42,
            "build_id": 7,
            "lease_id": lease_id,
            "host": HOST,
            "arch": "x86_64",
            "owner": "alice",
            "nvr": nvr,
            "srpm_url": f"http://127.0.0.1:1/sources/{nvr}.src.rpm",
            "srpm_sha256": "a" * 64,
            "release": "local",
            "lease_expires": "2030-01-01T00:00:00+00:00",
            **extra,
        }
        await SERVICE.handle(self.runtime, TaskLeasedV1(body=body, topic=f"{TaskLeasedV1.topic}.x"))
        return lease_id

    async def upload(
        self,
        lease_id: str,
        name: str,
        data: bytes,
        digest: str | None = None,
        *,
        headers: dict[str, str] | None = None,
    ) -> aiohttp.ClientResponse:
        """PUT as the leased host would (signed with its key), unless `headers` are given."""
        digest = digest or hashlib.sha256(data).hexdigest()
        if headers is None:
            headers = signed(lease_id, name, digest)
        return await self.client.put(
            f"/api/v1/uploads/{lease_id}/{name}", data=data, headers=headers
        )

    async def outbox(self) -> list[dict]:
        return [json.loads(fm.dumps(m)) for m in await outbox_messages(self.runtime)]

    async def stored_rows(self) -> int:
        async with self.runtime.pool.acquire() as conn:
            return await conn.fetchval("SELECT count(*) FROM stored_files")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(srpm, noarch rpm, build.log) of the example package."""
    tmp = tmp_path_factory.mktemp("collector-build")
    srpm = make_srpm(EXAMPLE_SPEC, tmp / "srpm")
    outcome = build(srpm, arch="noarch", results_dir=tmp / "res", build_path=tmp / "bp")
    assert outcome.succeeded, outcome.log.read_text()
    return srpm, outcome.rpms[0], outcome.log


@pytest.fixture(scope="module")
def built_elsewhere(
    built: tuple[Path, Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The same noarch RPM rebuilt with another build host name: valid, but other bytes."""
    top = tmp_path_factory.mktemp("elsewhere")
    subprocess.run(
        [
            "rpmbuild",
            "--rebuild",
            "--nodeps",
            "--define",
            f"_topdir {top}",
            *macro_args({**REPRODUCIBLE_MACROS, "_buildhost": "elsewhere"}),
            str(built[0]),
        ],
        env={**tool_env(), "HOME": str(top)},
        check=True,
        capture_output=True,
    )
    (rpm_path,) = (top / "RPMS").rglob("*.rpm")
    assert sha256_file(rpm_path) != sha256_file(built[1])
    return rpm_path


@pytest.fixture
async def registry_runtime(config: Config) -> AsyncIterator[Runtime]:
    async with service_runtime(config, "registry") as runtime:
        yield runtime


@pytest.fixture
async def collector(config: Config, registry_runtime: Runtime) -> AsyncIterator[Collector]:
    schema = f"collector_{uuid.uuid4().hex[:8]}"  # unique, also on a shared test server
    registry = Registry()
    registry_server = TestServer(registry.app(registry_runtime))
    await registry_server.start_server()
    config = dataclasses.replace(
        config,
        collector=dataclasses.replace(
            config.collector,
            max_upload_mb=1,
            public_url="http://c",
            registry_url=str(registry_server.make_url("")),
        ),
    )
    pool = await db.create_pool(config.database_url, schema)
    try:
        await db.migrate(pool, schema, SERVICE.migrations)
        async with aiohttp.ClientSession() as http:
            bus = FakeBus()
            relay = outbox.Relay(pool, bus)  # type: ignore[arg-type]
            runtime = Runtime("collector", config, pool, bus, relay, http)  # type: ignore[arg-type]
            app = make_app(SERVICE.routes)
            app[RUNTIME] = runtime
            async with TestClient(TestServer(app)) as client:
                yield Collector(runtime, client, registry, registry_runtime)
    finally:
        await pool.close()
        await registry_server.close()


async def test_upload_happy_path_and_listing(collector: Collector) -> None:
    lease_id = await collector.lease()
    data = b"hello\n" * 50_000  # 300 kB, several chunks
    resp = await collector.upload(lease_id, "build.log", data)
    assert resp.status == 201, await resp.text()
    digest = hashlib.sha256(data).hexdigest()
    assert await resp.json() == {"name": "build.log", "size": len(data), "sha256": digest}
    staged = storage.staging_dir(collector.runtime.config, uuid.UUID(lease_id))
    assert (staged / "build.log").read_bytes() == data
    assert [p.name for p in staged.iterdir()] == ["build.log"]  # no part file left

    resp = await collector.client.get(f"/api/v1/uploads/{lease_id}")
    assert await resp.json() == {
        "files": [{"name": "build.log", "size": len(data), "sha256": digest, "rpm": None}]
    }


async def test_streamed_body_of_unknown_length(collector: Collector) -> None:
    lease_id = await collector.lease()
    data = bytes(range(256)) * 3000  # 768 kB, below the 1 MiB test limit

    async def body() -> AsyncIterator[bytes]:
        for i in range(0, len(data), 10_000):
            yield data[i : i + 10_000]

    digest = hashlib.sha256(data).hexdigest()
    resp = await collector.client.put(
        f"/api/v1/uploads/{lease_id}/build.log",
        data=body(),
        headers=signed(lease_id, "build.log", digest),
    )
    assert resp.status == 201, await resp.text()
    assert (await resp.json())["size"] == len(data)


async def test_large_streamed_upload_keeps_its_digest_across_chunk_boundaries(
    collector: Collector,
) -> None:
    """Many spool buffers (more than are ever in flight), sent in pieces that straddle them."""
    size = (2 * spool.DEPTH + 1) * spool.CHUNK + 12_345
    collector.configure(max_upload_mb=size // 2**20 + 1)
    data = hashlib.shake_256(b"skyline").digest(size)  # no two buffers alike
    lease_id = await collector.lease()

    async def body() -> AsyncIterator[bytes]:
        for i in range(0, size, 1_000_003):  # prime: never aligned with a buffer
            yield data[i : i + 1_000_003]

    digest = hashlib.sha256(data).hexdigest()
    resp = await collector.client.put(
        f"/api/v1/uploads/{lease_id}/build.log",
        data=body(),
        headers=signed(lease_id, "build.log", digest),
    )
    assert resp.status == 201, await resp.text()
    assert await resp.json() == {"name": "build.log", "size": size, "sha256": digest}
    staged = storage.staging_dir(collector.runtime.config, uuid.UUID(lease_id))
    assert [p.name for p in staged.iterdir()] == ["build.log"]
    assert sha256_file(staged / "build.log") == digest


async def test_reupload_to_an_open_lease_is_idempotent_or_replaces(
    collector: Collector, caplog: pytest.LogCaptureFixture
) -> None:
    lease_id = await collector.lease()
    assert (await collector.upload(lease_id, "build.log", b"one")).status == 201
    again = await collector.upload(lease_id, "build.log", b"one")
    assert again.status == 200
    # A builder that resumed the lease rebuilt, and its new log has other bytes.
    with caplog.at_level(logging.INFO, logger="services.collector.routes"):
        replaced = await collector.upload(lease_id, "build.log", b"two")
    assert replaced.status == 200, await replaced.text()
    two = {"name": "build.log", "size": 3, "sha256": hashlib.sha256(b"two").hexdigest()}
    assert await replaced.json() == two
    assert "replaced build.log" in caplog.text
    staged = storage.staging_dir(collector.runtime.config, uuid.UUID(lease_id))
    assert (staged / "build.log").read_bytes() == b"two"
    assert [p.name for p in staged.iterdir()] == ["build.log"]  # no part file left
    listing = await (await collector.client.get(f"/api/v1/uploads/{lease_id}")).json()
    assert listing == {"files": [{**two, "rpm": None}]}
    # An attestation of the first bytes no longer matches what is staged: nothing is stored.
    one = {**two, "sha256": hashlib.sha256(b"one").hexdigest()}
    with pytest.raises(Reject, match="not uploaded as attested"):
        await SERVICE.handle(collector.runtime, verified(lease_id, [one]))


async def test_listing_carries_each_rpms_header(
    collector: Collector, built: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    # The verifier judges package and arch from these headers (services/verifier/checks.py).
    _, rpm_path, log_path = built
    lease_id = await collector.lease()
    await upload_results(collector, lease_id, [rpm_path, log_path])
    garbage = b"not an rpm\n" * 100
    assert (await collector.upload(lease_id, "broken-1-1.noarch.rpm", garbage)).status == 201
    listing = await (await collector.client.get(f"/api/v1/uploads/{lease_id}")).json()
    files = {f["name"]: f for f in listing["files"]}
    assert files[RPM_NAME]["rpm"] == {
        "name": "skyline-hello",
        "version": "1.0",
        "release": "1",
        "epoch": None,
        "arch": "noarch",
        "sourcerpm": f"{NVR}.src.rpm",
    }
    assert files["build.log"]["rpm"] is None
    error = files["broken-1-1.noarch.rpm"]["rpm"]["error"]
    assert error.startswith("rpmkeys -K failed for broken-1-1.noarch.rpm")
    assert str(collector.runtime.config.base_dir) not in error  # no collector paths

    # Replaced bytes get their own header: another package's RPM under the same name.
    other_srpm, [other] = build_test_package(tmp_path / "other", name="other")
    reply = await collector.upload(lease_id, RPM_NAME, other.read_bytes())
    assert reply.status == 200, await reply.text()
    listing = await (await collector.client.get(f"/api/v1/uploads/{lease_id}")).json()
    [replaced] = [f for f in listing["files"] if f["name"] == RPM_NAME]
    assert replaced["sha256"] == sha256_file(other)
    assert (replaced["rpm"]["name"], replaced["rpm"]["sourcerpm"]) == (
        "other",
        other_srpm.name,
    )


async def test_parallel_replacements_leave_row_and_file_agreeing(collector: Collector) -> None:
    lease_id = await collector.lease()
    bodies = [bytes([i]) * 200_000 for i in range(4)]
    replies = await asyncio.gather(*(collector.upload(lease_id, "build.log", b) for b in bodies))
    assert all(r.status in (200, 201) for r in replies), [r.status for r in replies]
    staged = storage.staging_dir(collector.runtime.config, uuid.UUID(lease_id))
    listing = await (await collector.client.get(f"/api/v1/uploads/{lease_id}")).json()
    (row,) = listing["files"]
    assert row["sha256"] == sha256_file(staged / "build.log")
    assert [p.name for p in staged.iterdir()] == ["build.log"]


async def test_closed_lease_refuses_reuploads(collector: Collector) -> None:
    lease_id = await collector.lease()
    assert (await collector.upload(lease_id, "build.log", b"one")).status == 201
    failed = TaskVerifiedV1(body={**verified(lease_id, []).body, "status": "failed"})
    await SERVICE.handle(collector.runtime, failed)
    for data in (b"two", b"one"):  # other bytes, or even the same ones
        conflict = await collector.upload(lease_id, "build.log", data)
        assert conflict.status == 409
        assert "takes no more uploads" in (await conflict.json())["error"]
    staged = storage.staging_dir(collector.runtime.config, uuid.UUID(lease_id))
    assert (staged / "build.log").read_bytes() == b"one"
    listing = await (await collector.client.get(f"/api/v1/uploads/{lease_id}")).json()
    assert [f["sha256"] for f in listing["files"]] == [hashlib.sha256(b"one").hexdigest()]


async def test_digest_mismatch_is_refused_and_removed(collector: Collector) -> None:
    lease_id = await collector.lease()
    resp = await collector.upload(lease_id, "build.log", b"data", digest="0" * 64)
    assert resp.status == 422
    assert "error" in await resp.json()
    staged = storage.staging_dir(collector.runtime.config, uuid.UUID(lease_id))
    assert list(staged.iterdir()) == []
    listing = await (await collector.client.get(f"/api/v1/uploads/{lease_id}")).json()
    assert listing == {"files": []}


async def test_missing_or_bad_digest_header(collector: Collector) -> None:
    lease_id = await collector.lease()
    resp = await collector.client.put(f"/api/v1/uploads/{lease_id}/build.log", data=b"x")
    assert resp.status == 400
    resp = await collector.upload(lease_id, "build.log", b"x", digest="xyz")
    assert resp.status == 400


async def test_oversize_upload_is_refused(collector: Collector) -> None:
    lease_id = await collector.lease()
    data = b"\0" * (1024 * 1024 + 1)
    resp = await collector.upload(lease_id, "big.log", data)  # declared length: refused at once
    assert resp.status == 413

    async def body() -> AsyncIterator[bytes]:  # no length: refused while streaming
        for _ in range(20):
            yield b"\0" * 100_000

    try:
        resp = await collector.client.put(
            f"/api/v1/uploads/{lease_id}/big.log",
            data=body(),
            headers=signed(lease_id, "big.log", "0" * 64),
        )
        assert resp.status == 413
    except aiohttp.ClientOSError:
        pass  # the server may close the connection before the client finished sending
    staged = storage.staging_dir(collector.runtime.config, uuid.UUID(lease_id))
    assert list(staged.iterdir()) == []


async def test_unknown_and_malformed_leases(collector: Collector) -> None:
    resp = await collector.upload(str(uuid.uuid4()), "build.log", b"x")
    assert resp.status == 404
    assert (await resp.json())["error"] == "unknown lease"
    assert (await collector.client.get(f"/api/v1/uploads/{uuid.uuid4()}")).status == 404
    assert (await collector.upload("not-a-uuid", "build.log", b"x")).status == 400


def _staged(collector: Collector, lease_id: str) -> list[str]:
    folder = storage.staging_dir(collector.runtime.config, uuid.UUID(lease_id))
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def _ago(minutes: float) -> str:
    when = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=minutes)
    return when.isoformat()


async def test_unsigned_upload_is_unauthorised(collector: Collector) -> None:
    lease_id = await collector.lease()
    digest = hashlib.sha256(b"x").hexdigest()
    resp = await collector.upload(lease_id, "build.log", b"x", headers={"X-Skyline-Sha256": digest})
    assert resp.status == 401
    reason = (await resp.json())["error"]
    assert "signed with the host's enrolled key" in reason
    assert "X-Skyline-Host" in reason and "X-Skyline-Signature" in reason
    partial = {
        k: v for k, v in signed(lease_id, "build.log", digest).items() if "Signature" not in k
    }
    resp = await collector.upload(lease_id, "build.log", b"x", headers=partial)
    assert resp.status == 401
    assert (await resp.json())["error"].endswith("missing X-Skyline-Signature")
    garbled = {**signed(lease_id, "build.log", digest), "X-Skyline-Signed-At": "yesterday"}
    assert (await collector.upload(lease_id, "build.log", b"x", headers=garbled)).status == 401
    assert _staged(collector, lease_id) == []


@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(lambda lease, d: signed(lease, "build.log", d, key=OTHER_KEY), id="other key"),
        # A real signature of the host, but for another file, digest or lease: not this upload.
        pytest.param(lambda lease, d: signed(lease, "root.log", d), id="other name"),
        pytest.param(lambda lease, d: signed(lease, "build.log", "0" * 64), id="other digest"),
        pytest.param(lambda lease, d: signed(str(uuid.uuid4()), "build.log", d), id="other lease"),
    ],
)
async def test_upload_not_signed_by_the_leased_hosts_key_is_forbidden(
    collector: Collector, forge: object
) -> None:
    lease_id = await collector.lease()
    digest = hashlib.sha256(b"evil").hexdigest()
    headers = forge(lease_id, digest)  # type: ignore[operator]
    headers["X-Skyline-Sha256"] = digest
    resp = await collector.upload(lease_id, "build.log", b"evil", headers=headers)
    assert resp.status == 403
    assert (await resp.json())["error"] == "upload not signed by the leased host's key"
    assert _staged(collector, lease_id) == []


async def test_upload_from_another_host_is_forbidden(collector: Collector) -> None:
    lease_id = await collector.lease()
    # builder2 is enrolled and signs correctly, but the lease is builder1's.
    collector.registry.hosts["builder2"] = {
        "public_key": public_key_b64(OTHER_KEY),
        "state": "online",
    }
    digest = hashlib.sha256(b"x").hexdigest()
    headers = signed(lease_id, "build.log", digest, key=OTHER_KEY, host="builder2")
    resp = await collector.upload(lease_id, "build.log", b"x", headers=headers)
    assert resp.status == 403
    assert (await resp.json())["error"] == f"lease {lease_id} belongs to {HOST}, not builder2"
    assert collector.registry.lookups == []  # refused before asking anyone
    assert _staged(collector, lease_id) == []


@pytest.mark.parametrize("minutes", [11, -11], ids=["stale", "from the future"])
async def test_upload_signed_too_long_ago_or_ahead_is_forbidden(
    collector: Collector, minutes: float
) -> None:
    lease_id = await collector.lease()
    digest = hashlib.sha256(b"x").hexdigest()
    headers = signed(lease_id, "build.log", digest, signed_at=_ago(minutes))
    resp = await collector.upload(lease_id, "build.log", b"x", headers=headers)
    assert resp.status == 403
    assert "check the builder's clock" in (await resp.json())["error"]
    assert collector.registry.lookups == []
    # Inside the window, a little skew either way is fine.
    for minutes in (9, -9):
        headers = signed(lease_id, "build.log", digest, signed_at=_ago(minutes))
        resp = await collector.upload(lease_id, "build.log", b"x", headers=headers)
        assert resp.status in (200, 201), await resp.text()


@pytest.mark.parametrize(
    ("state", "reason"), [(None, "not enrolled"), ("quarantined", "quarantined")]
)
async def test_unknown_or_quarantined_host_is_forbidden(
    collector: Collector, state: str | None, reason: str
) -> None:
    lease_id = await collector.lease()
    if state is None:
        del collector.registry.hosts[HOST]
    else:
        collector.registry.hosts[HOST]["state"] = state
    resp = await collector.upload(lease_id, "build.log", b"x")
    assert resp.status == 403
    assert (await resp.json())["error"] == f"host {HOST} is {reason}"
    assert _staged(collector, lease_id) == []


async def test_registry_trouble_is_a_retryable_503(collector: Collector) -> None:
    lease_id = await collector.lease()
    collector.registry.status = 500
    resp = await collector.upload(lease_id, "build.log", b"x")
    assert resp.status == 503
    assert "try again" in (await resp.json())["error"]
    assert _staged(collector, lease_id) == []
    collector.registry.status = 200  # a failed lookup is not remembered
    assert (await collector.upload(lease_id, "build.log", b"x")).status == 201


async def test_unreachable_registry_is_a_retryable_503(collector: Collector) -> None:
    runtime = collector.runtime
    unreachable = dataclasses.replace(runtime.config.collector, registry_url="http://127.0.0.1:9")
    runtime.config = dataclasses.replace(runtime.config, collector=unreachable)
    lease_id = await collector.lease()
    resp = await collector.upload(lease_id, "build.log", b"x")
    assert resp.status == 503
    assert _staged(collector, lease_id) == []


async def test_host_key_is_looked_up_once_per_ttl(collector: Collector) -> None:
    lease_id = await collector.lease()
    for name in ("a.log", "b.log", "c.log"):
        resp = await collector.upload(lease_id, name, name.encode())
        assert resp.status == 201, await resp.text()
    assert collector.registry.lookups == [HOST]
    assert _staged(collector, lease_id) == ["a.log", "b.log", "c.log"]


async def _builder_upload(collector: Collector, tmp_path: Path, key: Ed25519PrivateKey) -> str:
    """Upload build.log with the builder's own client, as host builder1 signing with `key`."""
    lease_id = await collector.lease()
    path = tmp_path / "build.log"
    path.write_bytes(b"log")
    await builder_client.upload(
        collector.runtime.http,
        str(collector.client.make_url("")),
        lease_id,
        path,
        hashlib.sha256(b"log").hexdigest(),
        host=HOST,
        key=key,
        base_delay=0.01,
    )
    return lease_id


async def test_builder_client_takes_403_as_final(collector: Collector, tmp_path: Path) -> None:
    with pytest.raises(builder_client.UploadError, match="HTTP 403: upload not signed by"):
        await _builder_upload(collector, tmp_path, OTHER_KEY)
    assert collector.registry.lookups == [HOST]  # one try: no retries


async def test_builder_client_waits_out_a_503(collector: Collector, tmp_path: Path) -> None:
    collector.registry.status = 503
    upload = asyncio.create_task(_builder_upload(collector, tmp_path, HOST_KEY))
    for _ in range(500):
        if len(collector.registry.lookups) >= 2 or upload.done():
            break
        await asyncio.sleep(0.01)
    collector.registry.status = 200
    lease_id = await asyncio.wait_for(upload, 10)
    assert len(collector.registry.lookups) >= 3
    assert _staged(collector, lease_id) == ["build.log"]


async def test_builder_client_waits_out_a_429(collector: Collector, tmp_path: Path) -> None:
    limiter = RateLimiter(1200)  # 20 a second
    while limiter.take(HOST) == 0:  # the host has spent its burst
        pass
    collector.runtime.state[routes._RATE_KEY] = limiter
    lease_id = await asyncio.wait_for(_builder_upload(collector, tmp_path, HOST_KEY), 10)
    assert _staged(collector, lease_id) == ["build.log"]


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        # aiohttp decodes %2F and %2E before routing, so these reach the handler as
        # "..", "../x", "/etc/passwd", "a/b": the FILE_NAME check must refuse them.
        ("%2e%2e", 400),
        ("..%2fx", 400),
        ("%2e%2e%2fx", 400),
        ("%2Fetc%2Fpasswd", 400),
        ("a%2fb", 400),
        (".hidden", 400),
        ("a%00b", 400),
        ("a%0Ab", 400),
        # With real slashes no upload route matches ("../x" is resolved by the client to
        # /api/v1/uploads/x, the listing, which takes no PUT).
        ("../x", 405),
        ("a/b", 404),
        ("/etc/passwd", 404),
    ],
)
async def test_names_cannot_escape_the_staging_dir(
    collector: Collector, raw: str, status: int
) -> None:
    lease_id = await collector.lease()
    url = yarl.URL(f"/api/v1/uploads/{lease_id}/{raw}", encoded=True)  # sent as written
    resp = await collector.client.put(url, data=b"evil", headers={"X-Skyline-Sha256": "0" * 64})
    assert resp.status == status, await resp.text()
    base = Path(collector.runtime.config.base_dir)
    assert [p for p in base.rglob("*") if p.is_file()] == []


async def test_files_per_lease_are_limited(collector: Collector) -> None:
    collector.configure(max_files_per_lease=3)
    lease_id = await collector.lease()
    for name in ("a.log", "b.log", "c.log"):
        assert (await collector.upload(lease_id, name, name.encode())).status == 201
    resp = await collector.upload(lease_id, "d.log", b"d")
    assert resp.status == 413
    assert (await resp.json())["error"] == (
        "d.log: the lease holds 3 files already, the most a lease may hold"
        " (max_files_per_lease = 3)"
    )
    assert _staged(collector, lease_id) == ["a.log", "b.log", "c.log"]
    # Replacing a staged file adds none; another lease has its own count.
    assert (await collector.upload(lease_id, "a.log", b"a again")).status == 200
    assert (await collector.upload(await collector.lease(), "d.log", b"d")).status == 201


async def test_parallel_uploads_cannot_overrun_the_file_limit(collector: Collector) -> None:
    collector.configure(max_files_per_lease=2)
    lease_id = await collector.lease()
    names = [f"{i}.log" for i in range(6)]
    answers = await asyncio.gather(*(collector.upload(lease_id, n, n.encode()) for n in names))
    assert sorted(r.status for r in answers) == [201, 201, 413, 413, 413, 413]
    assert len(_staged(collector, lease_id)) == 2  # and no part file left behind
    staged = await collector.runtime.pool.fetchval("SELECT count(*) FROM staged_files")
    assert staged == 2


async def test_bytes_per_lease_are_limited(collector: Collector) -> None:
    collector.configure(max_lease_mb=1)  # the fixture's max_upload_mb is 1 too
    lease_id = await collector.lease()
    kb = 1024
    assert (await collector.upload(lease_id, "a.log", b"a" * 600 * kb)).status == 201
    resp = await collector.upload(lease_id, "b.log", b"b" * 600 * kb)
    assert resp.status == 413
    left = 1024 * kb - 600 * kb
    assert (await resp.json())["error"] == (
        f"b.log: {600 * kb} bytes would take the lease past its {1024 * kb} byte total"
        f" (max_lease_mb); {left} bytes are left"
    )
    # Streamed without a Content-Length: refused once the body passes what is left.
    data = b"b" * 600 * kb

    async def body() -> AsyncIterator[bytes]:
        for i in range(0, len(data), 100 * kb):
            yield data[i : i + 100 * kb]

    digest = hashlib.sha256(data).hexdigest()
    resp = await collector.client.put(
        f"/api/v1/uploads/{lease_id}/b.log", data=body(), headers=signed(lease_id, "b.log", digest)
    )
    assert resp.status == 413
    assert (await resp.json())["error"] == (
        f"b.log: more than the {left} bytes left of the lease's total (max_lease_mb)"
    )
    assert _staged(collector, lease_id) == ["a.log"]
    # What fits is taken, and a replaced file's old bytes do not count against its new ones.
    assert (await collector.upload(lease_id, "b.log", b"b" * 400 * kb)).status == 201
    assert (
        await collector.upload(lease_id, "a.log", b"A" * 624 * kb)
    ).status == 200  # exactly full
    assert (await collector.upload(lease_id, "c.log", b"c")).status == 413


async def test_host_upload_rate_is_limited(collector: Collector) -> None:
    collector.configure(host_uploads_per_minute=3)
    lease_id = await collector.lease()
    # Forged requests are refused before the limit: they cannot spend the host's share.
    for _ in range(5):
        forged = signed(lease_id, "x.log", hashlib.sha256(b"x").hexdigest(), key=OTHER_KEY)
        assert (await collector.upload(lease_id, "x.log", b"x", headers=forged)).status == 403
    for name in ("a.log", "b.log", "c.log"):
        assert (await collector.upload(lease_id, name, name.encode())).status == 201
    resp = await collector.upload(lease_id, "d.log", b"d")
    assert resp.status == 429
    assert (await resp.json())["error"] == (
        f"host {HOST} sends more than 3 uploads a minute (host_uploads_per_minute); retry in 20 s"
    )
    assert resp.headers["Retry-After"] == "20"
    assert _staged(collector, lease_id) == ["a.log", "b.log", "c.log"]
    # Another host has its own share.
    collector.registry.hosts["builder2"] = {
        "public_key": public_key_b64(OTHER_KEY),
        "state": "online",
    }
    other = await collector.lease(host="builder2")
    digest = hashlib.sha256(b"d").hexdigest()
    headers = signed(other, "d.log", digest, key=OTHER_KEY, host="builder2")
    assert (await collector.upload(other, "d.log", b"d", headers=headers)).status == 201


@pytest.mark.parametrize("length", [240, 255])
async def test_long_file_names_that_fit_are_staged(collector: Collector, length: int) -> None:
    lease_id = await collector.lease()
    name = "a" * (length - 4) + ".log"
    resp = await collector.upload(lease_id, name, b"long")
    assert resp.status == 201, await resp.text()
    assert _staged(collector, lease_id) == [name]  # under its full name, no part file left


async def test_file_names_too_long_for_the_file_system_are_a_400(
    collector: Collector, built: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # As on a file system with shorter names than the pattern allows (eCryptfs takes 143).
    monkeypatch.setattr(spool, "name_max", lambda folder: 143)
    lease_id = await collector.lease()
    name = "a" * 140 + ".log"
    resp = await collector.upload(lease_id, name, b"x")
    assert resp.status == 400
    assert (await resp.json())["error"] == (
        "the file name is 144 bytes long; the collector's file system takes at most 143"
    )
    assert _staged(collector, lease_id) == []
    assert await collector.runtime.pool.fetchval("SELECT count(*) FROM staged_files") == 0
    # Longer than any file system takes: the name pattern refuses it first.
    resp = await collector.upload(lease_id, "a" * 256, b"x")
    assert resp.status == 400
    assert (await resp.json())["error"].endswith("is not a valid file name")
    # Sources too: an N-V-R.src.rpm name past the limit.
    srpm = built[0]
    token = await collector.new_owner("alice")
    resp = await collector.put_source(srpm, token, name="x" * 140 + "-1-1.src.rpm")
    assert resp.status == 400
    assert "the collector's file system takes at most 143" in (await resp.json())["error"]


async def upload_results(collector: Collector, lease_id: str, files: list[Path]) -> list[dict]:
    entries = []
    for path in files:
        resp = await collector.upload(lease_id, path.name, path.read_bytes())
        assert resp.status == 201, await resp.text()
        entries.append(await resp.json())
    return entries


def verified(lease_id: str, files: list[dict], nvr: str = NVR) -> TaskVerifiedV1:
    return TaskVerifiedV1(
        body={
            "task_id": 42,
            "build_id": 7,
            "lease_id": lease_id,
            "host": HOST,
            "arch": "x86_64",
            "nvr": nvr,
            "status": "succeeded",
            "files": files,
            "result_digest": "b" * 64,
        }
    )


async def test_verified_results_are_stored_where_koji_expects_them(
    collector: Collector, built: tuple[Path, Path, Path]
) -> None:
    _, rpm_path, log_path = built
    lease_id = await collector.lease()
    files = await upload_results(collector, lease_id, [rpm_path, log_path])
    await SERVICE.handle(collector.runtime, verified(lease_id, files))

    info = read_rpm_info(rpm_path)
    pathinfo = koji.PathInfo(topdir=str(collector.topdir))
    binfo = {"name": info.name, "version": info.version, "release": info.release}
    rinfo = {**binfo, "arch": info.arch}
    stored_rpm = Path(pathinfo.build(binfo)) / pathinfo.rpm(rinfo)
    assert sha256_file(stored_rpm) == files[0]["sha256"]
    stored_log = Path(pathinfo.build_logs(binfo)) / "x86_64/build.log"
    assert sha256_file(stored_log) == files[1]["sha256"]

    (message,) = await collector.outbox()
    msg = fm.load_message(message)
    assert isinstance(msg, BuildStoredV1)
    assert msg.body == {
        "build_id": 7,
        "task_id": 42,
        "owner": "alice",
        "nvr": NVR,
        "arch": "x86_64",
        "host": HOST,
        "files": [
            {
                "name": RPM_NAME,
                "path": str(stored_rpm.relative_to(collector.topdir)),
                "sha256": files[0]["sha256"],
                "size": files[0]["size"],
                "arch": "noarch",
            },
            {
                "name": "build.log",
                "path": str(stored_log.relative_to(collector.topdir)),
                "sha256": files[1]["sha256"],
                "size": files[1]["size"],
                "arch": "x86_64",
            },
        ],
    }
    assert await collector.stored_rows() == 2

    # The lease API says so, with the files as build.stored listed them.
    resp = await collector.client.get(f"/api/v1/leases/{lease_id}")
    assert resp.status == 200
    answer = await resp.json()
    assert (answer["lease_id"], answer["state"]) == (lease_id, "stored")
    assert {f["name"]: f for f in answer["files"]} == {f["name"]: f for f in msg.body["files"]}

    # Told again (a new message): the same announcement again, in case the first was lost;
    # nothing is stored twice.
    again = verified(lease_id, files)
    await SERVICE.handle(collector.runtime, again)
    assert [m["body"] for m in await collector.outbox()] == [msg.body] * 2
    # A redelivery of that message (same id) is skipped.
    await SERVICE.handle(collector.runtime, fm.load_message(json.loads(fm.dumps(again))))
    assert len(await collector.outbox()) == 2
    assert await collector.stored_rows() == 2

    # The lease takes no more uploads, and the sweep removes its staging folder.
    assert (await collector.upload(lease_id, "late.log", b"x")).status == 409
    staged = storage.staging_dir(collector.runtime.config, uuid.UUID(lease_id))
    assert staged.is_dir()
    await cleanup.sweep_staging(collector.runtime)
    assert not staged.exists()
    assert sha256_file(stored_rpm) == files[0]["sha256"]


async def test_rpm_of_another_srpm_is_rejected_and_nothing_stored(
    collector: Collector, built: tuple[Path, Path, Path]
) -> None:
    _, rpm_path, log_path = built
    lease_id = await collector.lease(nvr="other-2.0-1")
    files = await upload_results(collector, lease_id, [rpm_path, log_path])
    with pytest.raises(Reject, match=r"not other-2\.0-1\.src\.rpm"):
        await SERVICE.handle(collector.runtime, verified(lease_id, files, nvr="other-2.0-1"))
    assert await collector.outbox() == []
    assert await collector.stored_rows() == 0
    assert not collector.topdir.exists()


async def test_attested_digest_that_was_not_uploaded_is_rejected(
    collector: Collector, built: tuple[Path, Path, Path]
) -> None:
    _, rpm_path, _ = built
    lease_id = await collector.lease()
    files = await upload_results(collector, lease_id, [rpm_path])
    with pytest.raises(Reject, match="not uploaded as attested"):
        await SERVICE.handle(
            collector.runtime, verified(lease_id, [{**files[0], "sha256": "c" * 64}])
        )
    with pytest.raises(Reject, match="unknown here"):
        await SERVICE.handle(collector.runtime, verified(str(uuid.uuid4()), files))
    assert await collector.stored_rows() == 0


async def test_conflicting_existing_file_stores_nothing(
    collector: Collector, built: tuple[Path, Path, Path]
) -> None:
    _, rpm_path, log_path = built
    lease_id = await collector.lease()
    files = await upload_results(collector, lease_id, [rpm_path, log_path])
    # Koji already holds another build.log for this N-V-R: immutable, so refuse everything.
    log_dest = collector.topdir / "packages/skyline-hello/1.0/1/data/logs/x86_64/build.log"
    log_dest.parent.mkdir(parents=True)
    log_dest.write_text("another build\n")
    with pytest.raises(Reject, match="already exists"):
        await SERVICE.handle(collector.runtime, verified(lease_id, files))
    assert not (collector.topdir / f"packages/skyline-hello/1.0/1/noarch/{RPM_NAME}").exists()
    assert await collector.outbox() == []


async def test_noarch_subpackage_of_a_sibling_task_is_kept(
    collector: Collector, built: tuple[Path, Path, Path], built_elsewhere: Path
) -> None:
    _, rpm_path, log_path = built
    first = await collector.lease()
    await SERVICE.handle(
        collector.runtime,
        verified(first, await upload_results(collector, first, [rpm_path, log_path])),
    )
    # The aarch64 task of the same build made the same noarch subpackage, with other bytes
    # (e.g. its OPTFLAGS): Koji keeps one copy, and so does the collector.
    second = await collector.lease(task_id=43, arch="aarch64")
    files = await upload_results(collector, second, [built_elsewhere, log_path])
    body = {**verified(second, files).body, "task_id": 43, "arch": "aarch64"}
    await SERVICE.handle(collector.runtime, TaskVerifiedV1(body=body))
    stored = [fm.load_message(m) for m in await collector.outbox()]
    assert [m.body["arch"] for m in stored] == ["x86_64", "aarch64"]
    assert [f["path"] for f in stored[1].body["files"]] == [
        "packages/skyline-hello/1.0/1/data/logs/aarch64/build.log"
    ]
    kept = collector.topdir / f"packages/skyline-hello/1.0/1/noarch/{RPM_NAME}"
    assert sha256_file(kept) == sha256_file(rpm_path)


async def test_lease_api_says_what_became_of_a_lease(collector: Collector) -> None:
    lease_id = await collector.lease()
    assert (await collector.upload(lease_id, "build.log", b"x")).status == 201
    resp = await collector.client.get(f"/api/v1/leases/{lease_id}")
    # Staged uploads are not stored files.
    assert await resp.json() == {"lease_id": lease_id, "state": "open", "files": []}
    failed = TaskVerifiedV1(body={**verified(lease_id, []).body, "status": "failed"})
    await SERVICE.handle(collector.runtime, failed)
    resp = await collector.client.get(f"/api/v1/leases/{lease_id.upper()}")
    assert await resp.json() == {"lease_id": lease_id, "state": "failed", "files": []}
    unknown = await collector.client.get(f"/api/v1/leases/{uuid.uuid4()}")
    assert (unknown.status, (await unknown.json())["error"]) == (404, "unknown lease")
    bad = await collector.client.get("/api/v1/leases/not-a-uuid")
    assert (bad.status, (await bad.json())["error"]) == (400, "the lease id is not a UUID")


async def test_failed_task_closes_the_lease(collector: Collector) -> None:
    lease_id = await collector.lease()
    msg = verified(lease_id, [])
    failed = TaskVerifiedV1(body={**msg.body, "status": "failed"})
    await SERVICE.handle(collector.runtime, failed)
    assert await collector.outbox() == []
    assert (await collector.upload(lease_id, "build.log", b"x")).status == 409


async def test_source_upload_and_download(
    collector: Collector, built: tuple[Path, Path, Path]
) -> None:
    srpm, rpm_path, _ = built
    token = await collector.new_owner("alice")
    data = srpm.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    resp = await collector.put_source(srpm, token)
    assert resp.status == 201, await resp.text()
    assert await resp.json() == {
        "url": f"http://c/sources/{digest}/{srpm.name}",
        "sha256": digest,
    }
    stored = storage.sources_dir(collector.runtime.config) / digest / srpm.name
    assert stored == collector.topdir / "work/skyline-sources" / digest / srpm.name
    assert stored.read_bytes() == data
    assert await source_owners(collector) == {digest: "alice"}
    assert (await collector.put_source(srpm, token)).status == 200  # idempotent

    resp = await collector.client.get(f"/sources/{digest}/{srpm.name}")
    assert resp.status == 200
    assert await resp.read() == data
    assert (await collector.client.get(f"/sources/{digest}/other-1-1.src.rpm")).status == 404
    assert (await collector.client.get(f"/sources/{'0' * 64}/{srpm.name}")).status == 404

    # Wrong digest, a binary RPM, a name that is not the header's, not an RPM at all.
    headers = {"Authorization": f"Bearer {token}"}
    bad = await collector.client.put(
        f"/api/v1/sources/{'0' * 64}/{srpm.name}", data=data, headers=headers
    )
    assert bad.status == 422
    resp = await collector.put_source(rpm_path, token, name=f"{NVR}.src.rpm")
    assert resp.status == 422
    resp = await collector.put_source(srpm, token, name="fake-1-1.src.rpm")
    assert resp.status == 409  # these bytes are stored under their real name
    assert (
        await collector.put_source(srpm, token, name="junk-1-1.src.rpm", data=b"no")
    ).status == 422
    assert (await collector.put_source(srpm, token, name="x.rpm")).status == 400
    assert await source_owners(collector) == {digest: "alice"}


async def source_owners(collector: Collector) -> dict[str, str]:
    rows = await collector.runtime.pool.fetch("SELECT sha256, owner FROM sources")
    return {r["sha256"]: r["owner"] for r in rows}


def stored_sources(collector: Collector) -> list[str]:
    folder = storage.sources_dir(collector.runtime.config)
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


@pytest.fixture(scope="module")
def srpms(built: tuple[Path, Path, Path], tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Four SRPMs of the example, each with other bytes (their recorded _topdir differs)."""
    tmp = tmp_path_factory.mktemp("srpms")
    made = [make_srpm(EXAMPLE_SPEC, tmp / str(i)) for i in range(4)]
    assert len({sha256_file(p) for p in made}) == 4
    return made


@pytest.mark.parametrize(
    "token",
    [None, "", "x" * 43, "not a token at all", "y" * 500],
    ids=["none", "empty", "unknown", "malformed", "huge"],
)
async def test_source_upload_needs_an_owner_token(
    collector: Collector, srpms: list[Path], token: str | None
) -> None:
    await collector.new_owner("alice")
    resp = await collector.put_source(srpms[0], token)
    assert resp.status == 401
    assert "token" in (await resp.json())["error"]
    assert await source_owners(collector) == {}
    assert stored_sources(collector) == []


async def test_revoked_owner_cannot_upload(collector: Collector, srpms: list[Path]) -> None:
    token = await collector.new_owner("alice")
    async with collector.registry_runtime.transaction() as ctx:
        assert await registry_owners.revoke(ctx.conn, "alice") is not None
    resp = await collector.put_source(srpms[0], token)
    assert resp.status == 401
    assert await resp.json() == {"error": "unknown or revoked owner token", "status": 401}
    assert stored_sources(collector) == []


async def test_owner_token_is_checked_once_per_ttl(collector: Collector, srpms: list[Path]) -> None:
    alice, bob = await collector.new_owner("alice"), await collector.new_owner("bob")
    for srpm, token in [(srpms[0], alice), (srpms[1], alice), (srpms[2], bob)]:
        resp = await collector.put_source(srpm, token)
        assert resp.status == 201, await resp.text()
    assert collector.registry.whoami_calls == 2  # one per token
    assert sorted((await source_owners(collector)).values()) == ["alice", "alice", "bob"]


async def test_source_upload_while_the_registry_is_down_is_a_503(
    collector: Collector, srpms: list[Path]
) -> None:
    token = await collector.new_owner("alice")
    collector.configure(registry_url="http://127.0.0.1:9")
    resp = await collector.put_source(srpms[0], token)
    assert resp.status == 503
    assert "try again" in (await resp.json())["error"]
    assert stored_sources(collector) == []


async def test_owner_upload_count_per_hour_is_limited(
    collector: Collector, srpms: list[Path]
) -> None:
    collector.configure(source_uploads_per_hour=2)
    alice, bob = await collector.new_owner("alice"), await collector.new_owner("bob")
    for srpm in srpms[:2]:
        assert (await collector.put_source(srpm, alice)).status == 201
    resp = await collector.put_source(srpms[2], alice)
    assert resp.status == 429
    assert (await resp.json())["error"] == (
        "owner alice uploaded 2 sources in the last hour, the most allowed"
        " (source_uploads_per_hour = 2); try again later"
    )
    assert stored_sources(collector) == [srpms[0].name, srpms[1].name]  # one per digest folder
    assert (await collector.put_source(srpms[0], alice)).status == 200  # stored already: free
    assert (await collector.put_source(srpms[3], bob)).status == 201  # bob's own quota
    # An hour later alice may upload again.
    await collector.runtime.pool.execute(
        "UPDATE sources SET created_at = now() - interval '61 minutes' WHERE owner = 'alice'"
    )
    assert (await collector.put_source(srpms[2], alice)).status == 201


async def test_owner_bytes_per_day_are_limited(collector: Collector, srpms: list[Path]) -> None:
    collector.configure(source_mb_per_day=1)
    token = await collector.new_owner("alice")
    size = srpms[0].stat().st_size
    # Earlier today alice stored all but a few bytes of her day's megabyte.
    await collector.runtime.pool.execute(
        "INSERT INTO sources (sha256, name, size, owner, created_at)"
        " VALUES ($1, 'old-1-1.src.rpm', $2, 'alice', now() - interval '2 hours')",
        "e" * 64,
        1024 * 1024 - size + 1,
    )
    resp = await collector.put_source(srpms[0], token)
    assert resp.status == 429
    assert (await resp.json())["error"] == (
        f"owner alice may upload {size - 1} more bytes today, not {size}"
        " (source_mb_per_day = 1); try again later"
    )
    assert stored_sources(collector) == []
    # Streamed without a Content-Length: refused once the body passes what is left.
    data = srpms[0].read_bytes()

    async def body() -> AsyncIterator[bytes]:
        yield data

    url = f"/api/v1/sources/{hashlib.sha256(data).hexdigest()}/{srpms[0].name}"
    resp = await collector.client.put(
        url, data=body(), headers={"Authorization": f"Bearer {token}"}
    )
    assert resp.status == 429
    assert "more bytes today" in (await resp.json())["error"]
    assert stored_sources(collector) == []
    # A day later those bytes no longer count.
    await collector.runtime.pool.execute(
        "UPDATE sources SET created_at = now() - interval '25 hours' WHERE owner = 'alice'"
    )
    assert (await collector.put_source(srpms[0], token)).status == 201


async def facts_of(collector: Collector, lease_id: str) -> tuple[int, dict]:
    resp = await collector.client.get(f"/api/v1/leases/{lease_id}/facts")
    return resp.status, await resp.json()


async def test_facts_of_staged_rpms_are_what_the_verifier_compares(
    collector: Collector, built: tuple[Path, Path, Path], built_elsewhere: Path
) -> None:
    _, rpm_path, log_path = built
    lease_id = await collector.lease()
    await upload_results(collector, lease_id, [rpm_path, log_path])
    status, answer = await facts_of(collector, lease_id)
    assert status == 200
    # Logs are not compared; each RPM comes with the digest of the bytes read.
    assert answer["lease_id"] == lease_id
    [entry] = answer["rpms"]
    assert (entry["name"], entry["sha256"]) == (RPM_NAME, sha256_file(rpm_path))
    assert set(entry) == {"name", "sha256", "nevra", "files", "deps", "tags"}
    assert facts_from_json(entry) == read_rpm_facts(rpm_path)

    # The same package rebuilt on another build host: other bytes, the same comparison key.
    elsewhere = await collector.lease()
    await upload_results(collector, elsewhere, [built_elsewhere])
    _, other = await facts_of(collector, elsewhere)
    assert other["rpms"][0]["sha256"] != entry["sha256"]
    keys = {comparison_key([facts_from_json(r) for r in a["rpms"]]) for a in (answer, other)}
    assert len(keys) == 1

    status, unknown = await facts_of(collector, str(uuid.uuid4()))
    assert (status, unknown["error"]) == (404, "unknown lease")
    status, bad = await facts_of(collector, "not-a-uuid")
    assert (status, bad["error"]) == (400, "the lease id is not a UUID")


async def test_an_rpm_that_cannot_be_read_is_a_422(collector: Collector) -> None:
    lease_id = await collector.lease()
    assert (await collector.upload(lease_id, RPM_NAME, b"not an rpm")).status == 201
    status, answer = await facts_of(collector, lease_id)
    assert status == 422
    assert answer["error"].startswith("not an intact RPM: ") and RPM_NAME in answer["error"]
    assert str(collector.runtime.config.path(".")) not in answer["error"]  # no server paths


async def test_a_tasks_other_leases_stay_until_it_is_stored_then_go(
    collector: Collector, built: tuple[Path, Path, Path], built_elsewhere: Path
) -> None:
    _, rpm_path, log_path = built
    first, replica = await collector.lease(), await collector.lease()  # both of task 42
    waiting = await collector.lease(task_id=43)  # a task still waiting for agreement
    files = await upload_results(collector, first, [rpm_path, log_path])
    for lease_id in (replica, waiting):
        await upload_results(collector, lease_id, [built_elsewhere])

    # Not accepted yet: the sweep leaves every lease's uploads for the verifier to compare.
    await cleanup.sweep_staging(collector.runtime)
    assert [_staged(collector, x) for x in (first, replica, waiting)] == [
        sorted([RPM_NAME, "build.log"]),
        [RPM_NAME],
        [RPM_NAME],
    ]
    assert (await facts_of(collector, replica))[0] == 200

    # Accepted from the first lease: the replica is superseded and swept with it.
    await SERVICE.handle(collector.runtime, verified(first, files))
    states = {}
    for lease_id in (first, replica, waiting):
        resp = await collector.client.get(f"/api/v1/leases/{lease_id}")
        states[lease_id] = (await resp.json())["state"]
    assert states == {first: "stored", replica: "superseded", waiting: "open"}
    assert (await collector.upload(replica, "late.log", b"x")).status == 409
    await cleanup.sweep_staging(collector.runtime)
    assert [_staged(collector, x) for x in (first, replica, waiting)] == [[], [], [RPM_NAME]]
    status, gone = await facts_of(collector, replica)
    assert (status, gone["error"]) == (404, f"the uploads of lease {replica} were removed")
    assert (await facts_of(collector, waiting))[0] == 200
