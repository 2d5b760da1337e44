"""Tests for the builder's rpmbuild backend; builds real (tiny) RPMs (~0.2 s each)."""

from __future__ import annotations

import errno
import hashlib
import shutil
import threading
from pathlib import Path

import pytest

from services.builder import rpmbuild as rb
from services.common.rpmfiles import (
    make_srpm,
    read_rpm_info,
    result_set_digest,
    sha256_file,
)

EXAMPLE_DIR = Path(__file__).parents[3] / "examples/skyline-hello"
SPEC_NAME = "skyline-hello.spec"


def set_digest(rpms: list[Path]) -> str:
    return result_set_digest((p.name, sha256_file(p)) for p in rpms)


@pytest.fixture(scope="module")
def srpm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_srpm(EXAMPLE_DIR / SPEC_NAME, tmp_path_factory.mktemp("srpm"))


def test_two_hosts_are_byte_identical(srpm: Path, tmp_path: Path) -> None:
    build_path = tmp_path / "build"  # same fixed path for both "hosts", like production
    a = rb.build(srpm, arch="noarch", results_dir=tmp_path / "hostA/work", build_path=build_path)
    b = rb.build(srpm, arch="x86_64", results_dir=tmp_path / "hostB/w", build_path=build_path)
    for outcome in (a, b):
        assert outcome.succeeded, outcome.log.read_text()
        assert outcome.returncode == 0
        assert outcome.log.is_file() and outcome.log.parent.name in {"work", "w"}
        assert [p.name for p in outcome.rpms] == ["skyline-hello-1.0-1.noarch.rpm"]
        assert outcome.duration > 0
    assert a.rpms[0].read_bytes() == b.rpms[0].read_bytes()
    assert set_digest(a.rpms) == set_digest(b.rpms)
    info = read_rpm_info(a.rpms[0])
    assert (info.nvr, info.arch, info.sourcerpm) == (
        "skyline-hello-1.0-1",
        "noarch",
        "skyline-hello-1.0-1.src.rpm",
    )
    # build_path is wiped after each build; results persist in the per-host results_dir.
    assert not build_path.exists()
    assert (tmp_path / "build.lock").exists()


def test_inherited_source_date_epoch_is_ignored(
    srpm: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    build_path = tmp_path / "build"
    a = rb.build(srpm, arch="noarch", results_dir=tmp_path / "a", build_path=build_path)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "5")  # would override the changelog date
    b = rb.build(srpm, arch="noarch", results_dir=tmp_path / "b", build_path=build_path)
    assert a.succeeded and b.succeeded
    assert set_digest(a.rpms) == set_digest(b.rpms)


def test_tampered_source_changes_digest(srpm: Path, tmp_path: Path) -> None:
    build_path = tmp_path / "build"
    honest = rb.build(srpm, arch="noarch", results_dir=tmp_path / "honest", build_path=build_path)

    evil_src = tmp_path / "evil-src"
    shutil.copytree(EXAMPLE_DIR, evil_src)
    script = evil_src / "skyline-hello.sh"
    script.write_text(script.read_text().replace("hello from", "PWNED from"))
    evil_srpm = make_srpm(evil_src / SPEC_NAME, tmp_path / "evil-srpm")
    evil = rb.build(evil_srpm, arch="noarch", results_dir=tmp_path / "evil", build_path=build_path)

    assert honest.succeeded and evil.succeeded
    assert [p.name for p in honest.rpms] == [p.name for p in evil.rpms]
    assert set_digest(honest.rpms) != set_digest(evil.rpms)


