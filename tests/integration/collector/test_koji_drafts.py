"""Koji draft builds against the real hub (tests/kojihub.py): a build waiting for agreement is
a draft, promoted only once accepted with the same files; an odd one out's draft is never
promoted; crashes between the draft and the promotion neither lose nor duplicate a build."""

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
from skyline_messages import (
    BuildCompleteV1,
    BuildFailedV1,
    TaskFinishedV1,
    TaskLeasedV1,
    TaskReplicateV1,
    TaskVerifiedV1,
)

from services.collector import draft_store, kojidraft, kojidrafthub, kojiimport, storage, store
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

ARCH = "x86_64"
OWNER = "alice"
MANIFEST = {"rpm-build": "4.18.0-1"}
SIGNED_AT = "2026-05-01T12:00:00Z"
SIGNATURE = base64.b64encode(bytes(64)).decode()  # the collector leaves signatures to the verifier


class Crash(BaseException):
    """Stands for the collector dying: nothing catches it, nothing is recorded after it."""


@dataclasses.dataclass
class Build:
    build_id: int
    task_id: int
    nvr: str
    srpm_sha256: str


@dataclasses.dataclass
class Result:
    lease_id: str
    host: str
    files: list[Path]
    attested: list[dict[str, Any]]


def _with_hub(config: Config, koji_hub: KojiHub, secret: Path, drafts: bool) -> Config:
    secret.write_text(koji_hub.cg_user[1] + "\n")
    return dataclasses.replace(
        config,
        collector=dataclasses.replace(
            config.collector,
            koji_hub_url=koji_hub.url,
            koji_cg_user=koji_hub.cg_user[0],
            koji_cg_password_file=str(secret),
            koji_cg_name=koji_hub.cg_name,
            koji_drafts=drafts,
        ),
    )


@pytest.fixture
async def runtime(config: Config, koji_hub: KojiHub, tmp_path: Path) -> AsyncIterator[Runtime]:
    config = _with_hub(config, koji_hub, tmp_path / "koji-cg.password", drafts=True)
    async with service_runtime(config, "collector") as rt:
        yield rt


def _built(tmp: Path, name: str, host: str, srpm: Path | None = None) -> list[Path]:
    """The package as `host` built it: its RPM, the SRPM (`srpm`, the leased one, if given) and
    a build log naming the host."""
    own_srpm, rpms = build_test_package(tmp / host, name=name, arch=ARCH)
    log = tmp / host / "build.log"
    log.write_text(f"built on {host}\n")
    return [*rpms, srpm or own_srpm, log]


async def _result(runtime: Runtime, build: Build, host: str, files: list[Path]) -> Result:
    """A lease of the build's task on `host`, its uploads and its attestation (task.finished),
    as the dispatcher, the builder and the verifier's checks leave them before agreement."""
    lease_id = str(uuid.uuid4())
    lease = {
        "lease_id": lease_id,
        "task_id": build.task_id,
        "build_id": build.build_id,
        "host": host,
        "arch": ARCH,
        "owner": OWNER,
        "nvr": build.nvr,
        "srpm_sha256": build.srpm_sha256,
        "srpm_url": f"http://c/sources/{build.srpm_sha256}/{build.nvr}.src.rpm",
        "release": "f41",
        "lease_expires": SIGNED_AT,
    }
    attested = [{"name": f.name, "size": f.stat().st_size, "sha256": sha256_file(f)} for f in files]
    async with runtime.transaction() as ctx:
        await on_task_leased(TaskLeasedV1(body=lease), ctx)
        staging = storage.staging_dir(runtime.config, uuid.UUID(lease_id))
        staging.mkdir(parents=True)
        for f, a in zip(files, attested, strict=True):
            shutil.copy(f, staging / f.name)
            await store.stage_file(ctx.conn, uuid.UUID(lease_id), a["name"], a["size"], a["sha256"])
    finished = {**_task(build, lease_id, host, attested), "env_manifest": MANIFEST}
    finished |= {"srpm_sha256": build.srpm_sha256, "result_digest": "0" * 64}
    finished |= {"env_digest": "1" * 64, "duration": 1.0}
    finished |= {"signed_at": SIGNED_AT, "signature": SIGNATURE}
    async with runtime.transaction() as ctx:
        await on_task_finished(TaskFinishedV1(body=finished), ctx)
    return Result(lease_id, host, files, attested)


