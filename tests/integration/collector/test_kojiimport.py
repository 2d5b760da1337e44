"""Complete builds stored by the collector go into a real Koji hub (tests/kojihub.py) as a
content generator, readable with the stock koji client and CLI, exactly once across crashes."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import koji
import pytest
from skyline_messages import BuildCompleteV1, TaskFinishedV1, TaskLeasedV1, TaskVerifiedV1

from services.collector import kojiimport, storage, store
from services.collector.handlers import (
    on_build_complete,
    on_task_finished,
    on_task_leased,
    on_task_verified,
)
from services.common.config import Config
from services.common.rpmfiles import sha256_file
from services.common.service import Runtime
from services.common.testing import build_test_package, service_runtime
from tests.kojihub import KojiHub

pytestmark = pytest.mark.integration

ARCHES = ("x86_64", "aarch64")
MANIFEST = {"rpm-build": "4.18.0-1", "gcc": "12.2.0-14"}


SIGNED_AT = "2026-05-01T12:00:00Z"
SIGNATURE = base64.b64encode(bytes(64)).decode()  # the collector leaves signatures to the verifier


class Crash(BaseException):
    """Stands for the collector dying: nothing catches it, nothing is recorded after it."""


@dataclasses.dataclass
class Built:
    build_id: int
    nvr: str
    files: dict[str, list[Path]]  # task arch -> the files its builder uploaded


@pytest.fixture
async def runtime(config: Config, koji_hub: KojiHub, tmp_path: Path) -> AsyncIterator[Runtime]:
    secret = tmp_path / "koji-cg.password"
    secret.write_text(koji_hub.cg_user[1] + "\n")
    config = dataclasses.replace(
        config,
        collector=dataclasses.replace(
            config.collector,
            koji_hub_url=koji_hub.url,
            koji_cg_user=koji_hub.cg_user[0],
            koji_cg_password_file=str(secret),
            koji_cg_name=koji_hub.cg_name,
        ),
    )
    async with service_runtime(config, "collector") as rt:
        yield rt


def _package(tmp: Path) -> tuple[str, dict[str, tuple[Path, list[Path]]]]:
    """A fresh package name built for every arch, with a noarch subpackage (built by both)."""
    name = f"sky-{uuid.uuid4().hex[:8]}"
    built = {
        arch: build_test_package(
            tmp / arch, name=name, arch=arch, subpackages={"doc": "BuildArch: noarch"}
        )
        for arch in ARCHES
    }
    return f"{name}-1.0-1", built


async def _store_build(runtime: Runtime, tmp: Path, build_id: int) -> Built:
    """Lease, upload, attest, verify and complete a two-arch build through the collector's own
    handlers, as the verifier and dispatcher would drive it."""
    nvr, built = _package(tmp)
    files: dict[str, list[Path]] = {}
    tasks = []
    for i, arch in enumerate(ARCHES):
        srpm, rpms = built[arch]
        log = tmp / arch / "build.log"
        log.write_text(f"built {nvr} for {arch}\n")
        uploads = [*rpms, log] + ([srpm] if i == 0 else [])  # one builder sends the SRPM back
        files[arch] = uploads
        task_id, lease_id = build_id * 10 + i, str(uuid.uuid4())
        host = f"builder-{arch}".replace("_", "-")
        lease = {
            "lease_id": lease_id,
            "task_id": task_id,
            "build_id": build_id,
            "host": host,
            "arch": arch,
            "owner": "alice",
            "nvr": nvr,
            "srpm_sha256": sha256_file(srpm),
            "srpm_url": f"http://c/sources/{sha256_file(srpm)}/{nvr}.src.rpm",
            "release": "f41",
            "lease_expires": SIGNED_AT,
        }
        attested = [
            {"name": f.name, "size": f.stat().st_size, "sha256": sha256_file(f)} for f in uploads
        ]
        async with runtime.transaction() as ctx:
            await on_task_leased(TaskLeasedV1(body=lease), ctx)
            staging = storage.staging_dir(runtime.config, uuid.UUID(lease_id))
            staging.mkdir(parents=True)
            for f, a in zip(uploads, attested, strict=True):
                shutil.copy(f, staging / f.name)
                await store.stage_file(
                    ctx.conn, uuid.UUID(lease_id), a["name"], a["size"], a["sha256"]
                )
        task = {"task_id": task_id, "build_id": build_id, "lease_id": lease_id, "host": host}
        task |= {"arch": arch, "nvr": nvr, "status": "succeeded", "files": attested}
        async with runtime.transaction() as ctx:
            finished = {**task, "env_manifest": MANIFEST, "srpm_sha256": lease["srpm_sha256"]}
            finished |= {"result_digest": "0" * 64, "env_digest": "1" * 64, "duration": 1.0}
            finished |= {"signed_at": SIGNED_AT, "signature": SIGNATURE}
            await on_task_finished(TaskFinishedV1(body=finished), ctx)
        async with runtime.transaction() as ctx:
            verified = {**task, "result_digest": "0" * 64, "rule": "quorum"}
            await on_task_verified(TaskVerifiedV1(body=verified), ctx)
        tasks.append({"task_id": task_id, "arch": arch, "agreeing": [host], "rule": "quorum"})
    complete = {"build_id": build_id, "owner": "alice", "nvr": nvr, "scratch": False}
    async with runtime.transaction() as ctx:
        await on_build_complete(
            BuildCompleteV1(body={**complete, "files": [], "tasks": tasks}), ctx
        )
    return Built(build_id, nvr, files)


async def _intent(runtime: Runtime, build_id: int) -> Any:
    async with runtime.pool.acquire() as conn:
        return await store.get_koji_import(conn, build_id)


async def _due_now(runtime: Runtime, build_id: int) -> None:
    """What a restart finds once the dead worker's claim has run out."""
    await runtime.pool.execute(
        "UPDATE koji_imports SET next_try = now() WHERE build_id = $1", build_id
    )


