"""The sandbox every rpmbuild build runs in: bubblewrap, unprivileged, offline, read-only.

A volunteer runs strangers' spec files next to the host's private key. Inside the sandbox:
- new user, PID, IPC, UTS, network and cgroup namespaces (--unshare-all): no network but a
  private loopback, no view of the agent's processes, no capabilities;
- the host's file system read-only; fresh /tmp, /var/tmp, /run (its sockets, e.g. a container
  daemon's, would otherwise still accept connections), /dev and /proc;
- the agent's work directory (key, journal, task files) and home hidden under empty tmpfs;
- only the build directory writable, at the same absolute path inside as outside (it is baked
  into the RPMs, so it must be identical on every host);
- process, address-space, file-size and core limits (prlimit inside), a constant uid/gid and
  host name, and a minimal environment, so two hosts see the same thing;
- the wall-time limit is the caller's (rpmbuild._run_logged kills bwrap's process group; with
  --die-with-parent and a PID namespace, every process in the sandbox dies with it).

bwrap sets no_new_privs, so setuid programs gain nothing inside. Buildroot packages (a lease's
repositories) are unpacked inside the sandbox and laid over /usr (overlay_args).

An agent running as root never builds as root: it starts bwrap as `build_user` (unprivileged
user namespaces), and without a sandbox it still drops to that user.

mock (where installed) brings its own chroot and isolation; this module only names it.
"""

from __future__ import annotations

import dataclasses
import os
import pwd
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from services.common.config import BuilderConfig
from services.common.errors import ConfigError

__all__ = ["KINDS", "Identity", "Limits", "Sandbox", "build_identity", "probe_bwrap", "resolve"]

KINDS = ("bwrap", "mock", "none")
# The uid/gid and host name inside the sandbox: the same on every host, whoever runs the agent.
SANDBOX_UID = 1000
SANDBOX_GID = 1000
SANDBOX_HOSTNAME = "skyline"
# Paths that get a fresh, empty tmpfs: scratch space, and where sockets and secrets live.
FRESH_DIRS = ("/tmp", "/var/tmp", "/run")
PROBE_TIMEOUT = 30


@dataclasses.dataclass(frozen=True)
class Identity:
    """The unprivileged user a root agent starts its builds as."""

    name: str
    uid: int
    gid: int


@dataclasses.dataclass(frozen=True)
class Limits:
    """Per-build resource limits (0: no limit)."""

    processes: int = 1024  # RLIMIT_NPROC, counted inside the sandbox's user namespace
    memory_mb: int = 16384  # RLIMIT_AS per process
    file_size_mb: int = 20480  # RLIMIT_FSIZE: the largest file a build may write

    def prlimit_args(self, *, processes: bool = True) -> list[str]:
        """prlimit's arguments; processes=False outside a user namespace, where RLIMIT_NPROC
        would count every process of the user, not just the build's."""
        args = ["prlimit", "--core=0"]
        if self.processes and processes:
            args.append(f"--nproc={self.processes}")
        if self.memory_mb:
            args.append(f"--as={self.memory_mb * 2**20}")
        if self.file_size_mb:
            args.append(f"--fsize={self.file_size_mb * 2**20}")
        return [*args, "--"]


