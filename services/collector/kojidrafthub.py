"""Koji draft builds on the hub (1.34+): find, promote. Blocking XML-RPC: run in a thread.

A draft is a CGImport with `build.draft: true`; the hub gives it the release
`<release>,draft_<build id>`, so several drafts of one N-V-R may exist beside each other and
beside the regular build. `promoteBuild` turns one COMPLETE draft into the regular build of the
plain N-V-R (same build id; its files move to the plain path, a symlink stays at the draft's),
refused if a regular build of the N-V-R exists. The default `draft_promotion` policy lets the
build's owner (the CG user, who imported it) or a `draft-promoter` promote. Promotion cannot be
undone, and a COMPLETE draft cannot be canceled (cancelBuild takes BUILDING builds only): an
unpromoted draft stays in the hub until an admin deletes it (`koji delete-build`).
"""

from __future__ import annotations

import dataclasses
import logging
import re
from typing import Any

import koji

from . import kojimeta

log = logging.getLogger(__name__)

MIN_VERSION = (1, 34)  # the first Koji with draft builds
_supported: dict[str, bool] = {}  # hub URL -> whether it has drafts (asked once per process)


@dataclasses.dataclass(frozen=True)
class Candidate:
    """The build's draft as the collector recorded it: the files it was imported with, and
    its hub build id once known (None after a crash between CGImport and the record)."""

    files: dict[str, str]
    koji_build_id: int | None


def supports_drafts(hub: Any, url: str) -> bool:
    """Whether the hub's Koji is 1.34 or later (getKojiVersion; a hub without that call is
    older still)."""
    if url not in _supported:
        try:
            version = str(hub.getKojiVersion())
        except (koji.GenericError, koji.ParameterError) as exc:
            log.info("the Koji hub at %s has no getKojiVersion (%s): no drafts", url, exc)
            _supported[url] = False
        else:
            _supported[url] = parse_version(version) >= MIN_VERSION
    return _supported[url]


def parse_version(version: str) -> tuple[int, ...]:
    """'1.35.3' -> (1, 35, 3); parts that are not numbers end it ('1.34rc1' -> (1, 34))."""
    parts = []
    for part in version.split("."):
        m = re.match(r"\d+", part)
        if m is None:
            break
        parts.append(int(m.group()))
        if m.group() != part:
            break
    return tuple(parts)


def find_draft(
    hub: Any, plan: kojimeta.Plan, cg_name: str, koji_build_id: int | None
) -> int | None:
    """The hub's complete draft of `plan`: by its build id if recorded, else among the N-V-R's
    drafts (the hub may hold several: another Skyline build's, an earlier candidate's)."""
    if koji_build_id is not None:
        found = hub.getBuild(koji_build_id)
        return koji_build_id if found and kojimeta.is_draft_of(plan, found, cg_name) else None
    name, version, release = plan.nvr.rsplit("-", 2)
    package = hub.getPackageID(name)
    if package is None:
        return None
    for b in hub.listBuilds(packageID=package, draft=True, state=koji.BUILD_STATES["COMPLETE"]):
        if b["version"] != version or koji.parse_target_release(b["release"]) != release:
            continue
        found = hub.getBuild(b["build_id"])  # listBuilds leaves out `extra`
        if found and kojimeta.is_draft_of(plan, found, cg_name):
            return int(found["id"])
    return None


def promote(hub: Any, draft_id: int) -> int:
    """Make the draft the regular build of its N-V-R; its build id stays."""
    promoted = hub.promoteBuild(draft_id)
    log.info("promoted Koji draft %d to %s", draft_id, promoted["nvr"])
    return int(promoted["id"])
