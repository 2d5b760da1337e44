"""Real rpmbuild inside the real bubblewrap sandbox: hostile spec files, honest ones, limits.

Each test builds a real SRPM (services/common/rpmfiles.make_srpm) and rebuilds it with
services.builder.rpmbuild.build() in the sandbox the agent would make (sandbox.resolve()).
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.builder import rpmbuild, sandbox
from services.common.config import BuilderConfig
from services.common.rpmfiles import make_srpm, sha256_file

REPO = Path(__file__).parents[3]
SECRET = "skyline-test-secret-7f3a9c"  # the "private key": must never leave the agent
PROCESS_LIMIT = 64

SANDBOX_PROBLEM = sandbox.bwrap_problem()
pytestmark = [
    pytest.mark.skipif(shutil.which("rpmbuild") is None, reason="needs rpmbuild"),
    pytest.mark.skipif(SANDBOX_PROBLEM is not None, reason=f"no sandbox: {SANDBOX_PROBLEM}"),
]


def wait_for(condition, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


class Host:
    """A volunteer's machine as the build could see it: an agent work directory with a key, a
    file outside the build directory, and the shared fixed build path."""

    def __init__(self, root: Path) -> None:
        # Not under /tmp or /var/tmp: those are fresh inside the sandbox anyway, so only a
        # directory elsewhere shows that hiding the work directory works.
        self.workdir = root / "agent"
        self.workdir.mkdir()
        self.key = self.workdir / "host.key"
        self.key.write_text(SECRET + "\n")
        # World-readable and world-writable on purpose: only the sandbox may stop the build.
        self.key.chmod(0o644)
        self.outside = root / "outside.txt"
        self.outside.write_text("original\n")
        self.outside.chmod(0o666)
        root.chmod(0o755)
        self.workdir.chmod(0o755)

    def sandbox(self, *, processes: int = PROCESS_LIMIT, file_mb: int = 20480) -> sandbox.Sandbox:
        settings = BuilderConfig(
            build_max_processes=processes, build_max_file_mb=file_mb, backend="rpmbuild"
        )
        box = sandbox.resolve(settings, hide=[self.workdir])
        assert box.kind == "bwrap", box.reason
        return box


@pytest.fixture
def host() -> Iterator[Host]:
    root = Path(tempfile.mkdtemp(prefix=".sandbox-test-", dir=REPO))
    try:
        yield Host(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def build_path() -> Iterator[Path]:
    """A build path like /var/tmp/skyline-build, private to this test (a root agent's build
    user must reach it: /var/tmp is world-traversable, pytest's tmp_path is not)."""
    parent = Path(tempfile.mkdtemp(prefix="skyline-test-", dir="/var/tmp"))
    parent.chmod(0o755)
    try:
        yield parent / "skyline-build"
    finally:
        shutil.rmtree(parent, ignore_errors=True)


def write_spec(directory: Path, name: str, build: str, *, arch: str = "noarch") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    spec = directory / f"{name}.spec"
    build_arch = "BuildArch: noarch" if arch == "noarch" else ""
    spec.write_text(
        f"""%global debug_package %{{nil}}
Name: {name}
Version: 1.0
Release: 1
Summary: Skyline sandbox test package
License: MIT
{build_arch}

%description
A test package.

%prep

%build
{build}

%install
mkdir -p %{{buildroot}}/usr/share/{name}
cp -a out/. %{{buildroot}}/usr/share/{name}/ 2>/dev/null || true
echo {name} > %{{buildroot}}/usr/share/{name}/marker

%files
/usr/share/{name}

%changelog
* Mon Jan 01 2024 Skyline Developers <skyline@example.invalid> - 1.0-1
- Test
"""
    )
    return spec


def host_address() -> str | None:
    """This machine's address on its default route (reachable without the sandbox)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET: nothing is sent for UDP connect
            addr = s.getsockname()[0]
        except OSError:
            return None
    return None if addr.startswith("127.") else addr


class Listener:
    """A TCP server on all addresses that records whether anyone connected."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("0.0.0.0", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


def test_hostile_spec_is_contained(host: Host, build_path: Path, tmp_path: Path) -> None:
    listener = Listener()
    # The control: without the sandbox, the listener is reachable on these addresses.
    targets = ["127.0.0.1", *([a] if (a := host_address()) else [])]
    for addr in targets:
        socket.create_connection((addr, listener.port), timeout=5).close()
    assert wait_for(lambda: listener.connections == len(targets))
    before = listener.connections

    checks = "\n".join(
        f"(echo hi > /dev/tcp/{addr}/{listener.port}) 2>/dev/null "
        f"&& echo 'ATTACK net {addr}: CONNECTED' || echo 'ATTACK net {addr}: blocked'"
        for addr in targets
    )
    fork_bomb = f"""python3 - <<'EOF'
import os, time
kids = []
try:
    while len(kids) < {PROCESS_LIMIT * 20}:
        pid = os.fork()
        if pid == 0:
            time.sleep(60)
            os._exit(0)
        kids.append(pid)
    print("ATTACK fork: NOT LIMITED", len(kids))
except OSError as exc:
    print("ATTACK fork: stopped after", len(kids), "children:", exc)
for pid in kids:
    os.kill(pid, 9)
    os.waitpid(pid, 0)
EOF"""
    spec = write_spec(
        tmp_path / "spec",
        "skyline-hostile",
        f"""mkdir -p out
# 1. The agent's key, by its path and through the agent's processes.
cat {host.key} > out/stolen 2>/dev/null && echo 'ATTACK key: READ' || echo 'ATTACK key: blocked'
ls -la {host.workdir} || true
cat /proc/*/environ 2>/dev/null | tr '\\0' '\\n' | grep -c . || true
# 2. Writing outside the build directory.
echo pwned > {host.outside} 2>/dev/null \
  && echo 'ATTACK write: WROTE' || echo 'ATTACK write: blocked'
rm -f {host.outside} 2>/dev/null && echo 'ATTACK rm: REMOVED' || echo 'ATTACK rm: blocked'
touch /etc/skyline-pwned 2>/dev/null && echo 'ATTACK etc: WROTE' || echo 'ATTACK etc: blocked'
# 3. The network: the host's loopback and its address.
{checks}
# 4. A fork bomb: bounded by the process limit.
{fork_bomb}
# 5. A symbolic link to the key among the results: the agent must not follow it.
mkdir -p %{{_topdir}}/RPMS/noarch
ln -s {host.key} %{{_topdir}}/RPMS/noarch/zz-stolen-1.0-1.noarch.rpm
echo "ATTACK ran as $(id -u):$(id -g) on $(hostname)"
""",
    )
    srpm = make_srpm(spec, tmp_path / "srpm")
    try:
        outcome = rpmbuild.build(
            srpm,
            arch="noarch",
            results_dir=tmp_path / "results",
            build_path=build_path,
            timeout=300,
            sandbox=host.sandbox(),
        )
    finally:
        listener.close()
    text = outcome.log.read_text()
    assert outcome.succeeded, text
    assert "ATTACK key: blocked" in text
    assert "ATTACK write: blocked" in text
    assert "ATTACK rm: blocked" in text
    assert "ATTACK etc: blocked" in text
    for addr in targets:
        assert f"ATTACK net {addr}: blocked" in text
    assert "ATTACK fork: stopped after" in text, text
    stopped = int(text.split("ATTACK fork: stopped after", 1)[1].split()[0])
    assert stopped < PROCESS_LIMIT
    assert "ATTACK ran as 1000:1000 on skyline" in text
    # The volunteer's machine and the agent are untouched; the key went nowhere.
    assert listener.connections == before
    assert host.outside.read_text() == "original\n"
    assert not Path("/etc/skyline-pwned").exists()
    assert host.key.read_text() == SECRET + "\n"
    assert SECRET not in text
    assert [p.name for p in outcome.rpms] == ["skyline-hostile-1.0-1.noarch.rpm"]
    for path in (tmp_path / "results").iterdir():
        assert SECRET.encode() not in path.read_bytes(), path
    assert not build_path.exists()


HONEST_BUILD = """mkdir -p out
cat > hello.c <<'EOF'
#include <stdio.h>
int main(void) { puts("hello from the sandbox"); return 0; }
EOF
gcc -O2 -g -o out/hello hello.c
./out/hello
"""


def test_honest_package_is_byte_identical_on_two_builders(
    host: Host, build_path: Path, tmp_path: Path
) -> None:
    """Two builder agents (each its own work directory, hidden from the other's build) get the
    same bytes from a compiled package: the build path is the same inside the sandbox."""
    arch = os.uname().machine
    spec = write_spec(tmp_path / "spec", "skyline-honest", HONEST_BUILD, arch=arch)
    srpm = make_srpm(spec, tmp_path / "srpm")
    second = tmp_path / "second-agent"
    second.mkdir()
    boxes = [
        host.sandbox(),
        sandbox.resolve(BuilderConfig(backend="rpmbuild"), hide=[second]),
    ]
    outcomes = [
        rpmbuild.build(
            srpm,
            arch=arch,
            results_dir=tmp_path / f"results-{i}",
            build_path=build_path,
            timeout=300,
            sandbox=box,
        )
        for i, box in enumerate(boxes)
    ]
    for outcome in outcomes:
        assert outcome.succeeded, outcome.log.read_text()
        assert "hello from the sandbox" in outcome.log.read_text()
        assert [p.name for p in outcome.rpms] == [f"skyline-honest-1.0-1.{arch}.rpm"]
    a, b = (sha256_file(o.rpms[0]) for o in outcomes)
    assert a == b


def _processes_with(marker: str) -> list[int]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if marker.encode() in cmdline.read_bytes():
                found.append(int(cmdline.parent.name))
        except OSError:
            continue
    return found


def test_timed_out_build_is_killed_with_its_whole_tree(
    host: Host, build_path: Path, tmp_path: Path
) -> None:
    marker = f"{os.getpid() % 1000 + 7000}.{time.monotonic_ns() % 997}"
    spec = write_spec(
        tmp_path / "spec",
        "skyline-slow",
        # A detached grandchild (its own session) and a foreground sleeper.
        f"setsid sleep {marker} &\nsleep {marker}\n",
    )
    srpm = make_srpm(spec, tmp_path / "srpm")
    result: list[rpmbuild.BuildOutcome] = []
    thread = threading.Thread(
        target=lambda: result.append(
            rpmbuild.build(
                srpm,
                arch="noarch",
                results_dir=tmp_path / "results",
                build_path=build_path,
                timeout=4,
                sandbox=host.sandbox(),
            )
        )
    )
    thread.start()
    try:
        assert wait_for(lambda: len(_processes_with(f"sleep\0{marker}")) == 2, 30)
    finally:
        thread.join(60)
    (outcome,) = result
    assert outcome.timed_out and not outcome.succeeded
    assert "timed out after 4s" in outcome.log.read_text()
    assert wait_for(lambda: not _processes_with(f"sleep\0{marker}"), 5)
    assert not build_path.exists()


def test_cancelled_build_stops_within_seconds(host: Host, build_path: Path, tmp_path: Path) -> None:
    """A revoked lease: the build and everything it started are gone within 5 s."""
    marker = f"{os.getpid() % 1000 + 8000}.{time.monotonic_ns() % 991}"
    spec = write_spec(
        tmp_path / "spec", "skyline-long", f"setsid sleep {marker} &\nsleep {marker}\n"
    )
    srpm = make_srpm(spec, tmp_path / "srpm")
    cancel = threading.Event()
    result: list[rpmbuild.BuildOutcome] = []
    thread = threading.Thread(
        target=lambda: result.append(
            rpmbuild.build(
                srpm,
                arch="noarch",
                results_dir=tmp_path / "results",
                build_path=build_path,
                timeout=300,
                sandbox=host.sandbox(),
                cancel=cancel,
            )
        )
    )
    thread.start()
    try:
        assert wait_for(lambda: len(_processes_with(f"sleep\0{marker}")) == 2, 30)
    finally:
        cancel.set()
        revoked_at = time.monotonic()
        thread.join(60)
    assert time.monotonic() - revoked_at < 5
    (outcome,) = result
    assert outcome.cancelled and not outcome.timed_out and not outcome.succeeded
    assert "build cancelled" in outcome.log.read_text()
    assert wait_for(lambda: not _processes_with(f"sleep\0{marker}"), 5)
    assert not build_path.exists()


def test_disk_and_file_size_limits(host: Host, build_path: Path, tmp_path: Path) -> None:
    """One file over the file-size limit fails to be written; a build directory that outgrows
    the disk limit gets the build killed, reported as a limit (not the package's failure)."""
    spec = write_spec(
        tmp_path / "spec",
        "skyline-greedy",
        """head -c 3M /dev/zero > one-big-file && echo 'ATTACK fsize: WROTE' \\
  || echo 'ATTACK fsize: blocked'
rm -f one-big-file
for i in $(seq 1 400); do head -c 1M /dev/zero > chunk.$i; sleep 0.05; done
echo 'ATTACK disk: NOT LIMITED'
""",
    )
    srpm = make_srpm(spec, tmp_path / "srpm")
    outcome = rpmbuild.build(
        srpm,
        arch="noarch",
        results_dir=tmp_path / "results",
        build_path=build_path,
        timeout=120,
        sandbox=host.sandbox(file_mb=2),
        max_disk_mb=20,
    )
    text = outcome.log.read_text()
    assert "ATTACK fsize: blocked" in text
    assert outcome.limit_exceeded and not outcome.timed_out and not outcome.succeeded, text
    assert "over the limit of 20 MiB" in text and "NOT LIMITED" not in text
    assert not build_path.exists()