@dataclasses.dataclass(frozen=True)
class Sandbox:
    """How this agent's builds are confined; `kind` is what the heartbeat and manifest say."""

    kind: str
    limits: Limits = Limits()
    hide: tuple[Path, ...] = ()  # made invisible (empty tmpfs) inside the sandbox
    identity: Identity | None = None  # set when the agent runs as root: builds run as this
    reason: str = ""  # why there is no sandbox, for the start-up message

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"sandbox kind must be one of {KINDS}, not {self.kind!r}")

    def command(
        self, cmd: list[str], *, build_path: Path, extra_usr: Path | None = None
    ) -> list[str]:
        """cmd wrapped for this sandbox; runs in build_path (mock confines its own builds).

        extra_usr (inside build_path): a tree laid over /usr inside the sandbox, e.g. the
        buildroot packages a lease's repositories offered (bwrap only).
        """
        if self.kind == "mock":
            return cmd
        if self.kind == "none":
            if extra_usr is not None:
                raise ValueError("buildroot packages need the bwrap sandbox")
            return [*self.limits.prlimit_args(processes=False), *cmd]
        inner = [*self.limits.prlimit_args(), *cmd]
        if extra_usr is None:
            return [*bwrap_args(build_path, self.hide), *inner]
        return overlay_args(build_path, self.hide, extra_usr) + inner

    def env(self, path: str, build_path: Path) -> dict[str, str]:
        """A minimal environment: the agent's (broker passwords, tokens) never gets in."""
        return {
            "PATH": path,
            "LC_ALL": "C",
            "HOME": str(build_path),  # ignore the volunteer's ~/.rpmmacros
            "TMPDIR": "/tmp",
        }

    def popen_user(self) -> dict[str, Any]:
        """Popen keyword arguments that drop a root agent to the build user."""
        if self.identity is None:
            return {}
        return {"user": self.identity.uid, "group": self.identity.gid, "extra_groups": []}


