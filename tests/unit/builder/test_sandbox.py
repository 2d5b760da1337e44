"""The sandbox's command line and choice (pure parts; tests/integration/builder runs builds)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from services.builder import sandbox
from services.common.config import BuilderConfig
from services.common.errors import ConfigError


def test_bwrap_command_hides_then_binds_the_build_path(tmp_path: Path) -> None:
    hidden, missing = tmp_path / "agent", tmp_path / "absent"
    hidden.mkdir()
    build = Path("/var/tmp/skyline-build")
    box = sandbox.Sandbox("bwrap", sandbox.Limits(processes=10, memory_mb=2, file_size_mb=3))
    box = sandbox.Sandbox("bwrap", box.limits, hide=(hidden, missing, build.parent))
    cmd = box.command(["rpmbuild", "--rebuild", "x.src.rpm"], build_path=build)
    sep = cmd.index("--")
    args = cmd[:sep]
    for flag in ("--unshare-all", "--unshare-user", "--die-with-parent", "--new-session"):
        assert flag in args
    assert args[args.index("--ro-bind") + 1 : args.index("--ro-bind") + 3] == ["/", "/"]
    tmpfs = [args[i + 1] for i, a in enumerate(args) if a == "--tmpfs"]
    # Fresh scratch and socket dirs, then the work directory; never a missing path, nor one
    # holding the build path (which would hide it).
    assert tmpfs == ["/tmp", "/var/tmp", "/run", str(hidden)]
    assert args[-5:] == ["--bind", str(build), str(build), "--chdir", str(build)]
    assert cmd[sep + 1 :] == [
        "prlimit",
        "--core=0",
        "--nproc=10",
        f"--as={2 * 2**20}",
        f"--fsize={3 * 2**20}",
        "--",
        "rpmbuild",
        "--rebuild",
        "x.src.rpm",
    ]


def test_unsandboxed_and_mock_commands() -> None:
    cmd = ["rpmbuild", "--rebuild", "x"]
    assert sandbox.Sandbox("mock").command(cmd, build_path=Path("/b")) == cmd
    none = sandbox.Sandbox("none").command(cmd, build_path=Path("/b"))
    assert none[0] == "prlimit" and not any(a.startswith("--nproc") for a in none)
    assert none[-3:] == cmd


def test_the_environment_is_minimal() -> None:
    env = sandbox.Sandbox("bwrap").env("/usr/bin:/bin", Path("/var/tmp/skyline-build"))
    assert env == {
        "PATH": "/usr/bin:/bin",
        "LC_ALL": "C",
        "HOME": "/var/tmp/skyline-build",
        "TMPDIR": "/tmp",
    }


@pytest.mark.skipif(os.geteuid() != 0, reason="the agent must run as root for this")
def test_a_root_agent_builds_as_the_build_user_never_root() -> None:
    identity = sandbox.build_identity("nobody")
    assert identity is not None and identity.uid != 0
    assert sandbox.Sandbox("bwrap", identity=identity).popen_user() == {
        "user": identity.uid,
        "group": identity.gid,
        "extra_groups": [],
    }
    with pytest.raises(ValueError, match="is root"):
        sandbox.build_identity("root")
    with pytest.raises(ValueError, match="no such user"):
        sandbox.build_identity("no-such-user-skyline")


def test_resolve_refuses_bad_limits_and_unknown_kinds() -> None:
    with pytest.raises(ConfigError, match="build_max"):
        sandbox.resolve(BuilderConfig(build_max_processes=-1), hide=[])
    with pytest.raises(ValueError, match="kind"):
        sandbox.Sandbox("chroot")


def test_buildroot_overlay_drops_to_the_build_uid_in_a_nested_sandbox() -> None:
    build = Path("/var/tmp/skyline-build")
    usr = build / "skyline-buildroot/usr"
    cmd = sandbox.Sandbox("bwrap").command(["rpmbuild"], build_path=build, extra_usr=usr)
    outer_end = cmd.index("sh")
    outer, rest = cmd[:outer_end], cmd[outer_end:]
    # The outer sandbox mounts (uid 0 and capabilities of its own user namespace only) ...
    assert outer[0] == "bwrap" and "--cap-add" in outer and outer[outer.index("--uid") + 1] == "0"
    assert rest[:2] == ["sh", "-c"] and "mount -t overlay" in rest[2] and rest[4] == str(usr)
    # ... then the inner one runs the build as the sandbox uid, without capabilities.
    inner = rest[5:]
    assert inner[0] == "bwrap" and "--cap-add" not in inner
    assert inner[inner.index("--uid") + 1] == str(sandbox.SANDBOX_UID)
    assert inner[inner.index("--") + 1 :][0] == "prlimit" and inner[-1] == "rpmbuild"
    with pytest.raises(ValueError, match="not inside the build path"):
        sandbox.overlay_args(build, (), Path("/usr"))
    with pytest.raises(ValueError, match="overlay options"):
        sandbox.overlay_args(build, (), build / "a:b")
    with pytest.raises(ValueError, match="need the bwrap sandbox"):
        sandbox.Sandbox("none").command(["x"], build_path=build, extra_usr=usr)