def test_evil_macro_same_srpm_changes_digest(
    srpm: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A malicious host: same SRPM, macros and path, plus an injected pre-%build hook (§2)."""
    build_path = tmp_path / "build"
    honest = rb.build(srpm, arch="noarch", results_dir=tmp_path / "honest", build_path=build_path)
    evil_macros = {
        **rb.REPRODUCIBLE_MACROS,
        "__spec_build_pre": "%{___build_pre}; sed -i s/hello/PWNED/ %{_sourcedir}/*.sh",
    }
    monkeypatch.setattr(rb, "REPRODUCIBLE_MACROS", evil_macros)
    evil = rb.build(srpm, arch="noarch", results_dir=tmp_path / "evil", build_path=build_path)
    assert honest.succeeded and evil.succeeded, evil.log.read_text()
    assert [p.name for p in honest.rpms] == [p.name for p in evil.rpms]
    assert set_digest(honest.rpms) != set_digest(evil.rpms)


def test_failing_build_returns_outcome_with_log(tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(EXAMPLE_DIR, src)
    spec = src / SPEC_NAME
    spec.write_text(
        spec.read_text().replace(
            "# Nothing to compile.", "echo 'skyline-test: deliberate failure' >&2; exit 3"
        )
    )
    bad_srpm = make_srpm(spec, tmp_path / "srpm")
    outcome = rb.build(
        bad_srpm, arch="noarch", results_dir=tmp_path / "res", build_path=tmp_path / "build"
    )
    assert not outcome.succeeded
    assert outcome.returncode != 0
    assert outcome.rpms == []
    log = outcome.log.read_text()
    assert "skyline-test: deliberate failure" in log
    assert "Bad exit status" in log
    assert not (tmp_path / "build").exists()


def test_garbage_srpm_fails_without_raising(tmp_path: Path) -> None:
    bad = tmp_path / "bad.src.rpm"
    bad.write_bytes(b"not an rpm at all" * 50)
    outcome = rb.build(
        bad, arch="noarch", results_dir=tmp_path / "res", build_path=tmp_path / "build"
    )
    assert not outcome.succeeded and outcome.rpms == []
    assert "bad.src.rpm" in outcome.log.read_text()


def test_timeout_kills_build(tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(EXAMPLE_DIR, src)
    spec = src / SPEC_NAME
    # A child that would outlive rpmbuild if only the direct child were killed.
    spec.write_text(spec.read_text().replace("# Nothing to compile.", "sleep 60 & sleep 60"))
    slow = make_srpm(spec, tmp_path / "srpm")
    outcome = rb.build(
        slow, arch="noarch", results_dir=tmp_path / "res", build_path=tmp_path / "build", timeout=1
    )
    assert not outcome.succeeded
    assert outcome.duration < 30
    assert "timed out" in outcome.log.read_text()


def test_concurrent_builds_serialise_on_build_path(srpm: Path, tmp_path: Path) -> None:
    build_path = tmp_path / "build"
    outcomes: list[rb.BuildOutcome] = []

    def run(name: str) -> None:
        outcomes.append(
            rb.build(srpm, arch="noarch", results_dir=tmp_path / name, build_path=build_path)
        )

    threads = [threading.Thread(target=run, args=(f"h{i}",)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(outcomes) == 3 and all(o.succeeded for o in outcomes)
    assert len({set_digest(o.rpms) for o in outcomes}) == 1


def test_nodeps_is_logged_on_non_rpm_distro(srpm: Path, tmp_path: Path) -> None:
    outcome = rb.build(
        srpm, arch="noarch", results_dir=tmp_path / "r", build_path=tmp_path / "build"
    )
    log = outcome.log.read_text()
    if rb.rpmdb_has_rpm():
        assert "--nodeps" not in log
    else:
        assert "--nodeps" in log and "NOT checked" in log


def test_rejects_bad_arguments(srpm: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        rb.build(srpm, arch="noarch", results_dir=tmp_path / "r", build_path=Path("rel"))
    with pytest.raises(ValueError):
        rb.build(srpm, arch="noarch", results_dir=tmp_path / "b/r", build_path=tmp_path / "b")
    with pytest.raises(ValueError):
        rb.build(
            srpm,
            arch="noarch",
            results_dir=tmp_path / "r",
            build_path=tmp_path / "b",
            backend="docker",
        )
    with pytest.raises(ValueError):
        rb.build(srpm, arch="--define", results_dir=tmp_path / "r", build_path=tmp_path / "b")


def test_mock_command_line(srpm: Path, tmp_path: Path) -> None:
    cmd = rb._mock_cmd(srpm, "aarch64", tmp_path / "out", "fedora-40-aarch64")
    assert cmd[:3] == ["mock", "-r", "fedora-40-aarch64"]
    assert cmd[cmd.index("--rebuild") + 1] == str(srpm)
    assert cmd[cmd.index("--resultdir") + 1] == str(tmp_path / "out")
    assert "_buildhost skyline" in cmd and cmd[-2:] == ["--target", "aarch64"]
    assert "--target" not in rb._mock_cmd(srpm, "noarch", tmp_path, None)


def test_environment_manifest_and_digest() -> None:
    manifest = rb.environment_manifest()
    assert manifest["rpmbuild.version"].startswith("RPM version ")
    assert "os" in manifest
    if shutil.which("gcc"):
        assert manifest["gcc.version"][0].isdigit()
    if shutil.which("ld"):
        assert "ld" in manifest["ld.version"].lower()
    d = rb.manifest_digest(manifest)
    assert len(d) == 64
    assert rb.manifest_digest(dict(reversed(list(manifest.items())))) == d
    assert rb.manifest_digest({"b": "2", "a": "1"}) == (
        hashlib.sha256(b'{"a":"1","b":"2"}').hexdigest()
    )
    assert rb.manifest_digest({**manifest, "rpmbuild.version": "RPM version 0"}) != d


def test_build_path_problem_is_reported_before_any_build(tmp_path: Path) -> None:
    assert rb.build_path_problem(tmp_path / "build") is None
    # A parent that cannot be written (here: missing) is found even when running as root.
    problem = rb.build_path_problem(tmp_path / "missing" / "build")
    assert problem is not None and "is not writable" in problem


def test_mock_gets_the_lease_repositories(tmp_path: Path) -> None:
    cmd = rb._mock_cmd(
        tmp_path / "x.src.rpm", "noarch", tmp_path, "fedora-41-x86_64", ["http://r/1/"]
    )
    assert cmd[:4] == ["mock", "-r", "fedora-41-x86_64", "--addrepo=http://r/1/"]


def test_buildroot_packages_need_the_bwrap_sandbox(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="bwrap"):
        rb.build(
            tmp_path / "x.src.rpm",
            arch="noarch",
            results_dir=tmp_path / "r",
            build_path=tmp_path / "b",
            backend="rpmbuild",
            buildroot_rpms=[tmp_path / "a.rpm"],
        )


def test_wipe_tries_again_while_a_dying_sandbox_still_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A killed sandbox's last process may create a file while the tree is removed: rmtree
    then fails with ENOTEMPTY, and the wipe tries again instead of failing the build."""
    tree = tmp_path / "BUILD"
    (tree / "sub").mkdir(parents=True)
    real_rmtree, calls = shutil.rmtree, []

    def racing_rmtree(path: Path) -> None:
        calls.append(path)
        if len(calls) == 1:
            (tree / "sub" / "late-file").write_bytes(b"x")  # as the dying process would
            raise OSError(errno.ENOTEMPTY, "Directory not empty", str(tree / "sub"))
        real_rmtree(path)

    monkeypatch.setattr(rb.shutil, "rmtree", racing_rmtree)
    rb._wipe(tree)
    assert not tree.exists() and len(calls) == 2


def test_wipe_raises_what_trying_again_cannot_mend(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree = tmp_path / "BUILD"
    tree.mkdir()

    def refused(path: Path) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(rb.shutil, "rmtree", refused)
    with pytest.raises(PermissionError):
        rb._wipe(tree)
