"""Tests for services.verifier.checks: every refusal and the happy path."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

import pytest
from skyline_messages import TaskFinishedV1

from services.collector.storage import rpm_header
from services.common.rpmfiles import result_set_digest, sha256_file
from services.common.testing import build_test_package
from services.verifier.checks import (
    check_lease,
    check_packages,
    check_result_digest,
    check_uploads,
)

RPMS = [
    {"name": "hello-1.0-1.x86_64.rpm", "size": 100, "sha256": "a" * 64},
    {"name": "hello-debuginfo-1.0-1.x86_64.rpm", "size": 200, "sha256": "b" * 64},
]
LOGS = [{"name": "build.log", "size": 50, "sha256": "c" * 64}]
LEASE = {
    "lease_id": "00000000-0000-4000-8000-000000000001",
    "host": "builder-1",
    "task_id": 11,
    "build_id": 3,
    "arch": "x86_64",
    "nvr": "hello-1.0-1",
    "srpm_sha256": "d" * 64,
}


def attestation(**changes: Any) -> TaskFinishedV1:
    files = [*RPMS, *LOGS]
    body = {
        **{k: LEASE[k] for k in ("lease_id", "host", "task_id", "build_id", "arch", "nvr")},
        "status": "succeeded",
        "srpm_sha256": LEASE["srpm_sha256"],
        "files": files,
        "result_digest": result_set_digest((f["name"], f["sha256"]) for f in RPMS),
    }
    body.update(changes)
    return TaskFinishedV1(body=body)


# check_lease


def test_lease_happy_path() -> None:
    assert check_lease(attestation(), LEASE) is None


def test_lease_never_issued() -> None:
    reason, detail = check_lease(attestation(), None)
    assert reason == "unknown_lease"
    assert LEASE["lease_id"] in detail


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("host", "builder-2"),
        ("task_id", 12),
        ("build_id", 4),
        ("arch", "aarch64"),
        ("nvr", "hello-1.0-2"),
    ],
)
def test_lease_field_mismatch(field: str, value: Any) -> None:
    reason, detail = check_lease(attestation(**{field: value}), LEASE)
    assert reason == "unknown_lease"
    assert field in detail
    assert repr(value) in detail


def test_lease_srpm_mismatch() -> None:
    assert check_lease(attestation(srpm_sha256="e" * 64), LEASE)[0] == "srpm_mismatch"


def test_lease_identity_is_checked_before_the_srpm() -> None:
    refusal = check_lease(attestation(host="builder-2", srpm_sha256="e" * 64), LEASE)
    assert refusal[0] == "unknown_lease"


# check_result_digest


def test_digest_happy_path() -> None:
    assert check_result_digest(attestation()) is None


def test_digest_is_independent_of_file_order() -> None:
    msg = attestation(files=[*LOGS, *reversed(RPMS)])
    assert check_result_digest(msg) is None


def test_digest_of_a_failed_build_without_rpms() -> None:
    assert (
        check_result_digest(
            attestation(status="failed", files=LOGS, result_digest=result_set_digest([]))
        )
        is None
    )


def test_failed_build_with_a_wrong_digest() -> None:
    msg = attestation(status="failed", files=LOGS, result_digest="0" * 64)
    assert check_result_digest(msg)[0] == "digest_mismatch"


def test_successful_build_without_rpms() -> None:
    reason, detail = check_result_digest(
        attestation(files=LOGS, result_digest=result_set_digest([]))
    )
    assert reason == "digest_mismatch"
    assert "no RPM" in detail


def test_wrong_result_digest() -> None:
    reason, detail = check_result_digest(attestation(result_digest="0" * 64))
    assert reason == "digest_mismatch"
    assert "result_digest" in detail


def test_logs_are_not_part_of_the_digest() -> None:
    with_logs = result_set_digest((f["name"], f["sha256"]) for f in [*RPMS, *LOGS])
    assert check_result_digest(attestation(result_digest=with_logs))[0] == "digest_mismatch"


def test_a_changed_rpm_digest_breaks_the_result_digest() -> None:
    files = [{**RPMS[0], "sha256": "f" * 64}, RPMS[1], *LOGS]
    assert check_result_digest(attestation(files=files))[0] == "digest_mismatch"


# check_uploads


def staged(files: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # The collector's listing may carry more than name, size and sha256.
    return [{**f, "staged_at": "2026-01-01T00:00:00+00:00"} for f in files]


def test_uploads_happy_path() -> None:
    assert check_uploads([*RPMS, *LOGS], staged([*LOGS, *RPMS])) is None


def test_no_files_at_all_is_consistent() -> None:
    assert check_uploads([], []) is None


def test_missing_upload() -> None:
    reason, detail = check_uploads([*RPMS, *LOGS], staged(RPMS))
    assert reason == "missing_upload"
    assert "build.log" in detail


def test_nothing_uploaded() -> None:
    reason, detail = check_uploads(RPMS, [])
    assert reason == "missing_upload"
    assert all(f["name"] in detail for f in RPMS)


def test_uploaded_content_differs_by_digest() -> None:
    changed = [{**RPMS[0], "sha256": "9" * 64}, RPMS[1]]
    reason, detail = check_uploads(RPMS, staged(changed))
    assert reason == "digest_mismatch"
    assert RPMS[0]["name"] in detail
    assert RPMS[1]["name"] not in detail


def test_uploaded_content_differs_by_size() -> None:
    changed = [RPMS[0], {**RPMS[1], "size": 201}]
    reason, detail = check_uploads(RPMS, staged(changed))
    assert reason == "digest_mismatch"
    assert RPMS[1]["name"] in detail


def test_uploaded_but_not_attested() -> None:
    extra = {"name": "evil-1.0-1.x86_64.rpm", "size": 1, "sha256": "e" * 64}
    reason, detail = check_uploads(RPMS, staged([*RPMS, extra]))
    assert reason == "digest_mismatch"
    assert "not attested" in detail
    assert extra["name"] in detail


def test_missing_is_reported_before_differences() -> None:
    changed = [{**RPMS[0], "sha256": "9" * 64}]
    assert check_uploads(RPMS, staged(changed))[0] == "missing_upload"


# check_packages, with real rpmbuild-built RPMs and the headers the collector records for them


@dataclasses.dataclass(frozen=True)
class Packages:
    srpm: Path  # hello-1.0-1.src.rpm
    rpms: dict[str, Path]  # hello-1.0-1 built for x86_64, by file name
    noarch: Path  # hello-1.0-1 built as a noarch package
    aarch64: Path  # hello-1.0-1.aarch64.rpm
    other: Path  # other-1.0-1.x86_64.rpm
    next_release: Path  # hello-1.0-2.x86_64.rpm


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> Packages:
    tmp = tmp_path_factory.mktemp("packages")
    # Subpackages: a noarch one, and one with its own epoch, version and release (as perl's).
    subs = {"doc": "BuildArch: noarch", "Carp": "Epoch: 2\nVersion: 1.54\nRelease: 500"}
    srpm, rpms = build_test_package(tmp / "x86_64", name="hello", arch="x86_64", subpackages=subs)
    [noarch] = build_test_package(tmp / "noarch", name="hello")[1]
    [aarch64] = build_test_package(tmp / "aarch64", name="hello", arch="aarch64")[1]
    [other] = build_test_package(tmp / "other", name="other", arch="x86_64")[1]
    [next_release] = build_test_package(tmp / "next", name="hello", release="2", arch="x86_64")[1]
    return Packages(srpm, {p.name: p for p in rpms}, noarch, aarch64, other, next_release)


HELLO_RPMS = [
    "hello-1.0-1.x86_64.rpm",
    "hello-Carp-1.54-500.x86_64.rpm",
    "hello-doc-1.0-1.noarch.rpm",
]


def entry(path: Path, name: str | None = None) -> dict[str, Any]:
    """An attested file."""
    return {"name": name or path.name, "size": path.stat().st_size, "sha256": sha256_file(path)}


def listed(path: Path, name: str | None = None) -> dict[str, Any]:
    """The collector's listing entry for an upload of `path` as `name`."""
    name = name or path.name
    return {**entry(path, name), "rpm": rpm_header(path, name) if name.endswith(".rpm") else None}


