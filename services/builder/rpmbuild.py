"""Build backend of the volunteer builder: rebuild one SRPM reproducibly with rpmbuild or mock.

Reproducibility needs the same SRPM bytes, REPRODUCIBLE_MACROS and the same absolute build path
on every host (build-and-limits.md §1), so that independent hosts can be cross-checked.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import os
import shlex
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from services.common.rpmfiles import (
    REPRODUCIBLE_MACROS,
    RpmCheckError,
    check_rpm_digests,
    macro_args,
    tool_env,
)

from .manifest import environment_manifest, manifest_digest
from .sandbox import Sandbox

__all__ = [
    "DEFAULT_BUILD_PATH",
    "REPRODUCIBLE_MACROS",
    "BuildOutcome",
    "build",
    "environment_manifest",
    "manifest_digest",
]

# The build path leaks into ELF build-ids and the expanded spec, so all hosts must use this one.
DEFAULT_BUILD_PATH = Path("/var/tmp/skyline-build")
BACKENDS = ("auto", "rpmbuild", "mock")
LOG_NAME = "build.log"
CANCEL_POLL = 0.25  # seconds between looks at a build's cancel event
DISK_CHECK_SECONDS = 5.0  # between measurements of the build directory's size
INPUT_DIR = "skyline-input"  # the SRPM is copied in here: the sandbox sees only build_path
BUILDROOT_DIR = "skyline-buildroot"  # buildroot packages unpacked here, laid over /usr
# Runs in the sandbox (so a hostile archive can only write into build_path): unpack each RPM.
_UNPACK = """set -e
mkdir -p {root}/usr
cd {root}
for r in "$@"; do
    echo "skyline: buildroot: $(rpm -qp --qf '%{{NEVRA}}' "$r")"
    rpm2archive -n - < "$r" > "$r.tar"
    tar -x --no-same-owner -f "$r.tar"
    rm "$r.tar"
done
"""


@dataclass(frozen=True)
class BuildOutcome:
    succeeded: bool
    rpms: list[Path]
    log: Path
    returncode: int
    duration: float
    # Killed at the wall-time limit: the agent's verdict, not the package's (retry elsewhere).
    timed_out: bool = False
    cancelled: bool = False  # stopped by the caller (a revoked lease)
    limit_exceeded: bool = False  # killed for using more disk than the host allows


@functools.lru_cache(maxsize=1)
def rpmdb_has_rpm() -> bool:
    """True on RPM distros; False where the rpmdb is empty (e.g. Debian) and deps can't resolve."""
    try:
        proc = subprocess.run(
            ["rpm", "-q", "rpm"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=tool_env(),
            check=False,
        )
    except OSError:
        return False
    return proc.returncode == 0


def _is_within(path: Path, parent: Path) -> bool:
    return path.resolve().is_relative_to(parent.resolve())


# A killed sandbox's processes die just after bwrap, as their PID namespace goes with its init:
# until then one may still create a file in the tree being removed.
WIPE_SECONDS = 10.0
WIPE_RETRY_ERRORS = (errno.ENOTEMPTY, errno.ENOENT)


def _wipe(path: Path) -> None:
    """Remove `path`, trying again (for up to WIPE_SECONDS) while it changes underneath."""
    deadline = time.monotonic() + WIPE_SECONDS
    while True:
        try:
            if path.is_symlink() or path.is_file():
                path.unlink()
            elif path.exists():
                shutil.rmtree(path)
            return
        except OSError as exc:
            if exc.errno not in WIPE_RETRY_ERRORS or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def build_path_problem(build_path: Path) -> str | None:
    """Why this user cannot build in `build_path` (and its lock), or None if it can.

    Checked at start-up, so a volunteer learns it once instead of every lease failing.
    """
    lock_path = build_path.with_name(build_path.name + ".lock")
    for path in (build_path, lock_path):
        if path.exists() and not os.access(path, os.W_OK):
            return (
                f"{path} exists but is not writable by this user (another user's builder?): "
                "remove it, or set [builder] build_path to another absolute path"
            )
    parent = build_path.parent
    if not build_path.exists() and not os.access(parent, os.W_OK | os.X_OK):
        return f"cannot create {build_path}: {parent} is not writable by this user"
    return None


def _run_logged(
    cmd: list[str],
    log: IO[bytes],
    env: dict[str, str],
    timeout: float,
    lock: IO[str],
    user: Mapping[str, Any] | None = None,
    cancel: threading.Event | None = None,
    watch: Callable[[], str | None] | None = None,
) -> tuple[int, str | None]:
    """Run cmd with stdout+stderr streamed into log; on timeout, when `cancel` is set or when
    `watch` (called every CANCEL_POLL s) names a problem, kill its whole process group.

    Returns (returncode, why it was stopped: None, "timeout", "cancelled" or "limit").
    `user` are Popen's user/group arguments (a root agent drops to its build user).

    The child inherits the build-path lock: if this agent dies (SIGKILL), the orphaned build
    still holds the lock, so the next build waits for it instead of having its build path
    wiped from under it.
    """
    log.write(f"+ {shlex.join(cmd)}\n".encode())
    log.flush()
    try:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # own process group, so a timeout can kill every child
            pass_fds=(lock.fileno(),),
            **(user or {}),
        )
    except OSError as exc:
        log.write(f"skyline: cannot start {cmd[0]}: {exc}\n".encode())
        return 127, None
    deadline = time.monotonic() + timeout
    try:
        while True:
            if cancel is not None and cancel.is_set():
                stop, note = "cancelled", "build cancelled"
                break
            if watch is not None and (problem := watch()) is not None:
                stop, note = "limit", problem
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                stop, note = "timeout", f"build timed out after {timeout:g}s"
                break
            with contextlib.suppress(subprocess.TimeoutExpired):
                # Short waits: a cancel is seen within CANCEL_POLL seconds.
                return proc.wait(timeout=min(remaining, CANCEL_POLL)), None
        # bwrap leads the group; its sandbox (a PID namespace, --die-with-parent) dies with it.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log.write(f"skyline: {note}; process group killed\n".encode())
        return -signal.SIGKILL, stop
    except BaseException:
        # Interrupted (e.g. KeyboardInterrupt): don't leave a build running under the lock.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise


