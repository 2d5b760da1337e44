"""The verifier judging uploads made to the real collector (its routes and database), with
real rpmbuild-built RPMs: the contract behind the collector stand-in, and refusals of RPMs
of another package or arch with true digests, of which nothing is stored."""

from __future__ import annotations

import dataclasses
import operator
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from skyline_messages import TaskFinishedV1, TaskLeasedV1, TaskMismatchV1, TaskVerifiedV1

from services.builder.client import upload_headers
from services.collector import storage
from services.collector.__main__ import SERVICE as COLLECTOR
from services.common.config import Config
from services.common.rpmfiles import result_set_digest, sha256_file
from services.common.service import Runtime
from services.common.signing import public_key_b64, sign_body
from services.common.testing import (
    api_client,
    build_test_package,
    outbox_messages,
    service_runtime,
)
from services.verifier import peers as verifier_peers
from services.verifier.__main__ import SERVICE as VERIFIER

pytestmark = pytest.mark.integration

HOST = "builder-1"
KEY = Ed25519PrivateKey.generate()
NVR = "hello-1.0-1"


@dataclasses.dataclass(frozen=True)
class Built:
    srpm: Path
    rpms: list[Path]  # hello-1.0-1 for x86_64, with a noarch subpackage
    other: Path  # other-1.0-1.x86_64.rpm: another package
    aarch64: Path  # hello-1.0-1.aarch64.rpm: the package, another arch
    log: Path


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    tmp = tmp_path_factory.mktemp("packages")
    srpm, rpms = build_test_package(
        tmp / "hello", name="hello", arch="x86_64", subpackages={"doc": "BuildArch: noarch"}
    )
    [other] = build_test_package(tmp / "other", name="other", arch="x86_64")[1]
    [aarch64] = build_test_package(tmp / "aarch64", name="hello", arch="aarch64")[1]
    log = tmp / "build.log"
    log.write_text("+ rpmbuild --rebuild hello-1.0-1.src.rpm\n")
    return Built(srpm, rpms, other, aarch64, log)


@dataclasses.dataclass
class System:
    verifier: Runtime
    collector: Runtime
    client: TestClient  # the collector's HTTP API, as builders and the verifier reach it
    srpm_sha256: str

    async def lease(self, arch: str = "x86_64") -> TaskLeasedV1:
        body = {
            "task_id": 1,
            "build_id": 1,
            "lease_id": str(uuid.uuid4()),
            "host": HOST,
            "arch": arch,
            "owner": "alice",
            "nvr": NVR,
            "srpm_url": f"http://127.0.0.1:1/sources/{NVR}.src.rpm",
            "srpm_sha256": self.srpm_sha256,
            "release": "any",
            "scratch": False,
            "lease_expires": "2099-01-01T00:00:00+00:00",
        }
        msg = TaskLeasedV1(body=body, topic=TaskLeasedV1.topic_for(HOST))
        await VERIFIER.handle(self.verifier, msg)
        await COLLECTOR.handle(self.collector, msg)
        return msg

    async def upload(self, lease: TaskLeasedV1, paths: list[Path]) -> list[dict[str, Any]]:
        """Upload as the leased host does (signed); return the attested file entries."""
        files = []
        for path in paths:
            entry = {"name": path.name, "size": path.stat().st_size, "sha256": sha256_file(path)}
            lease_id = lease.body["lease_id"]
            headers = upload_headers(lease_id, path.name, entry["sha256"], host=HOST, key=KEY)
            url = f"/api/v1/uploads/{lease_id}/{path.name}"
            resp = await self.client.put(url, data=path.read_bytes(), headers=headers)
            assert resp.status == 201, await resp.text()
            files.append(entry)
        return files

    async def attest(self, lease: TaskLeasedV1, files: list[dict[str, Any]]) -> list[Any]:
        """The host's signed attestation of `files`; return what the verifier published."""
        rpms = [(f["name"], f["sha256"]) for f in files if f["name"].endswith(".rpm")]
        body = {
            **{k: lease.body[k] for k in ("task_id", "build_id", "lease_id", "host", "arch")},
            "nvr": NVR,
            "status": "succeeded",
            "srpm_sha256": self.srpm_sha256,
            "files": files,
            "result_digest": result_set_digest(rpms),
            "env_manifest": {"rpm": "4.18.0"},
            "env_digest": "e" * 64,
            "duration": 1.0,
        }
        before = len(await outbox_messages(self.verifier))
        await VERIFIER.handle(self.verifier, TaskFinishedV1(body=sign_body(body, KEY)))
        return (await outbox_messages(self.verifier))[before:]

    async def nothing_stored(self) -> None:
        assert await self.collector.pool.fetchval("SELECT count(*) FROM stored_files") == 0
        assert await self.collector.pool.fetchval("SELECT count(*) FROM outbox") == 0
        assert not storage.koji_topdir(self.collector.config).exists()


