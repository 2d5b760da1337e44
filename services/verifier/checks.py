"""Pure checks of a host's attestation against its lease and what it uploaded.

Each check returns a refusal `(reason, detail)` or None; reasons are the schema's
`MISMATCH_REASONS`. No I/O here: the handler fetches the facts and passes them in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from services.common.rpmfiles import result_set_digest

Refusal = tuple[str, str] | None


def check_lease(body: Mapping[str, Any], lease: Mapping[str, Any] | None) -> Refusal:
    """The attestation must be about exactly the task the dispatcher leased to this host."""
    if lease is None:
        return ("unknown_lease", f"lease {body['lease_id']} was never issued")
    for field in ("host", "task_id", "build_id", "arch", "nvr"):
        if body[field] != lease[field]:
            return ("unknown_lease", f"{field} {body[field]!r} does not match the lease")
    if body["srpm_sha256"] != lease["srpm_sha256"]:
        return ("srpm_mismatch", "the host built another SRPM than the one dispatched")
    return None


def check_result_digest(body: Mapping[str, Any]) -> Refusal:
    """The result-set digest must be the digest of the attested RPMs (logs excluded)."""
    rpms = [(f["name"], f["sha256"]) for f in body["files"] if f["name"].endswith(".rpm")]
    if body["status"] == "succeeded" and not rpms:
        return ("digest_mismatch", "a successful build attests no RPM")
    if result_set_digest(rpms) != body["result_digest"]:
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
