"""A complete build as Koji content-generator metadata (version 0): pure, no I/O.

One buildroot per task (the host that built it, its environment manifest as the buildroot's
tools, who agreed and by what rule in its `extra`), one output per stored file with its
SHA-256 (the hub re-hashes every upload before it creates the build). The build's `extra`
names the Skyline build and every file's digest, so a later attempt can tell that a build
the hub already has is this one (`already_imported`).

What the CG spec calls components (the buildroot's RPMs, each with its sigmd5) are not known
here: builders report name -> version only, so those go in as tools.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

EXTRA_KEY = "skyline"
MAX_TOOL = 255  # Koji's buildroot_tools_info columns are varchar(255)


@dataclasses.dataclass(frozen=True)
class Output:
    name: str  # file name (N-V-R.A.rpm, or a log's name)
    # Where the collector keeps it, relative to its Koji top directory (absolute: a draft's
    # file still in the staging folder).
    path: str
    sha256: str
    size: int
    arch: str  # the RPM's arch; the task's arch for a log
    task_id: int  # the task whose buildroot made it

    @property
    def is_rpm(self) -> bool:
        return self.name.endswith(".rpm")

    @property
    def relpath(self) -> str:
        """Its folder in the upload directory: logs of different arches share names."""
        return "" if self.is_rpm else self.arch


@dataclasses.dataclass(frozen=True)
class Buildroot:
    task_id: int
    arch: str
    host: str
    env_manifest: Mapping[str, str]  # empty when the builder's task.finished never came
    agreeing: Sequence[str] = ()
    rule: str | None = None


@dataclasses.dataclass(frozen=True)
class Plan:
    build_id: int  # Skyline's
    nvr: str
    owner: str
    start_time: float
    end_time: float
    buildroots: Sequence[Buildroot]
    outputs: Sequence[Output]

    @property
    def digests(self) -> dict[str, str]:
        """Each output's digest, keyed by its path in the build."""
        return {_key(o): o.sha256 for o in self.outputs}


def _key(output: Output) -> str:
    return f"{output.relpath}/{output.name}" if output.relpath else output.name


def metadata(plan: Plan, cg_name: str, cg_version: str, draft: bool = False) -> dict[str, Any]:
    """`draft`: a Koji draft build (hub >= 1.34), whose release the hub suffixes with
    `,draft_<build id>` until promoteBuild gives it the plain N-V-R."""
    name, version, release = plan.nvr.rsplit("-", 2)
    ids = {br.task_id: i for i, br in enumerate(plan.buildroots, start=1)}
    used = {o.task_id for o in plan.outputs}
    return {
        "metadata_version": 0,
        "build": {
            "name": name,
            "version": version,
            "release": release,
            "source": None,  # the hub requires the key
            "start_time": plan.start_time,
            "end_time": plan.end_time,
            "extra": {
                EXTRA_KEY: {
                    "build_id": plan.build_id,
                    "owner": plan.owner,
                    "files": plan.digests,
                }
            },
            **({"draft": True} if draft else {}),
        },
        # The hub refuses a buildroot no output uses.
        "buildroots": [
            _buildroot(ids[br.task_id], br, cg_name, cg_version)
            for br in plan.buildroots
            if br.task_id in used
        ],
        "output": [_output(ids[o.task_id], o) for o in plan.outputs],
    }


def _buildroot(brid: int, br: Buildroot, cg_name: str, cg_version: str) -> dict[str, Any]:
    tools = [
        {"name": name[:MAX_TOOL], "version": version[:MAX_TOOL]}
        for name, version in sorted(br.env_manifest.items())
    ]
    return {
        "id": brid,
        "host": {"os": "linux", "arch": br.arch},
        "content_generator": {"name": cg_name, "version": cg_version},
        "container": {"type": "mock" if "mock" in br.env_manifest else "none", "arch": br.arch},
        "tools": tools,
        "components": [],
        "extra": {
            EXTRA_KEY: {
                "task_id": br.task_id,
                "host": br.host,
                "agreeing": list(br.agreeing),
                "rule": br.rule,
                "env_manifest": dict(br.env_manifest),
            }
        },
    }


def _output(brid: int, o: Output) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "buildroot_id": brid,
        "filename": o.name,
        "filesize": o.size,
        "arch": o.arch if o.is_rpm else "noarch",
        "checksum": o.sha256,
        "checksum_type": "sha256",
        "type": "rpm" if o.is_rpm else "log",
    }
    if not o.is_rpm:
        entry["relpath"] = o.relpath  # in the upload directory
        entry["subdir"] = o.arch  # data/logs/<arch>/, like the collector's own layout
    return entry


def already_imported(plan: Plan, found: Mapping[str, Any] | None, cg_name: str) -> bool | None:
    """Whether the hub's build `found` (getBuild) is this plan's: True if it is, complete with
    the same files; None if there is none to care about (no build, or a failed or canceled one,
    which the hub lets an import replace); False if it is another build of the N-V-R."""
    if found is None or found.get("state") in (3, 4):  # koji.BUILD_STATES FAILED, CANCELED
        return None
    extra = (found.get("extra") or {}).get(EXTRA_KEY) or {}
    return (
        found.get("state") == 1  # COMPLETE
        and found.get("cg_name") == cg_name
        and extra.get("build_id") == plan.build_id
        and extra.get("files") == plan.digests
    )


def is_draft_of(plan: Plan, found: Mapping[str, Any], cg_name: str) -> bool:
    """Whether the hub's build `found` is a complete draft of this plan (same Skyline build,
    same files), imported by this content generator."""
    extra = (found.get("extra") or {}).get(EXTRA_KEY) or {}
    return (
        bool(found.get("draft"))
        and found.get("state") == 1  # COMPLETE
        and found.get("cg_name") == cg_name
        and extra.get("build_id") == plan.build_id
        and extra.get("files") == plan.digests
    )
