"""The facts of a lease's staged RPMs, as the verifier compares them (services/common/rpmfacts).

Reading hashes every payload file, so it runs in a thread, a few leases at a time
(`facts_reads`); what it reads is bounded by the staging limits (max_files_per_lease,
max_lease_mb).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from services.common.rpmfacts import facts_to_json, read_rpm_facts
from services.common.rpmfiles import RpmCheckError, check_rpm_digests, sha256_file


def read_facts(folder: Path, names: Iterable[str]) -> list[dict[str, Any]]:
    """{name, sha256 (of the bytes read), **facts} of each named RPM in `folder`.

    RpmCheckError (naming the file, not its path) when one is not intact or its header lies
    about its payload; FileNotFoundError when the uploads are gone.
    """
    out = []
    for name in names:
        path = folder / name
        try:
            digest = sha256_file(path)
            check_rpm_digests(path)
            facts = read_rpm_facts(path)
        except RpmCheckError as exc:
            raise RpmCheckError(str(exc).replace(str(path), name)) from None
        # The verifier matches these digests against the attestation: a file replaced while
        # it was read shows up there as a mismatch.
        if sha256_file(path) != digest:
            raise RpmCheckError(f"{name} was replaced while it was read")
        out.append({"name": name, "sha256": digest, **facts_to_json(facts)})
    return out
