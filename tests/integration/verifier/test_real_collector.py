"""The verifier judging uploads made to the real collector (its routes and database), with
real rpmbuild-built RPMs: the contract behind the collector stand-in, and refusals of RPMs
of another package or arch with true digests, of which nothing is stored."""

from __future__ import annotations

import dataclasses
import operator
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from skyline_messages import (
    TaskFinishedV1,
    TaskLeasedV1,
    TaskMismatchV1,
    TaskReplicateV1,
    TaskVerifiedV1,
)

from services.builder.client import upload_headers
from services.collector import storage
from services.collector.__main__ import SERVICE as COLLECTOR
from services.common.config import Config
from services.common.rpmfacts import comparison_key, read_rpm_facts
from services.common.rpmfiles import (
    REPRODUCIBLE_MACROS,
    macro_args,
    result_set_digest,
    sha256_file,
    tool_env,
)
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
KEY2 = Ed25519PrivateKey.generate()
NVR = "hello-1.0-1"


@dataclasses.dataclass(frozen=True)
class Built:
    srpm: Path
    rpms: list[Path]  # hello-1.0-1 for x86_64, with a noarch subpackage
    other: Path  # other-1.0-1.x86_64.rpm: another package
    aarch64: Path  # hello-1.0-1.aarch64.rpm: the package, another arch
    log: Path
    elsewhere: list[Path]  # the same SRPM rebuilt on another build host, at another time
    tampered: Path  # hello-1.0-1.x86_64.rpm whose header lies about its payload


def rebuild(srpm: Path, top: Path, **macros: str) -> list[Path]:
    subprocess.run(
        [
            *("rpmbuild", "--rebuild", "--nodeps", "--target", "x86_64"),
            *("--define", f"_topdir {top}"),
            *macro_args({**REPRODUCIBLE_MACROS, **macros}),
            str(srpm),
        ],
        env={**tool_env(), "HOME": str(top)},
        stdin=subprocess.DEVNULL,
        check=True,
        capture_output=True,
    )
    return sorted((top / "RPMS").rglob("*.rpm"))


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
    elsewhere = rebuild(
        srpm,
        tmp / "elsewhere",
        _buildhost="volunteer-7",
        use_source_date_epoch_as_buildtime="0",
    )
    # An uncompressed payload lets a file's bytes change under an honest header (rpmkeys -K
    # does not notice): only reading the payload does.
    [tampered] = [
        p for p in rebuild(srpm, tmp / "tampered", _binary_payload="w.ufdio") if "doc" not in p.name
    ]
    data = tampered.read_bytes()
    assert data.count(b"main\n") == 1
    tampered.write_bytes(data.replace(b"main\n", b"evil\n"))
    return Built(srpm, rpms, other, aarch64, log, elsewhere, tampered)


@dataclasses.dataclass
class System:
    verifier: Runtime
    collector: Runtime
    client: TestClient  # the collector's HTTP API, as builders and the verifier reach it
    srpm_sha256: str

    async def lease(self, arch: str = "x86_64", host: str = HOST) -> TaskLeasedV1:
        body = {
            "task_id": 1,
            "build_id": 1,
            "lease_id": str(uuid.uuid4()),
            "host": host,
            "arch": arch,
            "owner": "alice",
            "nvr": NVR,
            "srpm_url": f"http://127.0.0.1:1/sources/{NVR}.src.rpm",
            "srpm_sha256": self.srpm_sha256,
            "release": "any",
            "scratch": False,
            "lease_expires": "2099-01-01T00:00:00+00:00",
        }
        msg = TaskLeasedV1(body=body, topic=TaskLeasedV1.topic_for(host))
        await VERIFIER.handle(self.verifier, msg)
        await COLLECTOR.handle(self.collector, msg)
        return msg

    async def upload(
        self, lease: TaskLeasedV1, paths: list[Path], key: Ed25519PrivateKey = KEY
    ) -> list[dict[str, Any]]:
        """Upload as the leased host does (signed); return the attested file entries."""
        files = []
        for path in paths:
            entry = {"name": path.name, "size": path.stat().st_size, "sha256": sha256_file(path)}
            lease_id = lease.body["lease_id"]
            headers = upload_headers(lease_id, path.name, entry["sha256"], host=lease.host, key=key)
            url = f"/api/v1/uploads/{lease_id}/{path.name}"
            resp = await self.client.put(url, data=path.read_bytes(), headers=headers)
            assert resp.status == 201, await resp.text()
            files.append(entry)
        return files

    async def attest(
        self, lease: TaskLeasedV1, files: list[dict[str, Any]], key: Ed25519PrivateKey = KEY
    ) -> list[Any]:
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
        await VERIFIER.handle(self.verifier, TaskFinishedV1(body=sign_body(body, key)))
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


async def test_the_collector_serves_facts_as_the_stand_in_does(system, peers, built) -> None:
    lease = await system.lease()
    files = await system.upload(lease, [*built.rpms, built.log])
    lease_id = lease.body["lease_id"]
    found = await verifier_peers.rpm_facts_of_files(
        system.verifier.http, system.verifier.config.verifier.collector_url, lease_id
    )
    assert found is not None
    by_name = {p.name: p for p in built.rpms}
    assert sorted((name, sha) for name, sha, _ in found) == sorted(
        (f["name"], f["sha256"]) for f in files if f["name"].endswith(".rpm")
    )
    for name, _, facts in found:
        assert facts == read_rpm_facts(by_name[name])
    # The stand-in's answer has the real one's shape.
    resp = await system.client.get(f"/api/v1/leases/{lease_id}/facts")
    real = await resp.json()
    peers.stage(lease_id, *files, sourcerpm=f"{NVR}.src.rpm")
    assert {frozenset(r) for r in real["rpms"]} == {frozenset(r) for r in peers.facts[lease_id]}


async def test_an_honest_rebuild_elsewhere_agrees_with_an_untrusted_result(
    system, peers, built
) -> None:
    # An untrusted volunteer's result waits; a trusted host of another owner rebuilds it on
    # another build host at another time (other bytes): the comparison agrees.
    peers.host_view(HOST, public_key_b64(KEY), owner="bob", trust="untrusted")
    peers.host_view("builder-2", public_key_b64(KEY2), owner="carol", trust="trusted")
    first = await system.lease()
    [replicate] = await system.attest(first, await system.upload(first, built.rpms))
    assert type(replicate) is TaskReplicateV1
    second = await system.lease(host="builder-2")
    files = await system.upload(second, built.elsewhere, KEY2)
    [verified] = await system.attest(second, files, KEY2)
    assert type(verified) is TaskVerifiedV1, verified.body
    assert [a["host"] for a in verified.body["agreeing"]] == [HOST, "builder-2"]
    assert verified.body["rule"] == "quorum"
    assert verified.body["comparison_key"] == comparison_key(
        [read_rpm_facts(p) for p in built.rpms]
    )


async def test_a_payload_changed_under_its_header_is_refused(system, built) -> None:
    lease = await system.lease()
    files = await system.upload(lease, [built.tampered])
    [refused] = await system.attest(lease, files)
    assert type(refused) is TaskMismatchV1
    assert refused.body["reason"] == "bad_rpm"
    assert "DIGESTS NOT OK" in refused.body["detail"]
    await system.nothing_stored()
