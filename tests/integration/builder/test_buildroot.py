"""Buildroots from repositories: package B needs a file only package A's RPM provides.

A's RPM is offered in a repository made by createrepo_c and served over HTTP; the agent's
buildroot module reads it and the sandboxed build of B uses the file. Without it, B fails.
"""

from __future__ import annotations

import functools
import http.server
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from services.builder import buildroot, rpmbuild, sandbox
from services.common.config import BuilderConfig
from services.common.rpmfiles import make_srpm

SANDBOX_PROBLEM = sandbox.bwrap_problem()
TOOLS = ("rpmbuild", "createrepo_c", "rpm2archive", "tar")
pytestmark = [
    pytest.mark.skipif(not all(shutil.which(t) for t in TOOLS), reason=f"needs {', '.join(TOOLS)}"),
    pytest.mark.skipif(SANDBOX_PROBLEM is not None, reason=f"no sandbox: {SANDBOX_PROBLEM}"),
]

PROVIDED = "/usr/share/skyline-base/greeting.txt"
GREETING = "greetings from package A"

SPEC_A = f"""Name: skyline-base
Version: 1.0
Release: 1
Summary: Provides a file
License: MIT
BuildArch: noarch

%description
Provides {PROVIDED}.

%prep

%build

%install
mkdir -p %{{buildroot}}{Path(PROVIDED).parent}
echo '{GREETING}' > %{{buildroot}}{PROVIDED}

%files
{PROVIDED}

%changelog
* Mon Jan 01 2024 Skyline Developers <skyline@example.invalid> - 1.0-1
- Test
"""

SPEC_B = f"""Name: skyline-user
Version: 1.0
Release: 1
Summary: Needs package A's file
License: MIT
BuildArch: noarch
BuildRequires: {PROVIDED}

%description
Uses {PROVIDED} at build time.

%prep

%build
echo "skyline-test: using {PROVIDED}"
cat {PROVIDED} > used.txt
cat used.txt

%install
mkdir -p %{{buildroot}}/usr/share/skyline-user
cp used.txt %{{buildroot}}/usr/share/skyline-user/

%files
/usr/share/skyline-user

%changelog
* Mon Jan 01 2024 Skyline Developers <skyline@example.invalid> - 1.0-1
- Test
"""


@pytest.fixture
def build_path() -> Iterator[Path]:
    parent = Path(tempfile.mkdtemp(prefix="skyline-test-", dir="/var/tmp"))
    parent.chmod(0o755)
    try:
        yield parent / "skyline-build"
    finally:
        shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture
def repo_url(tmp_path: Path, build_path: Path) -> Iterator[str]:
    """Package A built, put in a createrepo_c repository, served over HTTP."""
    (tmp_path / "a").mkdir()
    (tmp_path / "a/skyline-base.spec").write_text(SPEC_A)
    srpm = make_srpm(tmp_path / "a/skyline-base.spec", tmp_path / "a-srpm")
    built = rpmbuild.build(
        srpm, arch="noarch", results_dir=tmp_path / "a-results", build_path=build_path
    )
    assert built.succeeded, built.log.read_text()
    repo = tmp_path / "repo"
    (repo / "Packages").mkdir(parents=True)
    for rpm in built.rpms:
        shutil.copy(rpm, repo / "Packages")
    subprocess.run(["createrepo_c", "--quiet", str(repo)], check=True, timeout=120)
    handler = functools.partial(QuietHandler, directory=str(repo))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


async def test_b_builds_with_a_from_the_repository_and_fails_without(
    tmp_path: Path, build_path: Path, repo_url: str
) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b/skyline-user.spec").write_text(SPEC_B)
    srpm = make_srpm(tmp_path / "b/skyline-user.spec", tmp_path / "b-srpm")
    box = sandbox.resolve(BuilderConfig(backend="rpmbuild"), hide=[])
    assert box.kind == "bwrap"

    async with aiohttp.ClientSession() as session:
        rpms = await buildroot.fetch_buildroot(
            session, [repo_url], "noarch", tmp_path / "buildroot"
        )
    assert [p.name for p in rpms] == ["0-skyline-base-1.0-1.noarch.rpm"]

    with_a = rpmbuild.build(
        srpm,
        arch="noarch",
        results_dir=tmp_path / "with",
        build_path=build_path,
        sandbox=box,
        buildroot_rpms=rpms,
    )
    log = with_a.log.read_text()
    assert with_a.succeeded, log
    assert "skyline: buildroot: skyline-base-1.0-1.noarch" in log
    assert f"skyline-test: using {PROVIDED}" in log and GREETING in log
    # The file is only laid over /usr inside the sandbox: the host never got it.
    assert not Path(PROVIDED).exists()

    without = rpmbuild.build(
        srpm, arch="noarch", results_dir=tmp_path / "without", build_path=build_path, sandbox=box
    )
    assert not without.succeeded and not without.timed_out
    assert f"{PROVIDED}: No such file or directory" in without.log.read_text()


def test_repository_metadata_is_checked() -> None:
    with pytest.raises(buildroot.BuildrootError, match="unsafe location"):
        buildroot._checked_href("../../etc/passwd")
    with pytest.raises(buildroot.BuildrootError, match="unsafe location"):
        buildroot._checked_href("/abs/path.rpm")
    with pytest.raises(buildroot.BuildrootError, match="not valid XML"):
        buildroot.primary_location(b"<!DOCTYPE x [<!ENTITY a 'b'>]><x>&a;</x>")
    with pytest.raises(buildroot.BuildrootError, match="no primary"):
        buildroot.primary_location(b'<repomd xmlns="http://linux.duke.edu/metadata/repo"/>')