def judge(lease: dict[str, Any], *uploads: Path | tuple[Path, str]) -> Any:
    """check_packages of an attestation listing exactly `uploads` (path, or (path, name))."""
    pairs = [u if isinstance(u, tuple) else (u, None) for u in uploads]
    return check_packages(lease, [entry(*p) for p in pairs], [listed(*p) for p in pairs])


def hello_lease(packages: Packages, arch: str = "x86_64") -> dict[str, Any]:
    return {**LEASE, "nvr": "hello-1.0-1", "arch": arch, "srpm_sha256": sha256_file(packages.srpm)}


def test_packages_all_subpackages_of_the_leased_build_pass(packages: Packages, tmp_path) -> None:
    assert sorted(packages.rpms) == HELLO_RPMS
    log = tmp_path / "build.log"
    log.write_text("built\n")
    assert judge(hello_lease(packages), *packages.rpms.values(), log) is None


def test_packages_the_leased_srpm_itself_passes(packages: Packages) -> None:
    assert judge(hello_lease(packages), packages.srpm, *packages.rpms.values()) is None


def test_packages_rpm_of_another_package(packages: Packages) -> None:
    reason, detail = judge(hello_lease(packages), *packages.rpms.values(), packages.other)
    assert reason == "wrong_package"
    assert detail == (
        "other-1.0-1.x86_64.rpm was built from other-1.0-1.src.rpm, not hello-1.0-1.src.rpm"
    )


def test_packages_rpm_of_another_release_of_the_package(packages: Packages) -> None:
    reason, detail = judge(hello_lease(packages), packages.next_release)
    assert reason == "wrong_package"
    assert "hello-1.0-2.src.rpm" in detail


