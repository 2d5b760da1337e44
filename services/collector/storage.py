"""Where accepted results live on disk, and how they get there.

Pure file-system logic (no bus, no database), so it is testable on its own:
`check_results` re-checks a lease's staged files and computes where each one belongs;
`place` copies one file into Koji storage atomically and never overwrites anything.

Layout (koji.PathInfo of the configured `koji_topdir`, build-and-limits.md §3):

    official build  <topdir>/packages/N/V/R/<rpm arch>/N-V-R.<rpm arch>.rpm
                    <topdir>/packages/N/V/R/data/logs/<task arch>/<name>.log
    scratch build   <topdir>/scratch/<owner>/task_<task_id>/<name>   (Koji's own scratch layout)
    uploads         <staging_dir>/<lease_id>/<name>                 (in flight, swept once stored)
    source RPMs     work/skyline-sources/<sha256>/<N-V-R>.src.rpm (under the top dir)

Source RPMs sit under Koji's work/ (where Koji's own CLI uploads SRPMs too): the same volume
as packages/, so no extra setting is needed and a later copy into a build is a local one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import koji

from services.common.config import Config
from services.common.errors import SkylineError
from services.common.rpmfiles import (
    RpmCheckError,
    RpmInfo,
    check_rpm_digests,
    read_rpm_info,
    sha256_file,
)

_CHUNK = 1024 * 1024


class Refused(SkylineError):
    """Staged results must not be stored; the message says why."""


class Conflict(Refused):
    """A destination already holds other bytes: Koji builds are immutable."""


@dataclass(frozen=True)
class Task:
    """What placement needs to know about one lease."""

    task_id: int
    build_id: int
    host: str
    arch: str
    owner: str
    nvr: str
    scratch: bool
    srpm_sha256: str | None = None  # the leased SRPM's digest: only those bytes are taken back


@dataclass(frozen=True)
class Result:
    """One checked file and its destination."""

    name: str  # as uploaded and attested
    source: Path  # the staged copy
    path: str  # destination, relative to the Koji top directory
    sha256: str
    size: int
    arch: str  # the RPM's arch, or the task's arch for logs

    def entry(self) -> dict[str, Any]:
        """The file as BuildStoredV1 reports it."""
        return {
            "name": self.name,
            "path": self.path,
            "sha256": self.sha256,
            "size": self.size,
            "arch": self.arch,
        }


def koji_topdir(config: Config) -> Path:
    return config.path(config.collector.koji_topdir)


def staging_dir(config: Config, lease_id: uuid.UUID) -> Path:
    # str(UUID) is canonical: the folder name never comes from the caller's spelling.
    return config.path(config.collector.staging_dir) / str(lease_id)


def sources_dir(config: Config) -> Path:
    return Path(koji.PathInfo(topdir=str(koji_topdir(config))).work()) / "skyline-sources"


def build_info(nvr: str) -> dict[str, str]:
    """Koji's minimal buildinfo for an N-V-R (the schema already refused '/' and '..')."""
    name, version, release = nvr.rsplit("-", 2)
    return {"name": name, "version": version, "release": release}


def destination(topdir: Path, task: Task, name: str, info: RpmInfo | None) -> Path:
    """Where Koji keeps `name` of `task`: `info` is the RPM's header, None for a log."""
    pathinfo = koji.PathInfo(topdir=str(topdir))
    if task.scratch:
        return Path(pathinfo.scratch(), task.owner, f"task_{task.task_id}", name)
    binfo = build_info(task.nvr)
    if info is None:
        return Path(pathinfo.build_logs(binfo), task.arch, name)
    rinfo = {"name": info.name, "version": info.version, "release": info.release, "arch": info.arch}
    return Path(pathinfo.build(binfo), pathinfo.rpm(rinfo))


# Longer header strings are refused rather than cut: a cut value could compare equal to a real one.
MAX_HEADER_FIELD = 1024


def rpm_header(path: Path, name: str) -> dict[str, Any]:
    """What the verifier needs to judge an uploaded RPM without reading it: its header fields
    (RpmInfo's), or {"error": why it is not an intact RPM}. Slow (runs rpmkeys): use a thread.
    """
    try:
        check_rpm_digests(path)
        info = read_rpm_info(path)
    except RpmCheckError as exc:
        # The message names the spool's part file; the uploader knows the file by its name.
        return {"error": str(exc).replace(str(path), name)[:MAX_HEADER_FIELD]}
    header = dataclasses.asdict(info)
    if any(isinstance(v, str) and len(v) > MAX_HEADER_FIELD for v in header.values()):
        return {"error": f"{name}: a header field is longer than {MAX_HEADER_FIELD} characters"}
    return header