def _task(build: Build, lease_id: str, host: str, attested: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "task_id": build.task_id,
        "build_id": build.build_id,
        "lease_id": lease_id,
        "host": host,
        "arch": ARCH,
        "nvr": build.nvr,
        "status": "succeeded",
        "files": attested,
    }


async def _replicate(runtime: Runtime, build: Build, hosts: list[str], purpose: str) -> None:
    """The verifier's skyline.task.replicate after the results of `hosts`."""
    body = {"task_id": build.task_id, "build_id": build.build_id, "arch": ARCH, "nvr": build.nvr}
    body |= {"purpose": purpose, "reason": "untrusted result needs an independent replica"}
    body |= {"min_trust": "trusted", "exclude_owners": ["bob"], "exclude_hosts": hosts}
    body |= {"results": len(hosts)}
    async with runtime.transaction() as ctx:
        await kojidraft.on_task_replicate(TaskReplicateV1(body=body), ctx)


async def _accept(runtime: Runtime, build: Build, stored: Result, agreeing: list[str]) -> None:
    """The verifier's task.verified for `stored`, then the dispatcher's build.complete."""
    await _accept_task_only(runtime, build, stored)
    await _complete(runtime, build, agreeing)


def _new_build(build_id: int, files: list[Path]) -> Build:
    srpm = next(f for f in files if f.name.endswith(".src.rpm"))
    nvr = srpm.name.removesuffix(".src.rpm")
    return Build(build_id, build_id * 10, nvr, sha256_file(srpm))


async def _draft(runtime: Runtime, build_id: int) -> Any:
    async with runtime.pool.acquire() as conn:
        return await draft_store.get(conn, build_id)


async def _intent(runtime: Runtime, build_id: int) -> Any:
    async with runtime.pool.acquire() as conn:
        return await store.get_koji_import(conn, build_id)


async def _run_jobs(runtime: Runtime) -> None:
    """One round of both periodic jobs, as the collector runs them."""
    await kojidraft.import_drafts(runtime)
    await kojiimport.import_pending(runtime)


def _hub_builds(koji_hub: KojiHub, nvr: str, **filters: Any) -> list[dict[str, Any]]:
    hub = koji_hub.session()
    package = hub.getPackageID(nvr.rsplit("-", 2)[0])
    return [] if package is None else hub.listBuilds(packageID=package, **filters)


def _assert_files(koji_hub: KojiHub, nvr: str, expected: list[Path]) -> dict[str, Any]:
    """The N-V-R's regular build holds exactly `expected`'s RPMs and log at koji.PathInfo
    paths, with their SHA-256."""
    hub = koji_hub.session()
    binfo = hub.getBuild(nvr)
    assert binfo is not None and not binfo["draft"]
    assert binfo["release"] == nvr.rsplit("-", 1)[1]
    pathinfo = koji.PathInfo(topdir=str(koji_hub.topdir))
    digests = {f.name: sha256_file(f) for f in expected}
    rpms = hub.listBuildRPMs(binfo["id"])
    assert {f"{r['nvr']}.{r['arch']}.rpm" for r in rpms} == {
        n for n in digests if n.endswith(".rpm")
    }
    for r in rpms:
        path = Path(pathinfo.build(binfo)) / pathinfo.rpm(r)
        assert sha256_file(path) == digests[path.name]
    log = Path(pathinfo.build_logs(binfo)) / ARCH / "build.log"
    assert sha256_file(log) == digests["build.log"]
    return binfo