def _hub_builds(koji_hub: KojiHub, nvr: str) -> list[dict[str, Any]]:
    hub = koji_hub.session()
    package = hub.getPackageID(nvr.rsplit("-", 2)[0])
    return [] if package is None else hub.listBuilds(packageID=package)


async def test_complete_build_is_readable_with_stock_koji(
    runtime: Runtime, koji_hub: KojiHub, tmp_path: Path
) -> None:
    built = await _store_build(runtime, tmp_path, build_id=101)
    await kojiimport.import_pending(runtime)

    intent = await _intent(runtime, built.build_id)
    assert intent["state"] == "imported", intent["error"]
    hub = koji_hub.session()
    binfo = hub.getBuild(built.nvr)
    assert binfo["id"] == intent["koji_build_id"]
    assert binfo["state"] == koji.BUILD_STATES["COMPLETE"]
    assert binfo["cg_name"] == koji_hub.cg_name
    assert binfo["extra"]["skyline"]["build_id"] == built.build_id

    # Every RPM of both tasks, the noarch one once, and the SRPM: at koji.PathInfo paths with
    # the attested SHA-256.
    attested: dict[str, str] = {}
    for arch in ARCHES:  # the noarch subpackage of the task stored first is the one kept
        for f in built.files[arch]:
            attested.setdefault(f.name, sha256_file(f))
    expected = {n for n in attested if n.endswith(".rpm")}
    rpms = hub.listBuildRPMs(binfo["id"])
    assert {f"{r['nvr']}.{r['arch']}.rpm" for r in rpms} == expected
    assert {r["id"] for r in hub.listRPMs(buildID=binfo["id"])} == {r["id"] for r in rpms}
    pathinfo = koji.PathInfo(topdir=str(koji_hub.topdir))
    for r in rpms:
        path = Path(pathinfo.build(binfo)) / pathinfo.rpm(r)
        assert sha256_file(path) == attested[path.name]
    for arch in ARCHES:
        log = Path(pathinfo.build_logs(binfo)) / arch / "build.log"
        assert log.read_text() == f"built {built.nvr} for {arch}\n"

    # Each task is a buildroot carrying its builder's environment manifest as tools.
    md = json.loads((Path(pathinfo.build(binfo)) / "metadata.json").read_text())
    assert sorted(br["host"]["arch"] for br in md["buildroots"]) == sorted(ARCHES)
    for br in md["buildroots"]:
        assert {t["name"]: t["version"] for t in br["tools"]} == MANIFEST
        host = f"builder-{br['host']['arch']}".replace("_", "-")
        assert br["extra"]["skyline"]["agreeing"] == [host]

    # The stock CLI reads it back too.
    shown = await asyncio.to_thread(koji_hub.cli, tmp_path, "buildinfo", built.nvr)
    assert shown.returncode == 0, shown.stderr
    assert f"BUILD: {built.nvr}" in shown.stdout
    assert "State: COMPLETE" in shown.stdout
    for name in expected:
        assert name in shown.stdout
    # ... and downloads it over the hub's /kojifiles, byte for byte.
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    got = await asyncio.to_thread(
        koji_hub.cli, tmp_path, "download-build", "--arch=noarch", built.nvr, cwd=downloads
    )
    assert got.returncode == 0, got.stderr
    fetched = list(downloads.glob("*.rpm"))
    assert [f.name for f in fetched] == [n for n in expected if n.endswith(".noarch.rpm")]
    assert all(sha256_file(f) == attested[f.name] for f in fetched)