def check_rpm(task: Task, name: str, info: RpmInfo) -> None:
    """An RPM belongs to a task only if it was built from the leased SRPM for the task's arch.

    The leased SRPM itself may come along (the verifier made sure its bytes are the leased
    ones); Koji keeps it in the build's src/ folder.
    """
    if info.arch == "src":
        if info.nvr != task.nvr:
            raise Refused(f"{name} is the source RPM of {info.nvr}, not of {task.nvr}")
    elif info.sourcerpm != f"{task.nvr}.src.rpm":
        raise Refused(f"{name} was built from {info.sourcerpm}, not {task.nvr}.src.rpm")
    if info.arch not in (task.arch, "noarch", "src"):
        raise Refused(f"{name} is {info.arch}, but task {task.task_id} builds {task.arch}")
    # The stored name comes from the header; a renamed file would be reported under a lie.
    expected = f"{info.nvr}.{info.arch}.rpm"
    if name != expected:
        raise Refused(f"{name} does not match its header ({expected})")


def check_results(
    topdir: Path, staged: Path, task: Task, files: Sequence[Mapping[str, Any]]
) -> list[Result]:
    """Re-check the attested `files` in the `staged` folder; return them with destinations.

    Defence in depth behind the verifier: the bytes on disk must still have the attested
    digests, every RPM must be intact and belong to the task. Raises Refused otherwise.
    Slow (hashes and runs rpmkeys): call it in a worker thread.
    """
    names = [f["name"] for f in files]
    if len(set(names)) != len(names):
        raise Refused("the attested files list a name twice")
    if not any(n.endswith(".rpm") for n in names):
        raise Refused("a successful build must contain at least one RPM")
    results = []
    for f in files:
        name = f["name"]
        if Path(name).name != name or name.startswith("."):
            raise Refused(f"{name!r} is not a plain file name")
        if not name.endswith((".rpm", ".log")):
            raise Refused(f"{name} is neither an RPM nor a log")
        source = staged / name
        if not source.is_file():
            raise Refused(f"{name} was not uploaded")
        size, digest = source.stat().st_size, sha256_file(source)
        if (size, digest) != (f["size"], f["sha256"]):
            raise Refused(f"staged {name} does not have the attested size and sha256")
        info = None
        if name.endswith(".rpm"):
            try:
                check_rpm_digests(source)
                info = read_rpm_info(source)
            except RpmCheckError as exc:
                raise Refused(str(exc)) from None
            check_rpm(task, name, info)
            if info.arch == "src" and digest != task.srpm_sha256:
                raise Refused(f"{name} is not the leased source RPM (sha256 {digest})")
        path = destination(topdir, task, name, info).relative_to(topdir)
        arch = info.arch if info else task.arch
        results.append(Result(name, source, str(path), digest, size, arch))
    return results


def existing_digest(dest: Path) -> str | None:
    """The sha256 of what is at `dest` already, or None if nothing is."""
    try:
        return sha256_file(dest)
    except FileNotFoundError:
        return None


def place(source: Path, dest: Path, sha256: str) -> bool:
    """Copy `source` to `dest` atomically; True if copied, False if `dest` already held it.

    The copy goes to a temporary name in the destination folder and is fsynced, then
    hard-linked to `dest`: like os.replace that is atomic, but it fails instead of replacing,
    so even two racing writers can never overwrite stored bytes. Raises Conflict if `dest`
    holds other bytes, Refused if `source` no longer has `sha256`.
    """
    if (found := existing_digest(dest)) is not None:
        return _same(dest, found, sha256)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
            copied = _copy(src, out)  # hash what is written, not what was checked earlier
            out.flush()
            os.fsync(out.fileno())
        if copied != sha256:
            raise Refused(f"{source.name} changed after it was checked")
        tmp.chmod(0o644)  # mkstemp makes 0600; Koji storage is read by other users
        try:
            os.link(tmp, dest)
        except FileExistsError:
            return _same(dest, sha256_file(dest), sha256)
        fsync_dir(dest.parent)
        return True
    finally:
        tmp.unlink(missing_ok=True)


def _same(dest: Path, found: str, sha256: str) -> bool:
    if found != sha256:
        raise Conflict(f"{dest} already exists with sha256 {found}, not {sha256}")
    return False


def _copy(src: BinaryIO, out: BinaryIO) -> str:
    digest = hashlib.sha256()
    while chunk := src.read(_CHUNK):
        digest.update(chunk)
        out.write(chunk)
    return digest.hexdigest()


def fsync_dir(folder: Path) -> None:
    """Make a rename or link in `folder` durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with contextlib.suppress(OSError):  # some file systems refuse fsync on directories
            os.fsync(fd)
    finally:
        os.close(fd)
