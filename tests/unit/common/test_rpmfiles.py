"""Tests for services.common.rpmfiles; builds real (tiny) RPMs with rpmbuild."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from services.builder.rpmbuild import build
from services.common.rpmfiles import (
    RpmCheckError,
    SrpmBuildError,
    check_rpm_digests,
    make_srpm,
    read_rpm_info,
    result_set_digest,
    sha256_file,
)

EXAMPLE_SPEC = Path(__file__).parents[3] / "examples/skyline-hello/skyline-hello.spec"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(srpm, noarch rpm) of the example package."""
    tmp = tmp_path_factory.mktemp("rpmfiles")
    srpm = make_srpm(EXAMPLE_SPEC, tmp / "srpm")
    outcome = build(srpm, arch="noarch", results_dir=tmp / "res", build_path=tmp / "bp")
    assert outcome.succeeded, outcome.log.read_text()
    (rpm_path,) = outcome.rpms
    return srpm, rpm_path


def test_sha256_file_matches_hashlib(tmp_path: Path) -> None:
    data = bytes(range(256)) * 9000  # > 2 MiB: exercises several readinto chunks
    f = tmp_path / "blob"
    f.write_bytes(data)
    assert sha256_file(f) == hashlib.sha256(data).hexdigest()
    (tmp_path / "empty").write_bytes(b"")
    assert sha256_file(tmp_path / "empty") == hashlib.sha256(b"").hexdigest()


def test_result_set_digest_known_value_and_order_independent() -> None:
    a = ("a.rpm", "1" * 64)
    b = ("b.rpm", "2" * 64)
    text = f"{'1' * 64}  a.rpm\n{'2' * 64}  b.rpm\n"
    expected = hashlib.sha256(text.encode()).hexdigest()
    assert result_set_digest([a, b]) == expected
    assert result_set_digest([b, a]) == expected
    assert result_set_digest(iter([b, a])) == expected
    # Pin the exact value so the canonical form can't drift unnoticed.
    assert (
        result_set_digest([("x.rpm", "0" * 64)])
        == hashlib.sha256(
            b"0000000000000000000000000000000000000000000000000000000000000000  x.rpm\n"
        ).hexdigest()
    )
    assert result_set_digest([]) == hashlib.sha256(b"").hexdigest()
    assert result_set_digest([a]) != result_set_digest([a, b])


def test_read_rpm_info_binary_and_source(built: tuple[Path, Path]) -> None:
    srpm, rpm_path = built
    info = read_rpm_info(rpm_path)
    assert (info.name, info.version, info.release, info.arch) == (
        "skyline-hello",
        "1.0",
        "1",
        "noarch",
    )
    assert info.epoch is None
    assert info.sourcerpm == "skyline-hello-1.0-1.src.rpm"
    assert info.nvr == "skyline-hello-1.0-1"

    src = read_rpm_info(srpm)
    assert srpm.name == "skyline-hello-1.0-1.src.rpm"
    assert (src.nvr, src.arch, src.sourcerpm) == ("skyline-hello-1.0-1", "src", None)


@pytest.mark.parametrize("content", [b"", b"garbage" * 100, b"\xed\xab\xee\xdb" + b"\0" * 200])
def test_read_rpm_info_garbage_raises(tmp_path: Path, content: bytes) -> None:
    f = tmp_path / "bad.rpm"
    f.write_bytes(content)
    with pytest.raises(RpmCheckError):
        read_rpm_info(f)
    with pytest.raises(RpmCheckError):
        check_rpm_digests(f)


def test_read_rpm_info_truncated_raises(built: tuple[Path, Path], tmp_path: Path) -> None:
    _, rpm_path = built
    f = tmp_path / "trunc.rpm"
    f.write_bytes(rpm_path.read_bytes()[:300])
    with pytest.raises(RpmCheckError):
        read_rpm_info(f)


def test_check_rpm_digests_detects_flipped_payload_byte(
    built: tuple[Path, Path], tmp_path: Path
) -> None:
    _, rpm_path = built
    check_rpm_digests(rpm_path)
    bad = tmp_path / rpm_path.name
    shutil.copyfile(rpm_path, bad)
    data = bytearray(bad.read_bytes())
    data[-10] ^= 0xFF  # inside the compressed payload, past the header
    bad.write_bytes(bytes(data))
    with pytest.raises(RpmCheckError, match=r"(?i)sha256|digest|bad"):
        check_rpm_digests(bad)
    # The header is intact, so NEVRA still reads: only the payload check catches it.
    assert read_rpm_info(bad).nvr == "skyline-hello-1.0-1"


def test_make_srpm_is_deterministic_for_same_out_dir(tmp_path: Path) -> None:
    first = make_srpm(EXAMPLE_SPEC, tmp_path / "out")
    digest = sha256_file(first)
    first.unlink()
    again = make_srpm(EXAMPLE_SPEC, tmp_path / "out")
    assert sha256_file(again) == digest
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [again.name]


def test_make_srpm_failure_raises(tmp_path: Path) -> None:
    spec = tmp_path / "broken.spec"
    spec.write_text("Name: broken\n")  # no Version/Release/Summary/License
    with pytest.raises(SrpmBuildError):
        make_srpm(spec, tmp_path / "out")