@pytest.fixture
async def system(runtime: Runtime, peers, config: Config, built: Built) -> AsyncIterator[System]:
    """The verifier (runtime, peers: the stand-in registry) and a real collector that asks the
    same registry for the host's key; the verifier asks that collector for the uploads."""
    peers.host_view(HOST, public_key_b64(KEY))
    collector_config = dataclasses.replace(
        config,
        collector=dataclasses.replace(config.collector, registry_url=peers.registry_url),
    )
    async with (
        service_runtime(collector_config, "collector") as collector,
        api_client(collector, COLLECTOR.routes) as client,
    ):
        runtime.config = dataclasses.replace(
            runtime.config,
            verifier=dataclasses.replace(
                runtime.config.verifier, collector_url=str(client.make_url("")).rstrip("/")
            ),
        )
        yield System(runtime, collector, client, sha256_file(built.srpm))


async def test_the_collector_lists_uploads_as_the_stand_in_does(system, peers, built) -> None:
    # The contract behind conftest's Peers.listed: what the verifier reads from the real
    # collector for real RPMs is what the stand-in serves for the same attested files.
    lease = await system.lease()
    files = await system.upload(lease, [*built.rpms, built.log])
    staged = await verifier_peers.staged_files(
        system.verifier.http, system.verifier.config.verifier.collector_url, lease.body["lease_id"]
    )
    stand_in = [peers.listed(f, f"{NVR}.src.rpm") for f in files]
    by_name = operator.itemgetter("name")
    assert sorted(staged, key=by_name) == sorted(stand_in, key=by_name)


async def test_an_honest_result_is_verified(system, built) -> None:
    lease = await system.lease()
    files = await system.upload(lease, [*built.rpms, built.log])
    [verified] = await system.attest(lease, files)
    assert type(verified) is TaskVerifiedV1
    assert verified.body["files"] == files


async def test_rpm_of_another_package_with_true_digests_is_refused(system, built) -> None:
    lease = await system.lease()
    files = await system.upload(lease, [*built.rpms, built.other, built.log])
    [refused] = await system.attest(lease, files)
    assert type(refused) is TaskMismatchV1
    assert refused.body["reason"] == "wrong_package"
    assert (refused.body["host"], refused.body["lease_id"]) == (HOST, lease.body["lease_id"])
    assert refused.body["detail"] == (
        "other-1.0-1.x86_64.rpm was built from other-1.0-1.src.rpm, not hello-1.0-1.src.rpm"
    )
    row = await system.verifier.pool.fetchrow("SELECT verdict, detail FROM attestations")
    assert (row["verdict"], row["detail"]) == ("wrong_package", refused.body["detail"])
    await system.nothing_stored()


async def test_rpm_of_another_arch_with_true_digests_is_refused(system, built) -> None:
    lease = await system.lease()
    files = await system.upload(lease, [built.aarch64, built.log])
    [refused] = await system.attest(lease, files)
    assert type(refused) is TaskMismatchV1
    assert refused.body["reason"] == "wrong_arch"
    assert (
        refused.body["detail"] == "hello-1.0-1.aarch64.rpm is aarch64, but the task builds x86_64"
    )
    await system.nothing_stored()