def test_packages_rpm_of_another_package_renamed_as_the_leased_one(packages: Packages) -> None:
    reason, detail = judge(hello_lease(packages), (packages.other, "hello-1.0-1.x86_64.rpm"))
    assert reason == "wrong_package"
    assert "other-1.0-1.src.rpm" in detail


def test_packages_rpm_of_another_arch(packages: Packages) -> None:
    reason, detail = judge(hello_lease(packages), packages.aarch64)
    assert reason == "wrong_arch"
    assert detail == "hello-1.0-1.aarch64.rpm is aarch64, but the task builds x86_64"


def test_packages_aarch64_task_takes_aarch64_and_noarch(packages: Packages) -> None:
    doc = packages.rpms["hello-doc-1.0-1.noarch.rpm"]
    assert judge(hello_lease(packages, "aarch64"), packages.aarch64, doc) is None
    x86 = packages.rpms["hello-1.0-1.x86_64.rpm"]
    assert judge(hello_lease(packages, "aarch64"), x86)[0] == "wrong_arch"


def test_packages_noarch_task_takes_only_noarch(packages: Packages) -> None:
    lease = hello_lease(packages, "noarch")
    assert judge(lease, packages.noarch) is None
    reason, detail = judge(lease, packages.noarch, packages.rpms["hello-1.0-1.x86_64.rpm"])
    assert reason == "wrong_arch"
    assert detail == "hello-1.0-1.x86_64.rpm is x86_64, but the task builds noarch"


def test_packages_another_srpm_is_refused(packages: Packages, tmp_path) -> None:
    other_srpm = build_test_package(tmp_path / "o", name="other")[0]
    reason, detail = judge(hello_lease(packages), other_srpm, *packages.rpms.values())
    assert reason == "wrong_package"
    assert detail == "other-1.0-1.src.rpm is the source RPM of other-1.0-1, not hello-1.0-1.src.rpm"


def test_packages_an_srpm_of_the_leased_nvr_with_other_bytes_is_refused(
    packages: Packages,
) -> None:
    lease = {**hello_lease(packages), "srpm_sha256": "f" * 64}  # the dispatched bytes differ
    reason, detail = judge(lease, packages.srpm, *packages.rpms.values())
    assert reason == "wrong_package"
    assert detail == "hello-1.0-1.src.rpm is not the leased hello-1.0-1.src.rpm: other bytes"


def test_packages_a_renamed_subpackage_is_refused(packages: Packages) -> None:
    doc = packages.rpms["hello-doc-1.0-1.noarch.rpm"]
    reason, detail = judge(hello_lease(packages), (doc, "hello-1.0-1.noarch.rpm"))
    assert reason == "bad_rpm"
    assert (
        detail == "hello-1.0-1.noarch.rpm is named unlike its header (hello-doc-1.0-1.noarch.rpm)"
    )


def test_packages_a_broken_rpm_is_refused(packages: Packages, tmp_path) -> None:
    broken = tmp_path / "hello-1.0-1.x86_64.rpm"
    shutil.copyfile(packages.rpms[broken.name], broken)
    data = bytearray(broken.read_bytes())
    data[-10] ^= 0xFF  # in the payload: the header still reads, rpmkeys -K fails
    broken.write_bytes(bytes(data))
    reason, detail = judge(hello_lease(packages), broken)
    assert reason == "bad_rpm"
    assert detail.startswith("hello-1.0-1.x86_64.rpm is not an intact RPM: ")
    assert str(tmp_path) not in detail  # the collector's paths stay private
    garbage = tmp_path / "garbage" / "hello-1.0-1.x86_64.rpm"
    garbage.parent.mkdir()
    garbage.write_bytes(b"not an rpm" * 100)
    assert judge(hello_lease(packages), garbage)[0] == "bad_rpm"


@pytest.mark.parametrize(
    "header",
    [None, {}, {"name": "hello", "version": "1.0", "release": 1, "arch": "x86_64"}, "hello"],
)
def test_packages_an_rpm_without_a_usable_header_is_refused(packages: Packages, header) -> None:
    # e.g. staged before the collector recorded headers, or a peer answering nonsense
    rpm_path = packages.rpms["hello-1.0-1.x86_64.rpm"]
    staged = [{**entry(rpm_path), "rpm": header}]
    reason, detail = check_packages(hello_lease(packages), [entry(rpm_path)], staged)
    assert reason == "bad_rpm"
    assert rpm_path.name in detail


def test_packages_wrong_package_is_named_before_other_faults(packages: Packages) -> None:
    reason, detail = judge(hello_lease(packages), packages.aarch64, packages.other)
    assert reason == "wrong_package"
    assert "aarch64" not in detail
    reason, detail = judge(hello_lease(packages), packages.other, packages.next_release)
    assert reason == "wrong_package"
    assert "other-1.0-1.x86_64.rpm" in detail
    assert "hello-1.0-2.x86_64.rpm" in detail