def bwrap_args(build_path: Path, hide: Iterable[Path], *, mounter: bool = False) -> list[str]:
    """The sandbox; mounter: as uid 0 of its user namespace with its capabilities there (only
    to mount an overlay before overlay_args' inner bwrap drops them)."""
    who = ["--uid", "0", "--gid", "0", "--cap-add", "ALL"] if mounter else []
    args = [
        "bwrap",
        "--unshare-all",
        "--unshare-user",  # also when started as root: no capabilities inside
        *(who or ["--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_GID)]),
        "--hostname",
        SANDBOX_HOSTNAME,
        "--die-with-parent",
        "--new-session",  # no TIOCSTI into the agent's terminal
        "--ro-bind",
        "/",
        "/",
        "--dev",
        "/dev",
        "--proc",
        "/proc",
    ]
    for fresh in FRESH_DIRS:
        args += ["--tmpfs", fresh]
    # Hidden paths after the fresh ones, so one inside /tmp (a test's work directory) stays
    # hidden; the build path last, so it is bound even inside a fresh or hidden path.
    for path in hide:
        if path.exists() and not _is_within(build_path, path):
            args += ["--tmpfs", str(path)]
    args += ["--bind", str(build_path), str(build_path), "--chdir", str(build_path), "--"]
    return args


# Runs as root of the outer sandbox's user namespace: lay $1 over /usr, then run the rest.
_MOUNT_USR = 'mount -t overlay overlay -o "ro,lowerdir=$1:/usr" /usr && shift && exec "$@"'


def overlay_args(build_path: Path, hide: Iterable[Path], extra_usr: Path) -> list[str]:
    """Two sandboxes: the outer one (bwrap_args as a mounter) lays extra_usr over /usr with
    an overlay (unprivileged since Linux 5.11; bwrap 0.8 has no --overlay), then runs an inner
    bwrap that drops to SANDBOX_UID with no capabilities in a nested user namespace. The inner
    one keeps the outer's mounts (read-only stays read-only) and its fresh, writable dirs."""
    if not _is_within(extra_usr, build_path):
        raise ValueError(f"{extra_usr} is not inside the build path {build_path}")
    if any(c in str(extra_usr) for c in ":,\\"):
        raise ValueError(f"{extra_usr}: overlay options cannot hold ':', ',' or '\\'")
    inner = [
        "bwrap",
        "--unshare-all",
        "--unshare-user",
        "--uid",
        str(SANDBOX_UID),
        "--gid",
        str(SANDBOX_GID),
        "--die-with-parent",
        "--ro-bind",
        "/",
        "/",
        "--dev",
        "/dev",
        "--proc",
        "/proc",
    ]
    for fresh in FRESH_DIRS:
        inner += ["--bind", fresh, fresh]
    inner += ["--bind", str(build_path), str(build_path), "--chdir", str(build_path), "--"]
    outer = bwrap_args(build_path, hide, mounter=True)
    return [*outer, "sh", "-c", _MOUNT_USR, "sh", str(extra_usr), *inner]


def _is_within(path: Path, parent: Path) -> bool:
    return path.resolve().is_relative_to(parent.resolve())


def build_identity(user: str) -> Identity | None:
    """The user a root agent builds as; None when the agent is not root. Raises ValueError."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise ValueError(
            f"the agent runs as root, so builds run as [builder] build_user {user!r}, "
            "but there is no such user"
        ) from None
    if entry.pw_uid == 0 or entry.pw_gid == 0:
        raise ValueError(f"[builder] build_user {user!r} is root: builds never run as root")
    return Identity(user, entry.pw_uid, entry.pw_gid)


def probe_bwrap(identity: Identity | None, env: Mapping[str, str]) -> str | None:
    """Why bwrap cannot make a sandbox here (e.g. user namespaces disabled), or None if it can."""
    if shutil.which("bwrap", path=env.get("PATH")) is None:
        return "bubblewrap (bwrap) is not installed"
    probe = Sandbox("bwrap", identity=identity)
    scratch = Path("/")  # any existing directory: the probe writes nothing
    cmd = probe.command(["true"], build_path=scratch)
    try:
        proc = subprocess.run(
            cmd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            env=dict(env),
            timeout=PROBE_TIMEOUT,
            check=False,
            **probe.popen_user(),
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"bwrap cannot start: {exc}"
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip()
        return f"bwrap cannot make a sandbox here (rc={proc.returncode}): {err[:300]}"
    return None


def resolve(settings: BuilderConfig, *, hide: Iterable[Path]) -> Sandbox:
    """This agent's sandbox from its settings, probed at start-up; raises ConfigError.

    mock where chosen or (backend auto) installed, unless the agent is root (mock refuses
    root); else rpmbuild in bwrap; else nothing, only if the volunteer allowed it.
    """
    limits = Limits(
        processes=settings.build_max_processes,
        memory_mb=settings.build_max_memory_mb,
        file_size_mb=settings.build_max_file_mb,
    )
    if min(limits.processes, limits.memory_mb, limits.file_size_mb) < 0:
        raise ConfigError("[builder] build_max_* limits must be 0 (no limit) or more")
    try:
        identity = build_identity(settings.build_user)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    hidden = tuple(dict.fromkeys(p.resolve() for p in hide if p.resolve() != Path("/")))
    mock = shutil.which("mock") is not None
    if settings.backend == "mock" or (settings.backend == "auto" and mock and identity is None):
        if identity is not None:
            raise ConfigError("mock refuses to run as root: run the agent as a user in group mock")
        return Sandbox("mock", limits, hidden)
    env = {"PATH": settings.tool_path or os.environ.get("PATH", os.defpath)}
    problem = probe_bwrap(identity, env)
    if problem is None:
        return Sandbox("bwrap", limits, hidden, identity)
    if not settings.allow_unsandboxed:
        raise ConfigError(
            f"refusing to build without a sandbox: {problem}. Install bubblewrap and allow "
            "unprivileged user namespaces, or set [builder] allow_unsandboxed = true to run "
            "strangers' spec files unconfined on this machine"
        )
    return Sandbox("none", limits, hidden, identity, reason=problem)


def bwrap_problem(build_user: str = "nobody") -> str | None:
    """Why builds could not be sandboxed here with default settings, or None (for tests and
    diagnostics: the agent itself calls resolve())."""
    try:
        identity = build_identity(build_user)
    except ValueError as exc:
        return str(exc)
    return probe_bwrap(identity, {"PATH": os.environ.get("PATH", os.defpath)})