async def test_a_draft_is_promoted_only_after_agreement(
    runtime: Runtime, koji_hub: KojiHub, tmp_path: Path
) -> None:
    files = _built(tmp_path, f"sky-{uuid.uuid4().hex[:8]}", "vol-a")
    build = _new_build(501, files)
    first = await _result(runtime, build, "vol-a", files)
    await _run_jobs(runtime)
    assert await _draft(runtime, build.build_id) is None  # no replica asked: nothing to draft

    # The verifier wants a replica: the build waits for agreement, and is a draft meanwhile.
    await _replicate(runtime, build, ["vol-a"], "replica")
    await _run_jobs(runtime)
    row = await _draft(runtime, build.build_id)
    assert row["state"] == "imported", row["error"]
    draft_id = row["koji_build_id"]
    hub = koji_hub.session()
    draft = hub.getBuild(draft_id)
    assert draft["draft"] is True
    assert draft["state"] == koji.BUILD_STATES["COMPLETE"]
    assert draft["release"] == f"1,draft_{draft_id}"
    assert draft["extra"]["skyline"]["build_id"] == build.build_id
    assert hub.getBuild(build.nvr) is None  # not the N-V-R's build
    shown = await asyncio.to_thread(koji_hub.cli, tmp_path, "buildinfo", str(draft_id))
    assert shown.returncode == 0, shown.stderr
    assert "Draft: YES" in shown.stdout
    assert f"BUILD: {draft['nvr']}" in shown.stdout

    # The replica agrees and the task is accepted, but the build is not complete yet: the
    # draft stays a draft.
    await _result(runtime, build, "vol-b", [p for p in files])
    await _accept_task_only(runtime, build, first)
    await _run_jobs(runtime)
    assert hub.getBuild(draft_id)["draft"] is True
    assert await _intent(runtime, build.build_id) is None

    # build.complete: the accepted files are the draft's, so the draft becomes the build.
    await _complete(runtime, build, ["vol-a", "vol-b"])
    await _run_jobs(runtime)
    intent = await _intent(runtime, build.build_id)
    assert (intent["state"], intent["koji_build_id"]) == ("imported", draft_id), intent["error"]
    assert (await _draft(runtime, build.build_id))["state"] == "promoted"
    binfo = _assert_files(koji_hub, build.nvr, files)
    assert binfo["id"] == draft_id
    assert binfo["promotion_ts"] is not None
    assert [b["build_id"] for b in _hub_builds(koji_hub, build.nvr)] == [draft_id]
    shown = await asyncio.to_thread(koji_hub.cli, tmp_path, "buildinfo", build.nvr)
    assert shown.returncode == 0, shown.stderr
    assert "Draft: YES" not in shown.stdout and "State: COMPLETE" in shown.stdout


async def _accept_task_only(runtime: Runtime, build: Build, stored: Result) -> None:
    verified = _task(build, stored.lease_id, stored.host, stored.attested)
    verified |= {"result_digest": "0" * 64, "rule": "agreement"}
    async with runtime.transaction() as ctx:
        await on_task_verified(TaskVerifiedV1(body=verified), ctx)


async def _complete(runtime: Runtime, build: Build, agreeing: list[str]) -> None:
    tasks = [{"task_id": build.task_id, "arch": ARCH, "agreeing": agreeing, "rule": "agreement"}]
    complete = {"build_id": build.build_id, "owner": OWNER, "nvr": build.nvr, "scratch": False}
    async with runtime.transaction() as ctx:
        await on_build_complete(
            BuildCompleteV1(body={**complete, "files": [], "tasks": tasks}), ctx
        )