def _rpmbuild_cmd(
    srpm: Path, arch: str, build_path: Path, log: IO[bytes], *, buildroot: bool = False
) -> list[str]:
    cmd = [
        "rpmbuild",
        "--rebuild",
        "--define",
        f"_topdir {build_path}",
        *macro_args(REPRODUCIBLE_MACROS),
    ]
    if arch != "noarch":
        cmd += ["--target", arch]
    if not rpmdb_has_rpm():
        log.write(
            b"skyline: rpm is not in the rpm database (non-RPM distro): "
            b"BuildRequires are NOT checked (--nodeps)\n"
        )
        cmd.append("--nodeps")
    elif buildroot:
        log.write(
            b"skyline: buildroot packages are unpacked, not in the rpm database: "
            b"BuildRequires are NOT checked (--nodeps)\n"
        )
        cmd.append("--nodeps")
    return [*cmd, str(srpm)]


def _mock_cmd(
    srpm: Path, arch: str, resultdir: Path, mock_config: str | None, repos: Sequence[str] = ()
) -> list[str]:
    # mock builds in /builddir/build inside its chroot: a fixed path on every host already.
    cmd = ["mock"]
    if mock_config:
        cmd += ["-r", mock_config]
    for repo in repos:  # a lease's buildroot repositories, added to the chroot's
        cmd.append(f"--addrepo={repo}")
    cmd += ["--rebuild", str(srpm), "--resultdir", str(resultdir), *macro_args(REPRODUCIBLE_MACROS)]
    if arch != "noarch":
        cmd += ["--target", arch]
    return cmd