async def test_crash_between_upload_and_import_neither_loses_nor_duplicates(
    runtime: Runtime, koji_hub: KojiHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built = await _store_build(runtime, tmp_path, build_id=202)

    # The collector dies after uploading everything, before CGImport.
    def die(self: Any, *args: Any) -> Any:
        raise Crash

    with monkeypatch.context() as m:
        m.setattr(kojiimport.kojimeta, "metadata", die)
        with pytest.raises(Crash):
            await kojiimport.import_pending(runtime)
    uploads = list((koji_hub.topdir / "work" / "skyline").glob(f"{built.build_id}-*/*.rpm"))
    assert uploads, "the crash should come after the uploads"
    assert _hub_builds(koji_hub, built.nvr) == []
    assert (await _intent(runtime, built.build_id))["state"] == "pending"

    # Restarted, it dies again: after CGImport, before recording the result.
    await _due_now(runtime, built.build_id)
    with monkeypatch.context() as m:
        m.setattr(kojiimport.store, "koji_import_done", die)
        with pytest.raises(Crash):
            await kojiimport.import_pending(runtime)
    (first,) = _hub_builds(koji_hub, built.nvr)
    assert (await _intent(runtime, built.build_id))["state"] == "pending"

    # Restarted again: the hub's build is recognised as this one, recorded, not imported twice.
    await _due_now(runtime, built.build_id)
    await kojiimport.import_pending(runtime)
    intent = await _intent(runtime, built.build_id)
    assert (intent["state"], intent["koji_build_id"]) == ("imported", first["build_id"])
    assert [b["build_id"] for b in _hub_builds(koji_hub, built.nvr)] == [first["build_id"]]

    # Told again (a redelivered build.complete after the intent was cleared): still one build.
    await runtime.pool.execute(
        "UPDATE koji_imports SET state = 'pending', next_try = now() WHERE build_id = $1",
        built.build_id,
    )
    await kojiimport.import_pending(runtime)
    assert (await _intent(runtime, built.build_id))["koji_build_id"] == first["build_id"]
    assert len(_hub_builds(koji_hub, built.nvr)) == 1


async def test_another_build_of_the_nvr_in_the_hub_is_not_overwritten(
    runtime: Runtime, koji_hub: KojiHub, tmp_path: Path
) -> None:
    built = await _store_build(runtime, tmp_path, build_id=303)
    name, version, release = built.nvr.rsplit("-", 2)
    other = koji_hub.session().createEmptyBuild(name, version, release, None)
    await kojiimport.import_pending(runtime)
    intent = await _intent(runtime, built.build_id)
    assert intent["state"] == "failed"
    assert f"build {other} of {built.nvr}" in intent["error"]


async def test_without_a_hub_no_import_is_recorded(config: Config, tmp_path: Path) -> None:
    async with service_runtime(config, "collector") as rt:
        body = {"build_id": 7, "owner": "alice", "nvr": "a-1-1", "scratch": False, "files": []}
        async with rt.transaction() as ctx:
            await on_build_complete(BuildCompleteV1(body=body), ctx)
        assert await _intent(rt, 7) is None
        await kojiimport.import_pending(rt)  # nothing configured: nothing to do


async def test_only_the_leased_hosts_first_manifest_is_kept(config: Config) -> None:
    async with service_runtime(config, "collector") as rt:
        lease_id = str(uuid.uuid4())
        lease = {"lease_id": lease_id, "task_id": 1, "build_id": 1, "host": "builder-a"}
        lease |= {"arch": "x86_64", "owner": "alice", "nvr": "a-1-1", "srpm_sha256": "2" * 64}
        lease |= {"srpm_url": "http://c/a-1-1.src.rpm", "release": "f41"}
        async with rt.transaction() as ctx:
            await on_task_leased(TaskLeasedV1(body={**lease, "lease_expires": SIGNED_AT}), ctx)

        async def finished(host: str, manifest: dict[str, str], status: str = "succeeded") -> None:
            body = {k: lease[k] for k in ("lease_id", "task_id", "build_id", "arch", "nvr")}
            body |= {"host": host, "status": status, "srpm_sha256": "2" * 64, "files": []}
            body |= {"result_digest": "0" * 64, "env_manifest": manifest, "env_digest": "1" * 64}
            body |= {"duration": 1.0, "signed_at": SIGNED_AT, "signature": SIGNATURE}
            async with rt.transaction() as ctx:
                await on_task_finished(TaskFinishedV1(body=body), ctx)

        await finished("builder-a", {"gcc": "1"}, status="failed")  # no result: not kept
        await finished("builder-b", {"gcc": "2"})  # not the lease's host
        await finished("builder-a", {"gcc": "3"})
        await finished("builder-a", {"gcc": "4"})  # a second attestation changes nothing
        manifest = await rt.pool.fetchval(
            "SELECT env_manifest FROM leases WHERE lease_id = $1", uuid.UUID(lease_id)
        )
        assert json.loads(manifest) == {"gcc": "3"}
