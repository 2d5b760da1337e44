"""Chain builds' policy (pure, no I/O): which links a chain request may name, what a waiting
link says, and what a link fails with when one it comes after failed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import koji

REASON_MAX = 2000  # BuildFailedV1's reason limit
WAITING_LISTED = 3  # a waiting link names at most this many of the links it waits for


def link_nvr(srpm_url: str) -> str | None:
    """The N-V-R a link's SRPM file name claims, or None if it is not an SRPM's name."""
    name = srpm_url.rstrip("/").rsplit("/", 1)[-1]
    try:
        nvra = koji.parse_NVRA(name)
    except koji.GenericError:
        return None
    if nvra["arch"] != "src":
        return None
    return f"{nvra['name']}-{nvra['version']}-{nvra['release']}"


def refusal(links: Sequence[Mapping[str, Any]]) -> str | None:
    """Why a chain request cannot be queued, or None. A link may come only after earlier
    links (which makes every chain a DAG, acyclic by construction)."""
    for i, link in enumerate(links):
        if link_nvr(str(link["srpm_url"])) is None:
            return f"link {i}: {link['srpm_url']!r} is not an N-V-R.src.rpm file name"
        later = [j for j in link.get("after", []) if j >= i]
        if later:
            return f"link {i} comes after link {later[0]}, which is not an earlier link"
    return None


def waiting(pending: Sequence[str]) -> str:
    """What a blocked link's tasks say while links it comes after are not stored yet."""
    shown = ", ".join(pending[:WAITING_LISTED])
    more = len(pending) - WAITING_LISTED
    return f"waiting for chain link {shown}" + (f" and {more} more" if more > 0 else "")


def failed_because(nvr: str, build_id: int, reason: str) -> str:
    """A dependent link's reason: the failed link by name, then (cut) why it failed."""
    text = f"chain link {nvr} (build {build_id}) failed: {reason}"
    return text if len(text) <= REASON_MAX else text[: REASON_MAX - 1] + "…"
