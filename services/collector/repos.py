"""Repositories of stored builds, for chain builds: `GET /api/v1/repos/builds/{id}/...`.

A chain link builds against the RPMs of the links it comes after (the dispatcher names this
URL in the lease's `repos`). The repository is made on first use with createrepo_c over hard
links (copies across file systems) of the build's stored binary RPMs, under Koji's work
directory (`work/skyline-repos/build-<id>`), and made again when the stored set changed (a
task stored after the first request). Only files the collector stored are ever served.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import koji
from aiohttp import web

from services.common.http import error
from services.common.service import RUNTIME, Runtime

from . import storage

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

CREATEREPO_TIMEOUT = 300.0
MANIFEST = ".skyline-files"  # the RPM names the repository was made from, one a line
# What a repository holds: its RPMs and repodata/<file>; nothing with '/' or '..' otherwise.
_PATH = re.compile(r"(repodata/)?[A-Za-z0-9_+][A-Za-z0-9._+~^-]{0,254}")
_LOCKS = "repo-locks"


def repos_dir(runtime: Runtime) -> Path:
    topdir = storage.koji_topdir(runtime.config)
    return Path(koji.PathInfo(topdir=str(topdir)).work()) / "skyline-repos"


async def stored_rpms(runtime: Runtime, build_id: int) -> dict[str, Path]:
    """The build's stored binary RPMs: name -> its file in Koji storage."""
    rows = await runtime.pool.fetch(
        "SELECT f.name, f.path FROM stored_files f JOIN leases l ON l.lease_id = f.lease_id"
        " WHERE l.build_id = $1 AND l.state = 'stored' AND f.name LIKE '%.rpm'"
        " AND f.name NOT LIKE '%.src.rpm' ORDER BY f.name",
        build_id,
    )
    topdir = storage.koji_topdir(runtime.config)
    return {r["name"]: topdir / r["path"] for r in rows}


def make_repo(dest: Path, rpms: dict[str, Path]) -> None:
    """(Re)make the repository at `dest` from `rpms`, replacing it in one rename."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        for name, path in rpms.items():
            try:
                os.link(path, work / name)
            except OSError:
                shutil.copy2(path, work / name)
        subprocess.run(
            ["createrepo_c", "--quiet", "--no-database", str(work)],
            check=True,
            capture_output=True,
            timeout=CREATEREPO_TIMEOUT,
        )
        (work / MANIFEST).write_text("".join(f"{n}\n" for n in sorted(rpms)))
        work.chmod(0o755)
        old = dest.with_name(f".{dest.name}-old")
        shutil.rmtree(old, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            dest.rename(old)
        work.rename(dest)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _current(dest: Path, rpms: dict[str, Path]) -> bool:
    try:
        return (dest / MANIFEST).read_text().split() == sorted(rpms)
    except OSError:
        return False


@routes.get("/api/v1/repos/builds/{build_id:\\d{1,18}}/{path:.*}")
async def get_repo_file(request: web.Request) -> web.StreamResponse:
    runtime = request.app[RUNTIME]
    build_id = int(request.match_info["build_id"])
    path = request.match_info["path"]
    if not _PATH.fullmatch(path):
        raise error(404, "a repository holds only its RPMs and repodata/")
    dest = repos_dir(runtime) / f"build-{build_id}"
    if path == "repodata/repomd.xml" or not dest.is_dir():
        # The entry point of every reader: make sure the repository is the stored set's.
        rpms = await stored_rpms(runtime, build_id)
        if not rpms:
            raise error(404, f"build {build_id} has no stored RPMs")
        locks: dict[int, asyncio.Lock] = runtime.state.setdefault(_LOCKS, {})
        async with locks.setdefault(build_id, asyncio.Lock()):
            if not _current(dest, rpms):
                try:
                    await asyncio.to_thread(make_repo, dest, rpms)
                except (OSError, subprocess.SubprocessError) as exc:
                    log.error("cannot make the repository of build %s: %s", build_id, exc)
                    raise error(503, f"the repository of build {build_id} cannot be made") from None
                log.info("made the repository of build %s (%d RPMs)", build_id, len(rpms))
    file = dest / path
    if path == MANIFEST or not file.is_file():
        raise error(404, f"no {path} in the repository of build {build_id}")
    return web.FileResponse(file)


ROUTES = list(routes)
