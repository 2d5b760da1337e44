"""Pure checks of a host's attestation against its lease and what it uploaded.

Each check returns a refusal `(reason, detail)` or None; reasons are the schema's
`MISMATCH_REASONS`. No I/O here: the handler fetches the facts and passes them in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from skyline_messages import TaskFinishedV1

from services.common.rpmfiles import result_set_digest

Refusal = tuple[str, str] | None


def check_lease(msg: TaskFinishedV1, lease: Mapping[str, Any] | None) -> Refusal:
    """The attestation must be about exactly the task the dispatcher leased to this host."""
    if lease is None:
        return ("unknown_lease", f"lease {msg.lease_id} was never issued")
    attested = {
        "host": msg.host,
        "task_id": msg.task_id,
        "build_id": msg.build_id,
        "arch": msg.arch,
        "nvr": msg.nvr,
    }
    for field, value in attested.items():
        if value != lease[field]:
            return ("unknown_lease", f"{field} {value!r} does not match the lease")
    if msg.srpm_sha256 != lease["srpm_sha256"]:
        return ("srpm_mismatch", "the host built another SRPM than the one dispatched")
    return None


def check_result_digest(msg: TaskFinishedV1) -> Refusal:
    """The result-set digest must be the digest of the attested RPMs (logs excluded)."""
    rpms = [(f["name"], f["sha256"]) for f in msg.files if f["name"].endswith(".rpm")]
    if msg.status == "succeeded" and not rpms:
        return ("digest_mismatch", "a successful build attests no RPM")
    if result_set_digest(rpms) != msg.result_digest:
        return ("digest_mismatch", "result_digest is not the digest of the attested RPMs")
    return None


def check_uploads(
    attested: Iterable[Mapping[str, Any]], staged: Iterable[Mapping[str, Any]]
) -> Refusal:
    """Every attested file was uploaded with the attested size and SHA-256, and nothing else."""
    want = {f["name"]: (f["size"], f["sha256"]) for f in attested}
    have = {f["name"]: (f["size"], f["sha256"]) for f in staged}
    missing = sorted(set(want) - set(have))
    if missing:
        return ("missing_upload", f"not uploaded: {', '.join(missing)}")
    differing = sorted(name for name in want if want[name] != have[name])
    if differing:
        return ("digest_mismatch", f"uploaded content differs: {', '.join(differing)}")
    extra = sorted(set(have) - set(want))
    if extra:
        return ("digest_mismatch", f"uploaded but not attested: {', '.join(extra)}")
    return None


# Most telling first: when several RPMs are wrong in different ways, the refusal names this one.
PACKAGE_REASONS = ("wrong_package", "wrong_arch", "bad_rpm")


def check_packages(
    lease: Mapping[str, Any],
    attested: Iterable[Mapping[str, Any]],
    staged: Iterable[Mapping[str, Any]],
) -> Refusal:
    """Every attested RPM belongs to the leased build and arch, judged by its header.

    The headers are the ones the collector read from the uploaded bytes (its listing's `rpm`);
    run this after check_uploads, so they are the headers of the attested files. Koji's rule
    decides the package: a binary RPM belongs to a build when its SOURCERPM is the build's
    N-V-R.src.rpm. Its own name, version, release and epoch may differ (subpackages; perl's
    and texlive's subpackages carry their own versions and releases).
    """
    headers = {f["name"]: f.get("rpm") for f in staged}
    problems: dict[str, list[str]] = {}
    for f in attested:
        if f["name"].endswith(".rpm"):
            refusal = _check_rpm(lease, f, headers.get(f["name"]))
            if refusal is not None:
                problems.setdefault(refusal[0], []).append(refusal[1])
    for reason in PACKAGE_REASONS:
        if reason in problems:
            return (reason, "; ".join(problems[reason]))
    return None


def task_arches(arch: str) -> set[str]:
    """The binary RPM arches a task of `arch` may produce."""
    return {arch, "noarch"}


def _check_rpm(lease: Mapping[str, Any], file: Mapping[str, Any], header: Any) -> Refusal:
    name = file["name"]
    if not isinstance(header, Mapping):
        return ("bad_rpm", f"{name}: the collector read no RPM header from it")
    if "error" in header:
        return ("bad_rpm", f"{name} is not an intact RPM: {header['error']}")
    if not all(isinstance(header.get(k), str) for k in ("name", "version", "release", "arch")):
        return ("bad_rpm", f"{name}: its header lacks name, version, release or arch")
    nvr, arch = f"{header['name']}-{header['version']}-{header['release']}", header["arch"]
    srpm = f"{lease['nvr']}.src.rpm"
    if arch == "src":
        # Only the dispatched bytes may come back: another SRPM of the same N-V-R could carry
        # any spec, and Koji would keep it as the build's source.
        if nvr != lease["nvr"]:
            return ("wrong_package", f"{name} is the source RPM of {nvr}, not {srpm}")
        if file["sha256"] != lease["srpm_sha256"]:
            return ("wrong_package", f"{name} is not the leased {srpm}: other bytes")
    elif header.get("sourcerpm") != srpm:
        return ("wrong_package", f"{name} was built from {header.get('sourcerpm')}, not {srpm}")
    elif arch not in task_arches(lease["arch"]):
        return ("wrong_arch", f"{name} is {arch}, but the task builds {lease['arch']}")
    expected = f"{nvr}.{arch}.rpm"
    if name != expected:
        return ("bad_rpm", f"{name} is named unlike its header ({expected})")
    return None