def build(
    srpm: Path,
    *,
    arch: str,
    results_dir: Path,
    build_path: Path = DEFAULT_BUILD_PATH,
    timeout: float = 3600,
    backend: str = "auto",
    mock_config: str | None = None,
    sandbox: Sandbox | None = None,
    path_env: str | None = None,
    cancel: threading.Event | None = None,
    buildroot_rpms: Sequence[Path] = (),
    repos: Sequence[str] = (),
    max_disk_mb: int = 0,
) -> BuildOutcome:
    """Rebuild srpm for arch; copy the RPMs into results_dir. Build failures never raise.

    With a sandbox (the agent always passes one), rpmbuild runs confined with a minimal
    environment whose PATH is path_env (default: the agent's); without, it runs as before.
    Setting `cancel` stops the build within CANCEL_POLL seconds (outcome.cancelled).
    buildroot_rpms (rpmbuild in bwrap) are unpacked in the sandbox and laid over /usr; repos
    (mock) are added to mock's chroot. A build whose directory grows past max_disk_mb (0: no
    limit) is killed (outcome.limit_exceeded).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, not {backend!r}")
    if not arch or "/" in arch or arch.startswith("-"):
        raise ValueError(f"bad arch {arch!r}")
    if not build_path.is_absolute():
        raise ValueError("build_path must be absolute: it is part of the build output")
    srpm = srpm.absolute()
    results_dir = results_dir.absolute()
    # build_path is wiped, so neither the input nor the results may live inside it.
    for p in (srpm, results_dir):
        if _is_within(p, build_path):
            raise ValueError(f"{p} is inside build_path {build_path}")
    use_mock = backend == "mock" or (backend == "auto" and shutil.which("mock") is not None)
    if buildroot_rpms and not use_mock and (sandbox is None or sandbox.kind != "bwrap"):
        raise ValueError("buildroot packages need the bwrap sandbox (or mock and its repos)")

    results_dir.mkdir(parents=True, exist_ok=True)
    log_path = results_dir / LOG_NAME
    build_path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = build_path.with_name(build_path.name + ".lock")
    rc, ok, stop = -1, False, None
    rpms: list[Path] = []
    # Two builders on one host share build_path, so the whole build runs under an exclusive lock.
    with open(lock_path, "a") as lock, open(log_path, "wb") as log:
        fcntl.flock(lock, fcntl.LOCK_EX)
        started = time.monotonic()  # duration excludes waiting for another build's lock
        try:
            _wipe(build_path)
            build_path.mkdir()
            env = tool_env()
            user: Mapping[str, Any] = {}
            cmd: list[str] | None
            if path_env is not None:
                env["PATH"] = path_env
            if use_mock:
                out_dir = build_path / "mock-result"  # mock writes its own build.log there
                cmd = _mock_cmd(srpm, arch, out_dir, mock_config, repos)
            elif sandbox is not None:
                out_dir = build_path / "RPMS"
                env = sandbox.env(env.get("PATH", os.defpath), build_path)
                user = sandbox.popen_user()
                log.write(f"skyline: sandbox {sandbox.kind}\n".encode())
                inside = _stage_input(srpm, build_path, sandbox)
                extra_usr = None
                if buildroot_rpms:
                    rc, stop = _unpack_buildroot(
                        buildroot_rpms, build_path, sandbox, log, env, timeout, lock, cancel
                    )
                    extra_usr = build_path / BUILDROOT_DIR / "usr"
                if rc not in (-1, 0) or stop:
                    log.write(b"skyline: the buildroot packages could not be unpacked\n")
                    cmd = None
                else:
                    rpmbuild_cmd = _rpmbuild_cmd(
                        inside, arch, build_path, log, buildroot=bool(buildroot_rpms)
                    )
                    cmd = sandbox.command(rpmbuild_cmd, build_path=build_path, extra_usr=extra_usr)
            else:
                out_dir = build_path / "RPMS"
                env["HOME"] = str(build_path)  # ignore the volunteer's ~/.rpmmacros
                cmd = _rpmbuild_cmd(srpm, arch, build_path, log)
            if cmd is not None:
                # Unpacking a buildroot counted against the same wall-time limit.
                spent = time.monotonic() - started if buildroot_rpms else 0.0
                left = max(1.0, timeout - spent)
                watch = _DiskWatch(build_path, max_disk_mb) if max_disk_mb > 0 else None
                rc, stop = _run_logged(cmd, log, env, left, lock, user, cancel, watch)
            rpms = _collect(out_dir, results_dir, log) if rc == 0 else []
            # On a digest failure the copies stay in rpms as evidence, but succeeded is False.
            ok = rc == 0 and bool(rpms) and _digests_ok(rpms, log)
            if rc == 0 and not rpms:
                log.write(b"skyline: build exited 0 but produced no binary RPMs\n")
            log.write(f"skyline: {'succeeded' if ok else 'FAILED'} (rc={rc})\n".encode())
        finally:
            _wipe(build_path)
            # Lock released when the file closes.
    return BuildOutcome(
        succeeded=ok,
        rpms=rpms,
        log=log_path,
        returncode=rc,
        duration=time.monotonic() - started,
        timed_out=stop == "timeout",
        cancelled=stop == "cancelled",
        limit_exceeded=stop == "limit",
    )


class _DiskWatch:
    """Says when the build directory holds more than max_mb (measured every few seconds)."""

    def __init__(self, path: Path, max_mb: int) -> None:
        self.path = path
        self.max_bytes = max_mb * 2**20
        self.max_mb = max_mb
        self.next_check = 0.0

    def __call__(self) -> str | None:
        now = time.monotonic()
        if now < self.next_check:
            return None
        self.next_check = now + DISK_CHECK_SECONDS
        used = disk_usage(self.path)
        if used > self.max_bytes:
            return f"build directory uses {used // 2**20} MiB, over the limit of {self.max_mb} MiB"
        return None


def disk_usage(root: Path) -> int:
    """Bytes allocated under root, not following symbolic links (files may vanish meanwhile)."""
    total, stack = 0, [str(root)]
    while stack:
        try:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    total += st.st_blocks * 512
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
        except OSError:
            continue
    return total


def _unpack_buildroot(
    rpms: Sequence[Path],
    build_path: Path,
    sandbox: Sandbox,
    log: IO[bytes],
    env: dict[str, str],
    timeout: float,
    lock: IO[str],
    cancel: threading.Event | None,
) -> tuple[int, str | None]:
    """Copy the buildroot RPMs in and unpack them under BUILDROOT_DIR, inside the sandbox."""
    staged = build_path / INPUT_DIR / "buildroot"
    staged.mkdir()
    inside = []
    for i, rpm in enumerate(rpms):
        dest = staged / f"{i:03}.rpm"
        shutil.copyfile(rpm, dest)
        inside.append(str(dest))
    if sandbox.identity is not None:
        for path in (staged, *map(Path, inside)):
            os.chown(path, sandbox.identity.uid, sandbox.identity.gid)
    script = _UNPACK.format(root=shlex.quote(str(build_path / BUILDROOT_DIR)))
    cmd = sandbox.command(["sh", "-c", script, "sh", *inside], build_path=build_path)
    return _run_logged(cmd, log, env, timeout, lock, sandbox.popen_user(), cancel)


def _stage_input(srpm: Path, build_path: Path, sandbox: Sandbox) -> Path:
    """Copy the SRPM into build_path (the only path the build sees of the agent's files)."""
    inside = build_path / INPUT_DIR / srpm.name
    inside.parent.mkdir()
    shutil.copyfile(srpm, inside)
    if sandbox.identity is not None:
        # A root agent builds as build_user, who must own what it writes to.
        for path in (build_path, inside.parent, inside):
            os.chown(path, sandbox.identity.uid, sandbox.identity.gid)
    return inside


def _collect(out_dir: Path, results_dir: Path, log: IO[bytes]) -> list[Path]:
    # Source RPMs are excluded: the input SRPM is recorded separately (mock re-emits one).
    # The build wrote out_dir: a symlink there could make the agent copy (and upload) any file
    # it can read, e.g. its key. Only regular files really inside out_dir are results.
    if out_dir.is_symlink() or not out_dir.is_dir():
        return []
    root = out_dir.resolve()
    found = sorted(
        p for p in out_dir.rglob("*.rpm") if p.is_file() and not p.name.endswith(".src.rpm")
    )
    copied: list[Path] = []
    for src in found:
        if src.is_symlink() or not src.resolve().is_relative_to(root):
            log.write(f"skyline: {src.name} is a symbolic link; ignored\n".encode())
            continue
        dest = results_dir / src.name
        _copy_nofollow(src, dest)
        log.write(f"skyline: result {dest.name}\n".encode())
        copied.append(dest)
    return copied


def _copy_nofollow(src: Path, dest: Path) -> None:
    fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as fin, open(dest, "wb") as fout:
        shutil.copyfileobj(fin, fout)


def _digests_ok(rpms: list[Path], log: IO[bytes]) -> bool:
    for path in rpms:
        try:
            check_rpm_digests(path)
        except RpmCheckError as exc:
            log.write(f"skyline: {exc}\n".encode())
            return False
    return True
