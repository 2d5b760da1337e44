"""Critical-path weights for the live dispatcher (pure, no I/O): a task's estimated work from
the durations of earlier builds of its package, a chain link's longest path downstream, and
when a slower host's decline (matching.declines) stops holding a task back.

Seconds are at the farm's pace (speed 1): a build that took 100 s on a host of speed 2 is
200 s of work, as matching reads TaskView.work / HostView.speed as the time on a host.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence

from services.registry.trust import Trust

from .matching import (
    Coming,
    HostView,
    Outlook,
    TaskView,
    can_build,
    declines,
    heavy,
    keeps,
    may_build,
    pressing,
)

# The weight of a new duration in a package's estimate once it has this many samples: the
# first few average evenly, later ones move it by this share (a package's build time drifts
# with its versions; one odd build must not swing it).
EWMA_WEIGHT = 0.3
# A duration outside these bounds is no estimate (a clock skew, a lease held for days).
MIN_SECONDS, MAX_SECONDS = 1.0, 7 * 24 * 3600.0
ANY_ARCH = "*"  # the estimate row of a package over all its arches


def package_of(nvr: str) -> str:
    """The package name of an N-V-R (Koji's: everything before the last two dashes)."""
    return nvr.rsplit("-", 2)[0]


def farm_seconds(elapsed: float, speed: float | None) -> float | None:
    """A build's duration at the farm's pace: its elapsed seconds times its host's speed
    factor when leased (unknown: the farm's pace); None if the duration is implausible."""
    if speed is not None and speed > 0:
        elapsed *= speed
    if not math.isfinite(elapsed) or not MIN_SECONDS <= elapsed <= MAX_SECONDS:
        return None
    return elapsed


def update_estimate(old: float | None, samples: int, seconds: float) -> tuple[float, int]:
    """The package's estimate and sample count after one more duration: the mean while it has
    few samples (weight 1/n), then an exponentially weighted moving average (EWMA_WEIGHT)."""
    if old is None or samples <= 0:
        return seconds, 1
    weight = max(EWMA_WEIGHT, 1.0 / (samples + 1))
    return old + weight * (seconds - old), samples + 1


def downstream(
    work: Mapping[int, float | None], after: Iterable[tuple[int, int]]
) -> dict[int, float]:
    """For each build of a DAG, the longest path among the builds that come after it (0 for
    one nothing comes after): a build's path is its work plus this. `work` is each build's
    (the longest of its tasks'; None, unknown, counts as 0 on a dependent's path: a lower
    bound), `after` the pairs (build, build it comes after)."""
    dependents: dict[int, list[int]] = {b: [] for b in work}
    for build, before in after:
        dependents.setdefault(before, []).append(build)
        dependents.setdefault(build, [])
    below: dict[int, float] = {}
    # Iterative depth-first order: a long chain never hits Python's recursion limit.
    for root in dependents:
        stack = [(root, False)]
        while stack:
            build, expanded = stack.pop()
            if build in below:
                continue
            if not expanded:
                stack.append((build, True))
                stack += [(d, False) for d in dependents[build] if d not in below]
                continue
            below[build] = max(
                ((work.get(d) or 0.0) + below[d] for d in dependents[build]), default=0.0
            )
    return below


def build_work(tasks_work: Sequence[float | None]) -> float | None:
    """A build's work: its longest task's (its arches build in parallel), None if none known."""
    known = [w for w in tasks_work if w is not None]
    return max(known) if known else None


def decline_expired(declined_for: float | None, max_seconds: float) -> bool:
    """Whether a task declined for `declined_for` seconds (None: never) has waited long enough
    for a faster host: from then on any host may take it."""
    return declined_for is not None and declined_for >= max_seconds


def waiting_reason(speed: float, free_in: float | None) -> str:
    """A declined task's queue reason."""
    when = "now" if free_in is None or free_in <= 0 else f"in {free_in:.0f} s"
    return f"waiting for a faster host (speed {speed:g}, free {when})"


def awaited(host: HostView, task: TaskView, outlook: Outlook) -> tuple[float, float]:
    """(speed, seconds until it has a slot free) of the faster host that would end `task`
    soonest: the one a declined task waits for (its queue reason)."""
    work = task.work or 0.0
    candidates = [(s, max(f, outlook.now)) for s, f in outlook.faster if s > host.speed]
    if not candidates:
        return host.speed, 0.0
    speed, free_at = min(candidates, key=lambda c: c[1] + work / c[0])
    return speed, free_at - outlook.now


@dataclasses.dataclass
class Declining:
    """One pull's view for matching.declines: the outlook of each arch, how long each
    candidate has been declined already, and the bound after which it no longer is
    ([dispatcher] decline_max_seconds). Collects the queue reasons of the tasks declined."""

    outlooks: Mapping[str, Outlook]
    declined_for: Mapping[int, float]
    max_seconds: float
    # The hosts of each outlook's `faster` entries, in order: a task waits only for a host
    # that may build it (its trust, owner and exclusions).
    hosts: Mapping[str, Sequence[HostView]] = dataclasses.field(default_factory=dict)
    reasons: dict[int, str] = dataclasses.field(default_factory=dict)
    # Per arch, the critical tasks this pull left already: each takes one of the faster
    # slots that free soonest (matching.declines' `ahead`), so the next one counts on the rest.
    ahead: dict[str, int] = dataclasses.field(default_factory=dict)
    # Per arch, blocked chain links about to be queued, longest path first (matching.keeps),
    # and how far ahead a slot is kept for one ([dispatcher] keep_seconds; 0: never).
    coming: Mapping[str, Sequence[Coming]] = dataclasses.field(default_factory=dict)
    keep_seconds: float = 0.0
    kept: set[int] = dataclasses.field(default_factory=set)  # coming links a slot waits for

    def keeping(self, host: HostView, candidates: Iterable[TaskView]) -> int:
        """How many of `host`'s free slots it leaves idle for coming links (matching.keeps)
        instead of the queued `candidates`: none if it could take one that is heavy here
        (matching.heavy: a giant; slower hosts leave such a task to a kept slot
        as to any free one), else for links of a longer path than any of them. Each link is
        kept once per pull, and a link kept by another host's slot takes one of the slots
        this host counts on (`ahead`)."""
        longest = 0.0
        for task in candidates:
            if task.path is None or task.work is None or not can_build(host, task):
                continue
            outlook = self.outlooks.get(task.arch)
            if outlook is not None and heavy(host, task, outlook):
                return 0
            longest = max(longest, task.path)
        n = 0
        for arch in sorted(self.coming.keys() & host.arches):
            outlook = self.outlooks.get(arch)
            if outlook is None:
                continue
            ahead = 0
            for link in self.coming[arch]:
                task = link.task
                if n >= host.free_slots or (task.path or 0.0) <= longest:
                    break
                if task.task_id in self.kept:
                    ahead += 1
                    continue
                soon = outlook.now <= link.ready_at <= outlook.now + self.keep_seconds
                # The cheap tests first: most links are neither soon nor pressing.
                then = dataclasses.replace(outlook, now=link.ready_at)
                if not soon or not can_build(host, task) or not pressing(host, task, then):
                    continue
                others = for_task(outlook, self.hosts.get(arch), task, besides=host)
                until = link.ready_at + self.max_seconds
                if keeps(host, link, others, ahead, self.keep_seconds, until):
                    self.kept.add(task.task_id)
                    n += 1
        return n

    def leaves(self, host: HostView, task: TaskView, core_only: bool = False) -> bool:
        """Whether `host` leaves `task` to a faster host (and notes why it waits);
        `core_only`: only to a faster core host (a core host's claim: matching.core_claims,
        whose result is accepted alone, is left only to a host whose result is too)."""
        outlook = self.outlooks.get(task.arch)
        since = self.declined_for.get(task.task_id)
        if outlook is None or decline_expired(since, self.max_seconds):
            return False
        outlook = for_task(outlook, self.hosts.get(task.arch), task, core_only)
        # Only a slot free before the bound runs out is worth the wait.
        until = outlook.now + self.max_seconds - (since or 0.0)
        if not declines(host, task, outlook, self.ahead.get(task.arch, 0), until):
            return False
        self.ahead[task.arch] = self.ahead.get(task.arch, 0) + 1
        self.reasons[task.task_id] = waiting_reason(*awaited(host, task, outlook))
        return True


def for_task(
    outlook: Outlook,
    hosts: Sequence[HostView] | None,
    task: TaskView,
    core_only: bool = False,
    besides: HostView | None = None,
) -> Outlook:
    """The outlook with only the hosts that may build `task` once a slot frees (a replica's
    trust and owner rules, the hosts that failed it; `core_only`: core hosts): waiting for
    any other is waiting for nothing. `besides`: only the slots at least as fast as that
    host's, none of its own free now (those it is filling): what matching.keeps weighs.
    Without the hosts' names, the outlook as it is (none for `core_only`: no host is known
    to be core)."""
    if hosts is None:
        return dataclasses.replace(outlook, faster=()) if core_only else outlook
    may: dict[str, bool] = {}  # by host: an outlook lists each of its slots
    kept = []
    for entry, other in zip(outlook.faster, hosts, strict=True):
        if besides is not None and entry[0] < besides.speed:
            continue
        ok = may.get(other.host)
        if ok is None:
            ok = may[other.host] = may_build(other, task) and (
                not core_only or other.trust == Trust.CORE
            )
        if ok and not (
            besides is not None and other.host == besides.host and entry[1] <= outlook.now
        ):
            kept.append(entry)
    return dataclasses.replace(outlook, faster=kept)
