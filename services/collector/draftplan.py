"""Which results make a build's Koji draft (pure, no I/O).

A CG import is the whole build, so a draft needs a result for every task the collector knows
of (its leases): a task's accepted (stored) result, else its first result from a host the
verifier named when it asked for a replica (task.replicate's exclude_hosts are the hosts whose
results passed its checks). A task with neither is not ready: the draft waits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


class NotReady(Exception):
    """Some task has no result to put into a draft yet."""


def choose_leases(
    leases: Sequence[Mapping[str, Any]], waiting: Mapping[str, Sequence[str]]
) -> dict[int, Mapping[str, Any]]:
    """task id -> the lease whose result goes into the draft; `leases` oldest first."""
    chosen: dict[int, Mapping[str, Any]] = {}
    for task_id in sorted({lease["task_id"] for lease in leases}):
        mine = [lease for lease in leases if lease["task_id"] == task_id]
        stored = [lease for lease in mine if lease["state"] == "stored"]
        hosts = set(waiting.get(str(task_id), ()))
        first = [
            lease
            for lease in mine
            if lease["state"] == "open"
            and lease["finished"]
            and not lease["cleaned"]
            and lease["host"] in hosts
        ]
        if stored:
            chosen[task_id] = stored[0]
        elif first:
            chosen[task_id] = first[0]
        else:
            raise NotReady(f"task {task_id} has no accepted result and no result waiting")
    if not chosen:
        raise NotReady("the build has no leases here")
    return chosen


def rpm_arch(name: str, task_arch: str) -> str:
    """An RPM's arch from its file name (N-V-R.A.rpm); a log's is its task's."""
    if name.endswith(".rpm") and name.count(".") >= 2:
        return name.rsplit(".", 2)[1]
    return task_arch


def unique_files(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """One file per path in the build: a noarch subpackage (and a log name) comes from every
    arch's task; like the collector's storage, keep the one stored first, else the lowest
    task's. Logs live under their task's arch, so they never collide."""
    ordered = sorted(rows, key=lambda r: (not r["stored"], r["task_id"], r["name"]))
    seen: set[tuple[str, str]] = set()
    kept = []
    for r in ordered:
        key = (r["name"], "" if r["name"].endswith(".rpm") else r["task_arch"])
        if key not in seen:
            seen.add(key)
            kept.append(r)
    return sorted(kept, key=lambda r: (r["task_id"], r["name"]))