async def test_an_odd_one_outs_draft_is_never_promoted(
    runtime: Runtime, koji_hub: KojiHub, tmp_path: Path
) -> None:
    name = f"sky-{uuid.uuid4().hex[:8]}"
    bad = _built(tmp_path, name, "vol-a")
    good = _built(tmp_path, name, "vol-b", srpm=bad[1])
    build = _new_build(502, bad)
    await _result(runtime, build, "vol-a", bad)
    await _replicate(runtime, build, ["vol-a"], "replica")
    await _run_jobs(runtime)
    draft_id = (await _draft(runtime, build.build_id))["koji_build_id"]
    assert draft_id is not None

    # vol-b disagrees; a core host's tie-break agrees with vol-b: vol-a is the odd one out.
    replica = await _result(runtime, build, "vol-b", good)
    await _replicate(runtime, build, ["vol-a", "vol-b"], "tiebreak")
    await _result(runtime, build, "core-1", good)
    await _run_jobs(runtime)
    hub = koji_hub.session()
    assert hub.getBuild(draft_id)["draft"] is True
    await _accept(runtime, build, replica, ["vol-b", "core-1"])
    await _run_jobs(runtime)

    intent = await _intent(runtime, build.build_id)
    assert intent["state"] == "imported", intent["error"]
    assert intent["koji_build_id"] != draft_id
    row = await _draft(runtime, build.build_id)
    assert (row["state"], row["koji_build_id"]) == ("rejected", draft_id)
    binfo = _assert_files(koji_hub, build.nvr, good)  # vol-b's files, vol-b's log
    assert binfo["id"] == intent["koji_build_id"]
    md = json.loads(
        (Path(koji.PathInfo(str(koji_hub.topdir)).build(binfo)) / "metadata.json").read_text()
    )
    assert [br["extra"]["skyline"]["host"] for br in md["buildroots"]] == ["vol-b"]
    left = hub.getBuild(draft_id)  # the odd one out's draft: still a draft, never promoted
    assert left["draft"] is True and left["promotion_ts"] is None
    assert left["extra"]["skyline"]["files"]["x86_64/build.log"] == sha256_file(bad[-1])
    assert sorted(b["build_id"] for b in _hub_builds(koji_hub, build.nvr)) == sorted(
        [draft_id, binfo["id"]]
    )


async def test_a_failed_builds_draft_is_never_promoted(
    runtime: Runtime, koji_hub: KojiHub, tmp_path: Path
) -> None:
    files = _built(tmp_path, f"sky-{uuid.uuid4().hex[:8]}", "vol-a")
    build = _new_build(506, files)
    await _result(runtime, build, "vol-a", files)
    await _replicate(runtime, build, ["vol-a"], "replica")
    await _run_jobs(runtime)
    draft_id = (await _draft(runtime, build.build_id))["koji_build_id"]

    # No replica agreed in the end: the dispatcher fails the build.
    failed = {"build_id": build.build_id, "owner": OWNER, "nvr": build.nvr}
    async with runtime.transaction() as ctx:
        await kojidraft.on_build_failed(
            BuildFailedV1(body={**failed, "reason": "no agreement"}), ctx
        )
    await _run_jobs(runtime)
    row = await _draft(runtime, build.build_id)
    assert (row["state"], row["koji_build_id"]) == ("rejected", draft_id)
    hub = koji_hub.session()
    assert hub.getBuild(draft_id)["draft"] is True
    assert hub.getBuild(build.nvr) is None
    assert await _intent(runtime, build.build_id) is None


