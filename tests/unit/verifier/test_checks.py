"""Tests for services.verifier.checks: every refusal and the happy path."""

from __future__ import annotations

from typing import Any

import pytest

from services.common.rpmfiles import result_set_digest
from services.verifier.checks import check_lease, check_result_digest, check_uploads

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


def attestation(**changes: Any) -> dict[str, Any]:
    files = [*RPMS, *LOGS]
    body = {
        **{k: LEASE[k] for k in ("lease_id", "host", "task_id", "build_id", "arch", "nvr")},
        "status": "succeeded",
        "srpm_sha256": LEASE["srpm_sha256"],
        "files": files,
        "result_digest": result_set_digest((f["name"], f["sha256"]) for f in RPMS),
    }
    body.update(changes)
    return body


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
    body = attestation(files=[*LOGS, *reversed(RPMS)])
    assert check_result_digest(body) is None


def test_digest_of_a_failed_build_without_rpms() -> None:
    assert (
        check_result_digest(
            attestation(status="failed", files=LOGS, result_digest=result_set_digest([]))
        )
        is None
    )


def test_failed_build_with_a_wrong_digest() -> None:
    body = attestation(status="failed", files=LOGS, result_digest="0" * 64)
    assert check_result_digest(body)[0] == "digest_mismatch"


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
