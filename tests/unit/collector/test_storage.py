"""Koji paths and atomic placement of the collector, with a real (tiny) built RPM."""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import threading
from pathlib import Path

import koji
import pytest

from services.builder.rpmbuild import build
from services.collector import storage
from services.common.rpmfiles import RpmInfo, make_srpm, read_rpm_info, sha256_file

EXAMPLE_SPEC = Path(__file__).parents[3] / "examples/skyline-hello/skyline-hello.spec"
NVR = "skyline-hello-1.0-1"
RPM_NAME = f"{NVR}.noarch.rpm"
TASK = storage.Task(
    task_id=42, build_id=7, host="b1", arch="x86_64", owner="alice", nvr=NVR, scratch=False
)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding a freshly built noarch RPM of the example package and its build.log."""
    tmp = tmp_path_factory.mktemp("collector")
    srpm = make_srpm(EXAMPLE_SPEC, tmp / "srpm")
    outcome = build(srpm, arch="noarch", results_dir=tmp / "res", build_path=tmp / "bp")
    assert outcome.succeeded, outcome.log.read_text()
    assert [p.name for p in outcome.rpms] == [RPM_NAME]
    return tmp / "res"


@pytest.fixture
def staged(built: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "staging"
    shutil.copytree(built, folder)
    return folder


def attested(folder: Path, *names: str) -> list[dict]:
    return [
        {"name": n, "size": (folder / n).stat().st_size, "sha256": sha256_file(folder / n)}
        for n in names
    ]


def test_destinations_are_where_koji_pathinfo_puts_them(built: Path, tmp_path: Path) -> None:
    topdir = tmp_path / "koji"
    info = read_rpm_info(built / RPM_NAME)
    pathinfo = koji.PathInfo(topdir=str(topdir))
    binfo = {"name": "skyline-hello", "version": "1.0", "release": "1"}
    rinfo = {"name": info.name, "version": info.version, "release": info.release, "arch": "noarch"}

    rpm_dest = storage.destination(topdir, TASK, RPM_NAME, info)
    assert rpm_dest == Path(pathinfo.build(binfo)) / pathinfo.rpm(rinfo)
    assert rpm_dest == topdir / f"packages/skyline-hello/1.0/1/noarch/{RPM_NAME}"

    log_dest = storage.destination(topdir, TASK, "build.log", None)
    assert log_dest == Path(pathinfo.build_logs(binfo)) / "x86_64/build.log"
    assert log_dest == topdir / "packages/skyline-hello/1.0/1/data/logs/x86_64/build.log"

    scratch = dataclasses.replace(TASK, scratch=True)
    assert storage.destination(topdir, scratch, RPM_NAME, info) == (
        topdir / "scratch/alice/task_42" / RPM_NAME
    )
    assert storage.destination(topdir, scratch, "build.log", None) == (
        Path(pathinfo.scratch()) / "alice/task_42/build.log"
    )


def test_check_results_accepts_the_real_build(staged: Path, tmp_path: Path) -> None:
    files = attested(staged, RPM_NAME, "build.log")
    results = storage.check_results(tmp_path / "koji", staged, TASK, files)
    assert [r.entry() for r in results] == [
        {
            "name": RPM_NAME,
            "path": f"packages/skyline-hello/1.0/1/noarch/{RPM_NAME}",
            "sha256": files[0]["sha256"],
            "size": files[0]["size"],
            "arch": "noarch",
        },
        {
            "name": "build.log",
            "path": "packages/skyline-hello/1.0/1/data/logs/x86_64/build.log",
            "sha256": files[1]["sha256"],
            "size": files[1]["size"],
            "arch": "x86_64",
        },
    ]
    assert results[0].source == staged / RPM_NAME


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda t, f, d: (dataclasses.replace(t, nvr="other-1.0-1"), f), "built from"),
        (lambda t, f, d: (t, [{**f[0], "sha256": "0" * 64}]), "attested size and sha256"),
        (lambda t, f, d: (t, [{**f[0], "size": 1}]), "attested size and sha256"),
        (lambda t, f, d: (t, [{**f[0], "name": "missing.rpm"}]), "was not uploaded"),
        (lambda t, f, d: (t, [f[0], f[0]]), "twice"),
        (lambda t, f, d: (t, []), "at least one RPM"),
        (lambda t, f, d: (t, [*f, {**f[0], "name": "x.txt"}]), "neither an RPM nor a log"),
        (lambda t, f, d: (t, [{**f[0], "name": "../x.rpm"}]), "not a plain file name"),
    ],
)
def test_check_results_refuses(staged: Path, tmp_path: Path, change, reason: str) -> None:
    task, files = change(TASK, attested(staged, RPM_NAME), staged)
    with pytest.raises(storage.Refused, match=reason):
        storage.check_results(tmp_path / "koji", staged, task, files)


def test_check_results_refuses_a_renamed_rpm(staged: Path, tmp_path: Path) -> None:
    (staged / RPM_NAME).rename(staged / "evil-1.0-1.noarch.rpm")
    with pytest.raises(storage.Refused, match="does not match its header"):
        storage.check_results(
            tmp_path / "koji", staged, TASK, attested(staged, "evil-1.0-1.noarch.rpm")
        )


def test_check_results_refuses_a_corrupt_rpm(staged: Path, tmp_path: Path) -> None:
    data = bytearray((staged / RPM_NAME).read_bytes())
    data[-100] ^= 0xFF  # a payload byte: the size stays, the payload digest breaks
    (staged / RPM_NAME).write_bytes(data)
    with pytest.raises(storage.Refused, match="rpmkeys"):
        storage.check_results(tmp_path / "koji", staged, TASK, attested(staged, RPM_NAME))


def test_check_results_takes_back_only_the_leased_srpm(
    built: Path, staged: Path, tmp_path: Path
) -> None:
    srpm = built.parent / "srpm" / f"{NVR}.src.rpm"
    shutil.copyfile(srpm, staged / srpm.name)
    files = attested(staged, RPM_NAME, srpm.name)
    task = dataclasses.replace(TASK, srpm_sha256=sha256_file(srpm))
    results = storage.check_results(tmp_path / "koji", staged, task, files)
    assert (results[1].path, results[1].arch) == (
        f"packages/skyline-hello/1.0/1/src/{srpm.name}",
        "src",
    )
    for other in (dataclasses.replace(TASK, srpm_sha256="f" * 64), TASK):
        with pytest.raises(storage.Refused, match="not the leased source RPM"):
            storage.check_results(tmp_path / "koji", staged, other, files)


def info(arch: str, sourcerpm: str | None = f"{NVR}.src.rpm") -> RpmInfo:
    return RpmInfo("skyline-hello", "1.0", "1", None, arch, sourcerpm)


def test_check_rpm_arch_rules() -> None:
    storage.check_rpm(TASK, f"{NVR}.x86_64.rpm", info("x86_64"))
    storage.check_rpm(TASK, RPM_NAME, info("noarch"))
    with pytest.raises(storage.Refused, match="is aarch64"):
        storage.check_rpm(TASK, f"{NVR}.aarch64.rpm", info("aarch64"))
    storage.check_rpm(TASK, f"{NVR}.src.rpm", info("src", sourcerpm=None))
    other = RpmInfo("other", "1.0", "1", None, "src", None)
    with pytest.raises(storage.Refused, match=r"source RPM of other-1\.0-1"):
        storage.check_rpm(TASK, "other-1.0-1.src.rpm", other)
    noarch_task = dataclasses.replace(TASK, arch="noarch")
    with pytest.raises(storage.Refused, match="is x86_64"):
        storage.check_rpm(noarch_task, f"{NVR}.x86_64.rpm", info("x86_64"))


def test_place_is_atomic_idempotent_and_never_overwrites(tmp_path: Path) -> None:
    source = tmp_path / "a.rpm"
    source.write_bytes(b"payload" * 1000)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    dest = tmp_path / "koji/packages/n/1/1/noarch/a.rpm"

    assert storage.place(source, dest, digest) is True
    assert dest.read_bytes() == source.read_bytes()
    assert dest.stat().st_mode & 0o777 == 0o644
    assert dest.stat().st_nlink == 1  # the temporary link is gone
    assert storage.place(source, dest, digest) is False  # same bytes again: fine, no rewrite

    other = tmp_path / "b.rpm"
    other.write_bytes(b"other")
    with pytest.raises(storage.Conflict, match="already exists"):
        storage.place(other, dest, hashlib.sha256(b"other").hexdigest())
    assert dest.read_bytes() == source.read_bytes()
    assert sorted(p.name for p in dest.parent.iterdir()) == ["a.rpm"]  # no temp files left


def test_place_refuses_a_source_that_changed(tmp_path: Path) -> None:
    source = tmp_path / "a.rpm"
    source.write_bytes(b"changed after the check")
    dest = tmp_path / "out/a.rpm"
    with pytest.raises(storage.Refused, match="changed"):
        storage.place(source, dest, "0" * 64)
    assert not dest.exists()
    assert list(dest.parent.iterdir()) == []


def test_place_races_leave_exactly_one_writer(tmp_path: Path) -> None:
    sources = []
    for i in range(8):
        source = tmp_path / f"s{i}"
        source.write_bytes(b"x" * 200_000 + bytes([i % 2]))
        sources.append(source)
    dest = tmp_path / "out/f.rpm"
    outcomes: list[object] = []

    def attempt(source: Path) -> None:
        try:
            outcomes.append(storage.place(source, dest, sha256_file(source)))
        except storage.Conflict as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=attempt, args=(s,)) for s in sources]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count(True) == 1  # one writer won; the rest saw its bytes or a conflict
    winner = dest.read_bytes()
    assert winner in {s.read_bytes() for s in sources}
    assert [p.name for p in dest.parent.iterdir()] == ["f.rpm"]