async def test_crashes_between_draft_and_promotion_neither_lose_nor_duplicate(
    runtime: Runtime, koji_hub: KojiHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = _built(tmp_path, f"sky-{uuid.uuid4().hex[:8]}", "vol-a")
    build = _new_build(503, files)
    first = await _result(runtime, build, "vol-a", files)
    await _replicate(runtime, build, ["vol-a"], "replica")

    def die(*args: Any, **kwargs: Any) -> Any:
        raise Crash

    # The collector dies after CGImport of the draft, before recording it: the intent row
    # (its candidate) is there without a result.
    with monkeypatch.context() as m:
        m.setattr(kojidraft.draft_store, "imported", die)
        with pytest.raises(Crash):
            await kojidraft.import_drafts(runtime)
    row = await _draft(runtime, build.build_id)
    assert (row["state"], row["koji_build_id"]) == ("pending", None)
    assert row["files"] is not None
    (draft,) = _hub_builds(koji_hub, build.nvr, draft=True)

    # Restarted after the claim ran out: the hub's draft is found, not imported again.
    await runtime.pool.execute(
        "UPDATE koji_drafts SET next_try = now() WHERE build_id = $1", build.build_id
    )
    with monkeypatch.context() as m:
        m.setattr(kojidraft.draft_store, "imported", die)
        with pytest.raises(Crash):
            await kojidraft.import_drafts(runtime)
    assert [b["build_id"] for b in _hub_builds(koji_hub, build.nvr)] == [draft["build_id"]]

    # Accepted while the draft's result is still unrecorded: the import finds the draft in the
    # hub and promotes it, then dies before recording that.
    await _result(runtime, build, "vol-b", files)
    await _accept(runtime, build, first, ["vol-a", "vol-b"])
    with monkeypatch.context() as m:
        m.setattr(kojiimport.store, "koji_import_done", die)
        with pytest.raises(Crash):
            await kojiimport.import_pending(runtime)
    hub = koji_hub.session()
    assert hub.getBuild(build.nvr)["id"] == draft["build_id"]  # promoted
    assert (await _intent(runtime, build.build_id))["state"] == "pending"

    # Restarted: the promoted build is recognised as this one and recorded, once.
    await runtime.pool.execute(
        "UPDATE koji_imports SET next_try = now() WHERE build_id = $1", build.build_id
    )
    await runtime.pool.execute(
        "UPDATE koji_drafts SET next_try = now() WHERE build_id = $1", build.build_id
    )
    await _run_jobs(runtime)
    intent = await _intent(runtime, build.build_id)
    assert (intent["state"], intent["koji_build_id"]) == ("imported", draft["build_id"])
    row = await _draft(runtime, build.build_id)
    assert (row["state"], row["koji_build_id"]) == ("promoted", draft["build_id"])
    assert [b["build_id"] for b in _hub_builds(koji_hub, build.nvr)] == [draft["build_id"]]
    assert _hub_builds(koji_hub, build.nvr, draft=True) == []
    _assert_files(koji_hub, build.nvr, files)


async def test_without_drafts_builds_go_in_only_once_accepted(
    config: Config, koji_hub: KojiHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for drafts, build_id in ((False, 504), (True, 505)):
        cfg = _with_hub(config, koji_hub, tmp_path / f"pw-{build_id}", drafts=drafts)
        async with service_runtime(cfg, "collector") as rt:
            files = _built(tmp_path / str(build_id), f"sky-{uuid.uuid4().hex[:8]}", "vol-a")
            build = _new_build(build_id, files)
            first = await _result(rt, build, "vol-a", files)
            with monkeypatch.context() as m:
                # With drafts on, a hub older than 1.34 stands in: it has no drafts.
                m.setattr(kojidrafthub, "_supported", {koji_hub.url: False})
                await _replicate(rt, build, ["vol-a"], "replica")
                await _run_jobs(rt)
                row = await _draft(rt, build.build_id)
                if drafts:
                    assert row["state"] == "skipped" and "no draft builds" in row["error"]
                else:
                    assert row is None
                assert _hub_builds(koji_hub, build.nvr) == []
                await _result(rt, build, "vol-b", files)
                await _accept(rt, build, first, ["vol-a", "vol-b"])
                await _run_jobs(rt)
            intent = await _intent(rt, build.build_id)
            assert intent["state"] == "imported", intent["error"]
            binfo = _assert_files(koji_hub, build.nvr, files)
            assert binfo["id"] == intent["koji_build_id"] and binfo["promotion_ts"] is None
