"""The collector's repositories of stored builds (chain builds' buildroots), read by the
builder's own repository reader: real RPMs, real createrepo_c, a real database."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from services.builder import buildroot
from services.collector import repos, storage
from services.common.config import Config
from services.common.rpmfiles import sha256_file
from services.common.service import Runtime
from services.common.testing import api_client, build_test_package, service_runtime

pytestmark = pytest.mark.integration


@pytest.fixture
async def runtime(config: Config) -> AsyncIterator[Runtime]:
    async with service_runtime(config, "collector") as runtime:
        yield runtime


@pytest.fixture
async def client(runtime: Runtime) -> AsyncIterator[TestClient]:
    async with api_client(runtime, repos.ROUTES) as client:
        yield client


async def store(runtime: Runtime, build_id: int, arch: str, files: list[Path]) -> None:
    """As the collector records a stored lease: its rows, its files in Koji's layout."""
    lease = uuid.uuid4()
    await runtime.pool.execute(
        "INSERT INTO leases (lease_id, task_id, build_id, host, arch, owner, nvr, srpm_sha256,"
        " state, stored_at) VALUES ($1, $2, $3, 'core-1', $4, 'alice', 'p-1-1', $5, 'stored',"
        " now())",
        lease,
        build_id * 10 + len(arch),
        build_id,
        arch,
        "a" * 64,
    )
    topdir = storage.koji_topdir(runtime.config)
    for f in files:
        rel = f"packages/p/1/1/{arch}/{f.name}"
        (topdir / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, topdir / rel)
        await runtime.pool.execute(
            "INSERT INTO stored_files (lease_id, name, path, arch, sha256, size)"
            " VALUES ($1, $2, $3, $4, $5, $6)",
            lease,
            f.name,
            rel,
            arch,
            sha256_file(f),
            f.stat().st_size,
        )


async def test_a_stored_builds_rpms_are_a_repository_the_builder_reads(
    runtime, client, tmp_path: Path
) -> None:
    srpm, [base] = build_test_package(tmp_path / "base", name="skyline-base")
    log = tmp_path / "build.log"
    log.write_text("log\n")
    await store(runtime, 7, "noarch", [base, srpm, log])
    url = str(client.make_url("/api/v1/repos/builds/7/"))
    async with aiohttp.ClientSession() as http:
        got = await buildroot.fetch_buildroot(http, [url], "x86_64", tmp_path / "fetched")
    # The binary RPM only (not the SRPM, not the log), byte for byte what was stored.
    assert [p.name for p in got] == [f"0-{base.name}"]
    assert sha256_file(got[0]) == sha256_file(base)

    # A task stored later (another arch) is in the repository from the next read on.
    _, [other] = build_test_package(tmp_path / "x", name="skyline-base-extra", arch="x86_64")
    await store(runtime, 7, "x86_64", [other])
    async with aiohttp.ClientSession() as http:
        got = await buildroot.fetch_buildroot(http, [url], "x86_64", tmp_path / "fetched2")
    assert sorted(p.name.split("-", 1)[1] for p in got) == sorted([base.name, other.name])


async def test_only_a_repositorys_own_files_are_served(runtime, client) -> None:
    assert (await client.get("/api/v1/repos/builds/8/repodata/repomd.xml")).status == 404
    for bad in ("../../etc/passwd", "repodata/../x", ".skyline-files", "a/b/c"):
        reply = await client.get(f"/api/v1/repos/builds/8/{bad}")
        assert reply.status == 404, bad
