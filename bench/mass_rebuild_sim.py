"""A mass rebuild of Fedora's real package set on a simulated farm, driven by the dispatcher's
real pure policy: how close to the lower bound does its scheduling finish?

Discrete-event simulation, no I/O and no services. The workload comes from
../shared/data/fedora-specs-2025-02.jsonl.gz (see that directory's README):

- packages and their build dependencies (`build_deps`, resolved to the source package of that
  name or the one defining a subpackage of that name; unresolved names are ignored and
  counted). A dependency is a chain link: a package's tasks are queued only once every task of
  every package it build-requires is done (Koji tags a build only when all its arches are).
  Cycles (bootstrap loops) are broken by dropping every edge inside a strongly connected
  component (counted; the default, --cycles scc): in a real mass rebuild the members of a
  dependency cycle are built against the builds already in the repository, not after one
  another, so no order among them is imposed. Dropping only DFS back edges (--cycles dfs)
  keeps an arbitrary order inside each loop and makes a critical path of tens of hours (43.5 h
  against 4.6 h on the full set) that no real rebuild follows;
- arches: the tag builds x86_64, aarch64, ppc64le and s390x (i686 is multilib only and left
  out); a noarch package is one noarch task (buildable anywhere), any other one task per tag
  arch left by ExclusiveArch / ExcludeArch (Fedora's arch macros expanded; a package left with
  no tag arch is not built, counted);
- durations: heavy-tailed, a log-normal around a median that grows with spec_lines (a size
  hint, not a duration), with known giants (kernel, browsers, LibreOffice, texlive, compilers)
  at hours. A task's time on a host is its work / the host's speed.

The farm: 500 builders by default, mostly x86_64 and aarch64, some ppc64le and s390x (fewer
but bigger machines, as Fedora's are), of mixed slots and speed (log-normal). Every builder is
a core host (results accepted at once: replicas are the trust simulation's subject, not this
one's), all builds belong to one owner (releng) at mass-rebuild priority.

Scheduling runs the real code paths of services/dispatcher/handlers.py with the store replaced
by in-memory queues: a host with free slots pulls (schedule_host: candidates of its arches in
the store's order, priority DESC, path DESC NULLS LAST, id (store.pull_candidates), filtered
by matching.can_build, core_claims first, then fairshare.interleave by class and owner); new
tasks look for free hosts building their arch and let them pull (schedule_tasks:
matching.pick_host's preference). Every builder is rated with its speed (HostView.speed, the
registry's host.status speed_factor; QoS scores neutral). Orderings compared (the first,
the real policy, is the default):

- policy: the live dispatcher's decisions with its inputs only (issue 9). The store's order:
  the mass rebuild's one priority, then each task's longest remaining dependency path
  (estimated durations), then its id. Each pull reads its outlook anew as store.outlooks
  does, from the same pure function (matching.build_outlook): a slot per entry of the
  handlers.OUTLOOK_HOSTS (32) fastest builders of the arch, free now or when its lease is
  expected to end (matching.lease_frees_at: leased at + estimated work / speed, capped by
  the lease's expiry, and an overdue lease at its expiry: now + lease_seconds, 1 h, as the
  host's statuses renew it, up to 24 h after it was given), never the true end; the deadline
  is the batch's expected end (matching.batch_end over every arch's longest queued path and
  every running task's estimated end plus the rest of its path). A task declined for
  [dispatcher] decline_max_seconds (10 min) goes to any host, and only a faster slot free
  before that counts (matching.declines' `until`). A pull reads its free slots + 4
  candidates (one owner's, handlers.pull_many); a host with a free slot pulls at each
  heartbeat ([builder] heartbeat_seconds, all at once here), and a declined task waits for
  it (no push). Every builder is core and every build official, so each task is a core
  claim: it is left only to a faster core host (handlers.choose). A fast host keeps a free
  slot for a critical chain link about to be queued (matching.keeps through
  critical.Declining.keeping, as handlers.choose: store.coming's 16 blocked tasks of the
  longest paths per arch whose dependencies' tasks are all leased or built, queued by those
  leases' estimated ends within [dispatcher] keep_seconds, 10 min, --keep; never from a
  heavy candidate). Otherwise as policy-sim:
- policy-sim: the policy as this simulation ran it before issue 9's review (true lease
  ends, up to 96 builders' slots, no decline bound, 32 extra candidates, no heartbeats, a
  declined task pushed to a free faster host at once). The tasks carry their critical-path
  weights (TaskView.work, path), so the real matching rules act: pick_host prefers the
  fastest free host for them, and a slower host declines a critical task when a faster one
  frees soon enough to end it earlier (matching.declines; one free now pulls at once).
  Whether a task is critical (matching.critical_path_ends): its estimated path padded by
  --pad (1.15: the estimates' error) and run whole at the pulling host's pace (pro rata: a
  link may not use up the slack of the links after it) would end after the batch's expected
  end (now plus the longest remaining path of a queued or running task at the fastest
  hosts; the estimated lower bound itself is no deadline, as the longest of many noisy paths
  overstates it: 6.1 h against 4.6 h). The outlook lists each slot of the fastest builders
  (enough to cover a pull's window: else a pull that left many critical tasks ran past the
  list and took the next giant itself), and a pull's declined tasks each count on a
  different faster slot (declines' `ahead`). The task's own work counts at an upper
  quantile of its estimate ([dispatcher] work_pad, 1.5: a lease commits its error, while
  the links after it are judged again when ready), and a heavy task (its padded work on the
  pulling host at least [dispatcher] heavy_share, 0.25, of the time left to that expected
  end) is left to a faster host even with slack, as the expected end is an estimate too;
- policy-uniform: the policy before work_pad and heavy_share (the whole path padded 1.15);
- policy-greedy: the policy before these rules (unpadded, the greedy slack test against the
  estimated lower bound, one outlook entry per faster builder and no `ahead`);
- fifo: every task at the same priority, so in submission order (the tag's, alphabetical);
- cp-priority: the existing `priority` field set from the path (log-scaled into the
  mass-rebuild class 0..99), no weights;
- cp-exact: the path as an exact sort key, no weights (hosts by QoS and free slots only).

The lower bound is max(critical path with each package at its fastest possible host, total
work / total capacity); the per-arch bound (an arch's work / the capacity of hosts building it)
is a valid, tighter one, printed beside it.

Full set, estimates off by the default 0.3 log-normal error, policy with fast slots kept for
coming links (keep_seconds 600): seed 1 1.152x, seed 2 1.103x, seed 3 1.000x (LB 8.06 h, its
critical path); with --keep 0 (the policy before) 1.092x, 1.198x, 1.000x: within the noise
such changes make (see README). Before keeping, policy (the live dispatcher's
inputs, issue 9): seed 1 1.092x the bound (5.03 h, LB 4.61 h), seed 2 1.198x (6.56 h, LB 5.47
h); policy-sim (the inputs this simulation used before: true lease ends, 96 builders' slots, no
decline bound) 1.045x and 1.057x. What the live inputs cost, seed 2 (--explain): the chain that
ends last (gcc, kf5 links, libreoffice, all ppc64le) runs its giants on ppc64le hosts of speed
1.76 against the arch's 2.05 and small links on slower ones: 66 min over the bound. A slower
host no longer knows when a fast one truly frees: a lease past its estimate counts until its
expiry, and a wait past decline_max (10 min) hands the task to whichever host pulls next; so
the giants go to the fastest host free within the bound, not the fastest. ppc64le and s390x
slots also idle at 55-68% busy for half an hour (1.5-2 h) with 2,900 tasks queued (slow hosts
declining the queue's critical head), yet a deeper pull is worse: 32 extra candidates give
1.585x on seed 2 (slow hosts then take more of what the fast ones would have ended sooner). The
figure moves a lot with such inputs, so two seeds say little beyond its range. Ablations on
seed 2 before the last two fixes (1.281x then): decline bound off 1.249x, late_pad 1.5 1.249x,
32 extra candidates 1.281x; each fix kept has a reason that holds on a real farm (a lease is on
record when given; a faster slot that frees after the decline bound is not waited for: the
trace showed chromium declined for a 2.05 host freeing at 12 min, then taken at 10 min by a
0.96 one). Before issue 9: policy 1.045x and 1.057x, policy-uniform 1.43x and 1.04x, the policy
before work_pad and heavy_share 1.38x and 1.20x, policy-greedy 1.51x and 1.22x. With exact
estimates (--estimate-noise 0) the policy gives 1.410x and 1.322x (the pads assume an error
there is none of, and the decline bound still hands giants to slow hosts; the former policy
1.058x and 1.081x); seed 1 fifo 4.05x. 500,000-600,000 declines, about 2 min per policy run on
a quiet machine. --explain shows the chain that ends last and the load.

    .venv/bin/python bench/mass_rebuild_sim.py [--packages N] [--builders N] [--seed N]
        [--orderings policy,policy-sim,policy-uniform,policy-greedy,fifo,cp-priority,cp-exact]
        [--cycles scc|dfs] [--estimate-noise S] [--pad P] [--work-pad P] [--heavy-share S]
        [--decline-max MIN] [--pull-extra N] [--late-pad P] [--explain]

--explain prints, after each ordering, the chain that ends last (each link's release, wait,
host speed against its arch's fastest, estimated against real work) and each machine arch's
busy share and queue per half hour.
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import heapq
import json
import math
import random
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from services.common.config import BuilderConfig, DispatcherConfig
from services.dispatcher import arches, critical, fairshare, handlers, matching, store

DATA = Path(__file__).resolve().parents[2] / "shared/data/fedora-specs-2025-02.jsonl.gz"
TAG_ARCHES = ("x86_64", "aarch64", "ppc64le", "s390x")
OWNER = "releng"
MASS_PRIORITY = 50  # a mass rebuild's priority (class MASS_REBUILD: 0..99)
# matching.Outlook.pad for the policy: a path counts as this many times its estimate when
# judging whether it is critical (the estimates' log-normal error, sigma 0.3 by default).
PAD = matching.ESTIMATE_PAD  # the live dispatcher's, as every rule here
# matching.Outlook.work_pad and heavy_share: the live dispatcher's defaults ([dispatcher]).
WORK_PAD = DispatcherConfig().work_pad
HEAVY_SHARE = DispatcherConfig().heavy_share
# After this long declined, any host takes a task ([dispatcher] decline_max_seconds), minutes.
DECLINE_MAX = DispatcherConfig().decline_max_seconds / 60
# A fast host keeps a slot for a critical chain link queued within this ([dispatcher]
# keep_seconds: matching.keeps), minutes.
KEEP = DispatcherConfig().keep_seconds / 60
# A host with a free slot pulls at each heartbeat ([builder] heartbeat_seconds), minutes.
HEARTBEAT = BuilderConfig().heartbeat_seconds / 60
# A lease's expiry, minutes: builders heartbeat every HEARTBEAT minutes, so their statuses
# renew each open lease to now + [dispatcher] lease_seconds (1 h), up to lease_max_seconds
# (24 h) and lease_overrun times its estimate on the host after it was given
# (store.renew_leases); the outlook counts an overdue lease's slot until then.
LEASE = DispatcherConfig.lease_seconds / 60.0
LEASE_MAX = DispatcherConfig.lease_max_seconds / 60.0
OVERRUN = DispatcherConfig.lease_overrun


def lease_expiry(now: float, at: float, work: float, speed: float, lease: float) -> float:
    """When a lease given at `at` (estimated `work` on a host of `speed`) expires, its host's
    statuses renewing it as store.renew_leases does."""
    cap = min(LEASE_MAX, max(lease, OVERRUN * work / speed)) if speed > 0 else LEASE_MAX
    return min(now + lease, at + cap)


# Fedora's arch macros (redhat-rpm-config, early 2025), restricted to what matters here.
ARCH_MACROS = {
    "%{ix86}": ("i686",),
    "%{x86}": ("i686",),
    "%{arm}": ("armv7hl",),
    "%{arm32}": ("armv7hl",),
    "%{arm64}": ("aarch64",),
    "%{power64}": ("ppc64le",),
    "%{x86_64}": ("x86_64",),
    "%{java_arches}": ("aarch64", "ppc64le", "s390x", "x86_64"),
    "%{rust_arches}": ("aarch64", "ppc64le", "s390x", "x86_64"),
    "%{golang_arches}": ("aarch64", "ppc64le", "s390x", "x86_64"),
    "%{golang_arches_future}": ("aarch64", "ppc64le", "s390x", "x86_64"),
    "%{nodejs_arches}": ("aarch64", "ppc64le", "s390x", "x86_64"),
    "%{kernel_arches}": ("aarch64", "ppc64le", "s390x", "x86_64"),
    "%{zig_arches}": ("aarch64", "x86_64"),
    "%{ldc_arches}": ("aarch64", "ppc64le", "x86_64"),
    "%{GPRbuild_arches}": ("aarch64", "ppc64le", "s390x", "x86_64"),
    "%{fpc_arches}": ("aarch64", "ppc64le", "x86_64"),
    "%{mono_arches}": ("aarch64", "ppc64le", "s390x", "x86_64"),
    "%mono_arches": ("aarch64", "ppc64le", "s390x", "x86_64"),
    "%{qt5_qtwebengine_arches}": ("aarch64", "x86_64"),
    "%{qt6_qtwebengine_arches}": ("aarch64", "x86_64"),
    "%{efi}": ("aarch64", "x86_64"),
    "%{ocaml_native_compiler}": ("aarch64", "ppc64le", "s390x", "x86_64"),
}
# Builds known to take hours (reference-host minutes); everything else is log-normal.
GIANTS = {
    "kernel": 180,
    "chromium": 480,
    "firefox": 200,
    "thunderbird": 200,
    "libreoffice": 300,
    "texlive": 360,
    "qt5-qtwebengine": 300,
    "qt6-qtwebengine": 300,
    "webkitgtk": 240,
    "gcc": 200,
    "llvm": 150,
    "rust": 120,
    "ghc": 150,
    "ceph": 240,
    "nodejs": 90,
    "java-21-openjdk": 120,
    "java-17-openjdk": 120,
}
# Builders: (machine arch, share of the builders, slots to draw from): ppc64le and s390x are
# few but big machines, as Fedora's POWER and LPAR builders are.
HOST_MIX = (
    ("x86_64", 0.46, (2, 4, 4, 8)),
    ("aarch64", 0.38, (2, 4, 4, 8)),
    ("ppc64le", 0.08, (8, 12, 16)),
    ("s390x", 0.08, (8, 12, 16)),
)


@dataclasses.dataclass
class Package:
    name: str
    work: float  # reference-host minutes of one arch's task
    arches: tuple[str, ...]  # its tasks' arches
    deps: list[int] = dataclasses.field(default_factory=list)
    dependents: list[int] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Workload:
    packages: list[Package]
    stats: dict[str, int]


def task_arches(row: dict, stats: dict[str, int]) -> tuple[str, ...]:
    """The tag arches a package's tasks are for: ("noarch",) or a subset of TAG_ARCHES."""
    if row["noarch"]:
        if [a for a in row["exclusive_arch"] if a != "noarch"]:
            stats["noarch_exclusive_ignored"] += 1  # Koji would pick a host of those arches
        return ("noarch",)

    def expand(tokens: Iterable[str]) -> set[str] | None:
        out: set[str] = set()
        known = False
        for token in tokens:
            token = token.rstrip(",")
            if token in ARCH_MACROS:
                out.update(ARCH_MACROS[token])
                known = True
            elif not token.startswith("%"):
                out.add(token)
                known = True
        return out if known else None

    exclusive = expand(row["exclusive_arch"])
    excluded = expand(row["exclude_arch"]) or set()
    allowed = [a for a in TAG_ARCHES if (exclusive is None or a in exclusive) and a not in excluded]
    return tuple(allowed)


def work_minutes(row: dict, rng: random.Random) -> float:
    """Heavy-tailed: median ~4 min for a typical (150-line) spec, growing with its size."""
    if row["name"] in GIANTS:
        return GIANTS[row["name"]] * math.exp(rng.gauss(0, 0.1))
    median = 4.0 * max(0.5, row["spec_lines"] / 150) ** 0.6
    return min(12 * 60.0, median * math.exp(rng.gauss(0, 0.9)))


def load_workload(
    rows: Sequence[dict],
    rng: random.Random,
    cycles: str = "scc",
    universe: set[str] | frozenset[str] = frozenset(),
) -> Workload:
    """The packages of `rows`; `universe`: every name the whole data set provides (a
    dependency on one left out by subsampling is counted apart from an unresolved one)."""
    stats = dict.fromkeys(
        (
            "spec_rows",
            "not_built_no_arch",
            "noarch_exclusive_ignored",
            "deps_resolved",
            "deps_unresolved",
            "deps_outside_sample",
            "deps_self",
            "cycle_edges_broken",
        ),
        0,
    )
    stats["spec_rows"] = len(rows)
    kept = []
    for row in sorted(rows, key=lambda r: r["name"]):  # the tag's (alphabetical) order
        arch_list = task_arches(row, stats)
        if not arch_list:
            stats["not_built_no_arch"] += 1
            continue
        kept.append((row, Package(row["name"], work_minutes(row, rng), arch_list)))
    index = {pkg.name: i for i, (_, pkg) in enumerate(kept)}
    provider = dict(index)
    for i, (row, _) in enumerate(kept):
        for sub in row.get("subpackages", []):
            provider.setdefault(sub, i)
    packages = [pkg for _, pkg in kept]
    for i, (row, pkg) in enumerate(kept):
        deps = set()
        for name in row["build_deps"]:
            j = provider.get(name)
            if j is None:
                stats["deps_outside_sample" if name in universe else "deps_unresolved"] += 1
            elif j == i:
                stats["deps_self"] += 1
            else:
                stats["deps_resolved"] += 1
                deps.add(j)
        pkg.deps = sorted(deps)
    if cycles == "scc":
        stats["cycle_edges_broken"] = drop_scc_edges(packages)
    else:
        stats["cycle_edges_broken"] = break_cycles(packages)
    for i, pkg in enumerate(packages):
        for j in pkg.deps:
            packages[j].dependents.append(i)
    return Workload(packages, stats)


def break_cycles(packages: list[Package]) -> int:
    """Drop every dependency edge that closes a cycle (a DFS back edge): iterative, in order."""
    colour = [0] * len(packages)  # 0 new, 1 on the stack, 2 done
    broken = 0
    for root in range(len(packages)):
        if colour[root]:
            continue
        colour[root] = 1
        stack = [(root, 0)]
        while stack:
            node, k = stack[-1]
            deps = packages[node].deps
            if k == len(deps):
                colour[node] = 2
                stack.pop()
                continue
            stack[-1] = (node, k + 1)
            dep = deps[k]
            if colour[dep] == 1:
                deps[k] = -1
                broken += 1
            elif colour[dep] == 0:
                colour[dep] = 1
                stack.append((dep, 0))
    for pkg in packages:
        pkg.deps = [d for d in pkg.deps if d >= 0]
    return broken


def drop_scc_edges(packages: list[Package]) -> int:
    """Drop every dependency edge inside a strongly connected component (Tarjan, iterative):
    a bootstrap loop's members build against each other's previous builds."""
    n = len(packages)
    index: list[int | None] = [None] * n
    low = [0] * n
    on_stack = [False] * n
    stack: list[int] = []
    component = [0] * n
    counter = 0
    for root in range(n):
        if index[root] is not None:
            continue
        work = [(root, 0)]
        while work:
            v, k = work.pop()
            if k == 0:
                index[v] = low[v] = counter
                counter += 1
                stack.append(v)
                on_stack[v] = True
            deps = packages[v].deps
            if k < len(deps):
                work.append((v, k + 1))
                w = deps[k]
                w_index = index[w]
                if w_index is None:
                    work.append((w, 0))
                elif on_stack[w]:
                    low[v] = min(low[v], w_index)
                continue
            if low[v] == index[v]:
                while True:
                    w = stack.pop()
                    on_stack[w] = False
                    component[w] = v
                    if w == v:
                        break
            if work:
                u = work[-1][0]
                low[u] = min(low[u], low[v])
    dropped = 0
    for v, pkg in enumerate(packages):
        kept = [d for d in pkg.deps if component[d] != component[v]]
        dropped += len(pkg.deps) - len(kept)
        pkg.deps = kept
    return dropped


@dataclasses.dataclass
class Builder:
    view: matching.HostView
    slots: int
    speed: float


def make_builders(n: int, rng: random.Random) -> list[Builder]:
    """`n` builders (at least one per tag arch) of HOST_MIX's arches, slots and mixed speed."""
    if n < len(HOST_MIX):
        raise ValueError(f"at least {len(HOST_MIX)} builders, one per tag arch")
    counts = [max(1, round(n * share)) for _, share, _ in HOST_MIX]
    counts[0] += n - sum(counts)  # the rounding's remainder goes to the most common arch
    builders: list[Builder] = []
    for (arch, _, slot_choices), count in zip(HOST_MIX, counts, strict=True):
        for _ in range(count):
            slots = rng.choice(slot_choices)
            speed = min(2.5, max(0.4, math.exp(rng.gauss(0, 0.35))))
            name = f"{arch}-{len(builders):04d}"
            view = matching.HostView(
                host=name,
                trust="core",
                arches=arches.buildable(["noarch", arch]),
                releases=frozenset({"f42"}),
                free_slots=slots,
                owner="fedora",
                speed=speed,  # the registry's speed factor (host.status speed_factor)
            )
            builders.append(Builder(view, slots, speed))
    return builders


def topo_order(packages: list[Package]) -> list[int]:
    remaining = [len(p.deps) for p in packages]
    order = [i for i, r in enumerate(remaining) if r == 0]
    for i in order:
        for j in packages[i].dependents:
            remaining[j] -= 1
            if remaining[j] == 0:
                order.append(j)
    assert len(order) == len(packages), "cycles left"
    return order


def lower_bounds(
    packages: list[Package], builders: list[Builder], work: Sequence[float] | None = None
) -> dict[str, float]:
    """Minutes: critical path at the fastest host per arch, total work / capacity, per-arch
    work / capacity of the hosts building that arch. `work`: per package, else its own."""
    w = [p.work for p in packages] if work is None else work
    fastest = fastest_speeds(builders)
    finish = [0.0] * len(packages)
    for i in topo_order(packages):
        pkg = packages[i]
        start = max((finish[d] for d in pkg.deps), default=0.0)
        finish[i] = start + max(w[i] / fastest[a] for a in pkg.arches)
    capacity = sum(b.slots * b.speed for b in builders)
    total = sum(w[i] * len(p.arches) for i, p in enumerate(packages))
    per_arch = 0.0
    for a in TAG_ARCHES:
        cap = sum(b.slots * b.speed for b in builders if a in b.view.arches)
        arch_work = sum(w[i] for i, p in enumerate(packages) if a in p.arches)
        if arch_work:
            per_arch = max(per_arch, arch_work / cap if cap else math.inf)
    return {
        "critical_path": max(finish, default=0.0),
        "work_capacity": total / capacity,
        "per_arch": per_arch,
    }


def fastest_speeds(builders: list[Builder]) -> dict[str, float]:
    return {
        a: max(b.speed for b in builders if a in b.view.arches)
        for a in (*TAG_ARCHES, "noarch")
        if any(a in b.view.arches for b in builders)
    }


def remaining_path(packages: list[Package], estimates: list[float]) -> list[float]:
    """Each package's longest estimated path to the end of the rebuild, itself included."""
    rank = [0.0] * len(packages)
    for i in reversed(topo_order(packages)):
        rank[i] = estimates[i] + max((rank[j] for j in packages[i].dependents), default=0.0)
    return rank


def to_priority(path: float, longest: float) -> int:
    """A path length as a priority inside the mass-rebuild class (0..99), log-scaled."""
    if longest <= 0:
        return MASS_PRIORITY
    scaled = math.log1p(path) / math.log1p(longest)
    return min(99, max(0, round(99 * scaled)))


@dataclasses.dataclass
class Weights:
    """The critical-path weights the real policy reads (TaskView.work / path)."""

    estimates: list[float]  # per package, estimated reference minutes
    rank: list[float]  # per package, estimated longest remaining path (reference minutes)
    fastest: dict[str, float]  # per task arch, the fastest builder's speed
    horizon: float  # the estimated lower bound (minutes)
    pad: float = 1.0  # matching.Outlook.pad: estimated paths count as this many times longer
    pro_rata: bool = False  # matching.Outlook.pro_rata: slack shared along the path
    work_pad: float | None = None  # matching.Outlook.work_pad: the task's own work's pad
    heavy_share: float | None = None  # matching.Outlook.heavy_share (None: off)
    # The outlook lists each slot of the fastest builders, and a pull's declines count the
    # critical tasks it left already (matching.declines' `ahead`); else one entry per builder
    # that no faster one beats, and no count (the policy before these rules).
    slots: bool = False
    # As the live dispatcher: its outlook (matching.build_outlook from the OUTLOOK_HOSTS
    # fastest builders, leases' estimated ends, the batch's expected end), the decline bound,
    # the pull's depth (handlers.pull_many) and heartbeats of hosts with a free slot.
    live: bool = False
    lease: float = LEASE
    decline_max: float = DECLINE_MAX
    heartbeat: float = HEARTBEAT
    pull_extra: int = 4  # candidates beyond the free slots a pull reads (one owner's)
    late_pad: float = 1.0  # matching.lease_frees_at's
    keep: float = 0.0  # matching.keeps' window, minutes (0: no slot kept for a coming link)


@dataclasses.dataclass
class Result:
    makespan: float
    busy: float  # slot-minutes spent building
    slot_minutes: float  # slots x makespan
    leases: int
    built_order: list[tuple[int, float, float]]  # (package, start of its first task, end)
    runs: dict[int, tuple[str, float, float]]  # task -> (host, start, end)
    declined: int = 0  # pulls that left a task to a faster host (matching.declines)


class Simulation:
    """The dispatcher's pull and push paths over in-memory queues (handlers.schedule_host /
    schedule_tasks with the store's ordering), and builders that finish after work / speed."""

    def __init__(
        self,
        packages: list[Package],
        builders: list[Builder],
        priorities: Sequence[int],
        keys: Sequence[tuple],
        weights: Weights | None = None,
    ) -> None:
        self.packages = packages
        self.weights = weights
        self.now = 0.0
        self.declined = 0
        self.builders = {b.view.host: b for b in builders}
        for b in builders:
            b.view.free_slots = b.slots
        self.ends: dict[str, list[float]] = {b.view.host: [] for b in builders}
        # Tasks: (package, arch); ids in submission order (package order, then arch).
        self.tasks: list[tuple[int, str]] = [
            (i, a) for i, p in enumerate(packages) for a in p.arches
        ]
        self.views: list[matching.TaskView] = []
        for tid, (i, arch) in enumerate(self.tasks):
            priority = priorities[i]
            self.views.append(
                matching.TaskView(
                    task_id=tid,
                    arch=arch,
                    release="f42",
                    scratch=False,
                    owner=OWNER,
                    klass=fairshare.priority_class(priority),
                    work=None if weights is None else weights.estimates[i],
                    path=None if weights is None else weights.rank[i],
                )
            )
        self.keys = keys  # per package: the store's sort key, best first
        self.queues: dict[str, list[tuple[tuple, int]]] = {a: [] for a in (*TAG_ARCHES, "noarch")}
        self.leased: set[int] = set()
        self.free: dict[str, set[str]] = {a: set() for a in self.queues}
        # Per arch, its builders fastest first (the outlook's front is built from these).
        self.by_speed = {
            a: sorted(
                (b for b in builders if a in b.view.arches), key=lambda b: b.speed, reverse=True
            )
            for a in self.queues
        }
        self._fronts: dict[str, list[tuple[float, float, str]]] = {}
        self._fronts_at = -1.0
        self._outlooks: dict[str, matching.Outlook] = {}
        self._outlooks_at = -1.0
        self._deadline_at = (-1.0, 0.0)
        # Started tasks: (-estimated end of their path at the fastest hosts, task), and the
        # tasks done (popped lazily).
        self.running: list[tuple[float, int]] = []
        self.done: set[int] = set()
        # Live: each builder's open leases (leased at, estimated work, task), when each task
        # was first declined, and the running tasks by the rest of their path at their arch's
        # fastest pace (an overdue one's path counts from now: matching.batch_end).
        self.open: dict[str, list[tuple[float, float, int]]] = {b.view.host: [] for b in builders}
        self.declined_at: dict[int, float] = {}
        self.rests: list[tuple[float, int]] = []
        # Live, matching.keeps: the blocked tasks (a package's tasks before its last
        # dependency is built) of each arch, longest path first (store.coming walks the
        # same order), each lease's (leased at, estimated work, host), and per arch its
        # coming links (store.COMING_LINKS of the longest paths whose every dependency is
        # running or built) until a lease or an end among their dependencies changes them.
        self.by_package: dict[int, list[int]] = {}
        for tid, (i, _) in enumerate(self.tasks):
            self.by_package.setdefault(i, []).append(tid)
        self.released: set[int] = set()
        self.blocked: dict[str, list[int]] = {a: [] for a in self.queues}
        if weights is not None:
            for tid, (i, arch) in enumerate(self.tasks):
                if packages[i].deps:
                    self.blocked[arch].append(tid)
            for tids in self.blocked.values():
                tids.sort(key=lambda t: (-weights.rank[self.tasks[t][0]], t))
        self.lease_of: dict[int, tuple[float, float, str]] = {}
        self._coming: dict[str, list[matching.Coming]] = {}
        self._watched: dict[int, set[str]] = {}  # package -> arches whose coming links need it
        self._outlook_hosts: dict[str, list[matching.HostView]] = {}
        for b in builders:
            self._mark_free(b)

    def _mark_free(self, b: Builder) -> None:
        for a in b.view.arches:
            if a in self.free:
                if b.view.free_slots > 0:
                    self.free[a].add(b.view.host)
                else:
                    self.free[a].discard(b.view.host)

    def queue(self, tid: int) -> None:
        i, arch = self.tasks[tid]
        heapq.heappush(self.queues[arch], (self.keys[i], tid))

    def changed(self, package: int) -> None:
        """A task of `package` was leased, ended or released: the coming links that wait
        for it (or are its own) are read again."""
        for arch in self._watched.pop(package, ()):
            self._coming.pop(arch, None)

    def coming(self, arch: str) -> list[matching.Coming]:
        """store.coming in memory: of the arch's blocked tasks of the longest paths, those
        whose every dependency's tasks are leased or built, with when the last one is
        expected to end (matching.lease_frees_at of its lease: the dispatcher's inputs)."""
        found = self._coming.get(arch)
        if found is not None:
            return found
        w = self.weights
        assert w is not None
        tids = self.blocked[arch]
        if len(tids) > 64 and sum(1 for t in tids[:64] if self.tasks[t][0] in self.released) > 32:
            tids[:] = [t for t in tids if self.tasks[t][0] not in self.released]
        found, looked = [], 0
        for tid in tids:
            i, _ = self.tasks[tid]
            if i in self.released:
                continue
            looked += 1
            if looked > store.COMING_LINKS:
                break
            self._watched.setdefault(i, set()).add(arch)
            ready: float | None = self.now
            for d in self.packages[i].deps:
                self._watched.setdefault(d, set()).add(arch)
                for dep in self.by_package[d]:
                    if dep in self.done:
                        continue
                    lease = self.lease_of.get(dep)
                    if lease is None or ready is None:
                        ready = None
                        continue
                    at, work, host = lease
                    speed = self.builders[host].speed
                    expiry = lease_expiry(self.now, at, work, speed, w.lease)
                    ends = matching.lease_frees_at(self.now, at, work, speed, expiry)
                    ready = max(ready, ends)
            if ready is not None:
                found.append(matching.Coming(self.views[tid], ready))
        self._coming[arch] = found
        return found

    def keeping(self, host: matching.HostView, candidates: list[matching.TaskView]) -> int:
        """handlers.choose's kept slots: critical.Declining.keeping with this pull's outlooks
        and coming links."""
        w = self.weights
        assert w is not None
        if not candidates:
            return 0  # nothing to keep a slot from
        # critical.Declining.keeping's first test: no slot is kept from a heavy task.
        for t in candidates:
            if matching.heavy(host, t, self.outlook(t)):
                return 0
        paths = [t.path for t in candidates if t.path is not None]
        longest = max(paths, default=0.0)
        soon = self.now + w.keep
        deadline = self._deadline(w)

        def may_keep(link: matching.Coming) -> bool:
            # critical.Declining.keeping's first tests, without the outlook's slots (only
            # its times): most links fail them, and the outlook is built for the others.
            if link.ready_at > soon or (link.task.path or 0.0) <= longest:
                return False
            at = matching.Outlook(
                link.ready_at,
                deadline,
                w.fastest[link.task.arch],
                pad=w.pad,
                pro_rata=w.pro_rata,
                work_pad=w.work_pad,
                heavy_share=w.heavy_share,
            )
            return matching.pressing(host, link.task, at)

        coming = {a: self.coming(a) for a in host.arches if a in self.blocked}
        coming = {a: c for a, c in coming.items() if any(may_keep(k) for k in c)}
        if not coming:
            return 0
        outlooks = {t.arch: self.outlook(t) for t in candidates}
        for a in coming:
            outlooks[a] = self.outlook(coming[a][0].task)
        declining = critical.Declining(
            outlooks,
            {},
            w.decline_max,
            {a: self._outlook_hosts[a] for a in coming},
            coming=coming,
            keep_seconds=w.keep,
        )
        return declining.keeping(host, candidates)

    def candidates(self, host: matching.HostView, limit: int) -> list[matching.TaskView]:
        """The store's pull_candidates: queued tasks of the host's arches, best key first."""
        heads = [q for a, q in self.queues.items() if a in host.arches and q]
        out: list[tuple[tuple, int]] = []
        while heads and len(out) < limit:
            best = min(heads, key=lambda q: q[0])
            out.append(heapq.heappop(best))
            heads = [q for q in heads if q]
        return [self.views[tid] for _, tid in out]

    def schedule_host(self, name: str, depth: int = 0) -> list[tuple[matching.TaskView, str]]:
        """handlers.schedule_host, the store's part in memory; with critical-path weights,
        matching.declines leaves a critical task to a faster host that frees soon (and one
        free now pulls at once, as handlers.schedule_tasks would make it)."""
        b = self.builders[name]
        host = b.view
        if host.free_slots <= 0:
            return []
        live = self.weights is not None and self.weights.live
        # The real pull's candidate count (one owner's: handlers.pull_many's per_owner); the
        # policy before looked deeper with declines (it leaves some).
        extra = 4 if self.weights is None else self.weights.pull_extra if live else 32
        pulled = self.candidates(host, min(handlers.PULL_LIMIT, host.free_slots + extra))
        eligible = [t for t in pulled if matching.can_build(host, t)]
        declined: list[matching.TaskView] = []
        if self.weights is not None:
            if live:  # each pull reads the outlook anew (store.outlooks in its transaction)
                self._outlooks_at = -1.0
            kept = []
            ahead: dict[str, int] = {}  # per arch, critical tasks this pull left already
            for t in eligible:
                queued_ahead = ahead.get(t.arch, 0) if self.weights.slots else 0
                since = self.declined_at.get(t.task_id)
                if live and since is not None and self.now - since >= self.weights.decline_max:
                    kept.append(t)  # critical.decline_expired: any host takes it now
                elif matching.declines(
                    host,
                    t,
                    self.outlook(t),
                    queued_ahead,
                    # critical.Declining.leaves: a slot free only after the bound is no use.
                    None if not live else (since or self.now) + self.weights.decline_max,
                ):
                    declined.append(t)
                    ahead[t.arch] = ahead.get(t.arch, 0) + 1
                    self.declined_at.setdefault(t.task_id, self.now)
                else:
                    kept.append(t)
            eligible = kept
        slots = host.free_slots
        if live and self.weights is not None and self.weights.keep > 0:
            slots -= self.keeping(host, [t for t in pulled if matching.can_build(host, t)])
        first = matching.core_claims(host, eligible)[:slots]
        groups: dict[tuple[int, str], list[matching.TaskView]] = {}
        for task in eligible:
            if task not in first:
                groups.setdefault((task.klass, task.owner), []).append(task)
        chosen = first + fairshare.interleave(groups, {}, slots - len(first))
        picked = {t.task_id for t in chosen}
        for task in pulled:  # not leased: still queued
            if task.task_id not in picked:
                self.queue(task.task_id)
        host.free_slots -= len(chosen)
        self._mark_free(b)
        self.leased.update(picked)
        out = [(t, name) for t in chosen]
        if self.weights is not None:  # the lease is on record at once (store.lease_many)
            w = self.weights
            for t in chosen:
                i, arch = self.tasks[t.task_id]
                self.open[name].append((self.now, w.estimates[i], t.task_id))
                self.lease_of[t.task_id] = (self.now, w.estimates[i], name)
                self.changed(i)
                rest = (w.rank[i] - w.estimates[i]) / w.fastest[arch]
                ends = self.now + w.estimates[i] / b.speed + rest
                heapq.heappush(self.running, (-ends, t.task_id))
                heapq.heappush(self.rests, (-rest, t.task_id))
        self.declined += len(declined)
        # A declined task whose faster host is free now need not wait for that host's next
        # heartbeat: that host pulls at once (as handlers.schedule_tasks would make it, the
        # fastest free host first for a critical task: matching.preference).
        # (Live: no such push; that host pulls at its next heartbeat.)
        if declined and depth == 0 and not live:  # once: that host's own pull does not ask again
            free_now = [
                n
                for t in declined
                for s, f, n in self._front(t.arch)
                if s > host.speed and f <= self.now
            ]
            if free_now:
                fastest = max(free_now, key=lambda n: self.builders[n].speed)
                out += self.schedule_host(fastest, depth + 1)
        return out

    def _front(self, arch: str) -> list[tuple[float, float, str]]:
        """(speed, when it has a slot free, name) of the arch's builders that no faster one
        beats by being free sooner: all a faster-host question needs (a handful)."""
        if self._fronts_at != self.now:
            self._fronts, self._fronts_at = {}, self.now
        front = self._fronts.get(arch)
        if front is None:
            front = []
            soonest = math.inf
            for b in self.by_speed[arch]:
                free_at = (
                    self.now
                    if b.view.free_slots > 0
                    else min(self.ends[b.view.host], default=math.inf)  # leased this instant
                )
                if free_at < soonest:
                    front.append((b.speed, free_at, b.view.host))
                    soonest = free_at
                    if free_at <= self.now:
                        break  # none slower is free sooner than now
            self._fronts[arch] = front
        return front

    def _slots(self, arch: str, enough: int = 96, most: int = 96) -> list[tuple[float, float]]:
        """(speed, when it is free) of each slot of the arch's fastest builders: fastest first
        until `enough` slots are free now (a slower host's slots do not end a task sooner
        than those) or `most` builders are listed."""
        out: list[tuple[float, float]] = []
        free_now = 0
        for b in self.by_speed[arch][:most]:
            out += [(b.speed, self.now)] * b.view.free_slots
            out += [(b.speed, end) for end in self.ends[b.view.host]]
            free_now += b.view.free_slots
            if free_now >= enough:
                break
        return out

    def outlook(self, task: matching.TaskView) -> matching.Outlook:
        """The outlook of the task's arch now (declines() itself looks only at the hosts
        faster than the one pulling)."""
        w = self.weights
        assert w is not None
        if self._outlooks_at != self.now:
            self._outlooks, self._outlooks_at = {}, self.now
        found = self._outlooks.get(task.arch)
        if found is None and w.live:
            built = matching.build_outlook(
                self.now,
                [
                    matching.HostSlots(
                        b.speed,
                        b.view.free_slots,
                        [
                            matching.lease_frees_at(
                                self.now,
                                at,
                                work,
                                b.speed,
                                lease_expiry(self.now, at, work, b.speed, w.lease),
                                late_pad=w.late_pad,
                            )
                            for at, work, _ in self.open[b.view.host]
                        ],
                    )
                    for b in self.by_speed[task.arch][: handlers.OUTLOOK_HOSTS]
                ],
                self._deadline(w),
                pad=w.pad,
                pro_rata=w.pro_rata,
                work_pad=w.work_pad,
                heavy_share=w.heavy_share,
            )
            assert built is not None
            found, owners = built
            self._outlooks[task.arch] = found
            fastest = self.by_speed[task.arch]
            self._outlook_hosts[task.arch] = [fastest[k].view for k in owners]
        if found is None:
            found = matching.Outlook(
                now=self.now,
                deadline=self._deadline(w),
                fastest=w.fastest[task.arch],
                faster=self._slots(task.arch)
                if w.slots
                else [(s, f) for s, f, _ in self._front(task.arch)],
                pad=w.pad,
                pro_rata=w.pro_rata,
                work_pad=w.work_pad,
                heavy_share=w.heavy_share,
            )
            self._outlooks[task.arch] = found
        return found

    def _deadline(self, w: Weights) -> float:
        """The estimated lower bound, or once behind it, now plus the longest remaining path
        of a queued task at the fastest hosts (the batch cannot end sooner)."""
        if self._deadline_at[0] == self.now and not w.live:
            return self._deadline_at[1]
        if w.live:
            # matching.batch_end over every arch's queue head (the longest path: the store's
            # order) and every running task (the live one reads the BATCH_END_RUNNING of the
            # longest paths, among which the latest end almost always is).
            queued = []
            for arch, queue in self.queues.items():
                if queue:
                    i, _ = self.tasks[queue[0][1]]
                    queued.append((w.rank[i], w.fastest[arch]))
            for heap in (self.running, self.rests):
                while heap and heap[0][1] in self.done:
                    heapq.heappop(heap)
            # max over running of max(end, now) + rest: the latest end with its rest, or now
            # plus the longest rest (an overdue task's).
            running = [(-self.running[0][0], 0.0, 1.0)] if self.running else []
            if self.rests:
                running.append((self.now, -self.rests[0][0], 1.0))
            return matching.batch_end(self.now, queued, running)
        behind = 0.0
        for arch, queue in self.queues.items():
            if queue:
                i, _ = self.tasks[queue[0][1]]
                behind = max(behind, self.now + w.rank[i] / w.fastest[arch])
        if w.slots:
            # The estimated lower bound drops out: the longest of many noisy paths overstates
            # it (6.1 h against 4.6 h on the full set, seed 1), leaving real critical tasks
            # slack. Instead the batch's end as now expected: the longest remaining path of a
            # queued task, or of a running one after its estimated end.
            while self.running and self.running[0][1] in self.done:
                heapq.heappop(self.running)
            if self.running:
                behind = max(behind, -self.running[0][0])
            deadline = behind
        else:
            deadline = max(w.horizon, behind)
        self._deadline_at = (self.now, deadline)
        return deadline

    def schedule_tasks(
        self, tids: list[int], depth: int = 0
    ) -> list[tuple[matching.TaskView, str]]:
        """handlers.schedule_tasks: each new task's preferred free hosts (matching.pick_host:
        QoS, and speed first for a critical task) pull, until it is leased."""
        out: list[tuple[matching.TaskView, str]] = []
        tried: set[str] = set()
        for tid in tids:
            if tid in self.leased:
                continue
            task = self.views[tid]
            for _ in range(16):  # HOSTS_TRIED
                hosts = [self.builders[h].view for h in self.free[task.arch] if h not in tried]
                host = matching.pick_host(task, hosts)
                if host is None:
                    break
                tried.add(host.host)
                out += self.schedule_host(host.host)
                if tid in self.leased:
                    break
        return out

    def run(self) -> Result:
        packages = self.packages
        waiting = [len(p.deps) for p in packages]
        tasks_left = [len(p.arches) for p in packages]
        by_package: dict[int, list[int]] = {}
        for tid, (i, _) in enumerate(self.tasks):
            by_package.setdefault(i, []).append(tid)
        first_start: dict[int, float] = {}
        events: list[tuple[float, int, str]] = []  # (end, task, host)
        busy = 0.0
        now = 0.0
        built: list[tuple[int, float, float]] = []
        runs: dict[int, tuple[str, float, float]] = {}

        def start(leases: list[tuple[matching.TaskView, str]]) -> None:
            nonlocal busy
            for task, host in leases:
                i, _ = self.tasks[task.task_id]
                duration = packages[i].work / self.builders[host].speed
                busy += duration
                runs[task.task_id] = (host, now, now + duration)
                first_start.setdefault(i, now)
                self.ends[host].append(now + duration)
                heapq.heappush(events, (now + duration, task.task_id, host))

        def release(i: int) -> list[int]:
            new = by_package[i]
            self.released.add(i)
            self.changed(i)
            for tid in new:
                self.queue(tid)
            return new

        ready = [tid for i, w in enumerate(waiting) if w == 0 for tid in release(i)]
        start(self.schedule_tasks(ready))
        live = self.weights is not None and self.weights.live
        tick = self.weights.heartbeat if live and self.weights is not None else math.inf
        while events:
            if tick < events[0][0]:
                # A heartbeat: every host with a free slot pulls (all at once here).
                now = self.now = tick
                tick += self.weights.heartbeat if self.weights is not None else math.inf
                if any(self.queues.values()):
                    for name in sorted(set().union(*self.free.values())):
                        start(self.schedule_host(name))
                continue
            now, tid, host = heapq.heappop(events)
            self.now = now
            self.ends[host].remove(now)
            if self.weights is not None:
                self.open[host] = [o for o in self.open[host] if o[2] != tid]
            self.done.add(tid)
            i, _ = self.tasks[tid]
            self.changed(i)
            new: list[int] = []
            tasks_left[i] -= 1
            if tasks_left[i] == 0:  # the build is stored: its dependents' links may start
                built.append((i, first_start[i], now))
                for j in packages[i].dependents:
                    waiting[j] -= 1
                    if waiting[j] == 0:
                        new += release(j)
            b = self.builders[host]
            b.view.free_slots += 1
            self._mark_free(b)
            leases = self.schedule_host(host)  # its heartbeat with a free slot
            leases += self.schedule_tasks(new)
            start(leases)
        assert len(built) == len(packages), "packages left unbuilt"
        slots = sum(b.slots for b in self.builders.values())
        return Result(now, busy, slots * now, len(self.leased), built, runs, self.declined)


@dataclasses.dataclass
class Ordering:
    keys: list[tuple]  # per package: (priority, finer key...), higher first
    weights: Weights | None = None  # critical-path weights on the tasks (TaskView.work, path)


def orderings(
    packages: list[Package],
    builders: list[Builder],
    rng: random.Random,
    noise: float,
    pad: float = PAD,
    work_pad: float | None = WORK_PAD,
    heavy_share: float | None = HEAVY_SHARE,
    decline_max: float = DECLINE_MAX,
    pull_extra: int = 4,
    late_pad: float = 1.0,
    keep: float = KEEP,
) -> dict[str, Ordering]:
    """The orderings compared, from durations as the dispatcher would estimate them (a
    package's previous build times, off by a log-normal error). The first is the default."""
    estimates = [p.work * math.exp(rng.gauss(0, noise)) for p in packages]
    path = remaining_path(packages, estimates)
    longest = max(path, default=0.0)
    # The store's order (store.pull_candidates): priority (a mass rebuild's, one for all),
    # then the longest path, then the id (the heap's tie-break: the task id).
    exact = [(MASS_PRIORITY, r) for r in path]
    horizon = max(lower_bounds(packages, builders, estimates).values())
    fastest = fastest_speeds(builders)
    weights = Weights(
        estimates,
        path,
        fastest,
        horizon,
        pad=pad,
        pro_rata=True,
        slots=True,
        work_pad=work_pad,
        heavy_share=heavy_share or None,
    )
    live = dataclasses.replace(
        weights,
        live=True,
        decline_max=decline_max,
        pull_extra=pull_extra,
        late_pad=late_pad,
        keep=keep,
    )
    before = Weights(estimates, path, fastest, horizon, pad=pad, pro_rata=True, slots=True)
    greedy = Weights(estimates, path, fastest, horizon)
    return {
        "policy": Ordering(exact, live),
        "policy-sim": Ordering(exact, weights),
        "policy-uniform": Ordering(exact, before),
        "policy-greedy": Ordering(exact, greedy),
        "fifo": Ordering([(MASS_PRIORITY,) for _ in packages]),
        "cp-priority": Ordering([(to_priority(r, longest),) for r in path]),
        "cp-exact": Ordering(exact),
    }


def simulate(packages: list[Package], builders: list[Builder], ordering: Ordering) -> Result:
    # The store orders by priority DESC, then id: as a key sorting ascending.
    store_keys = [tuple(-k for k in key) for key in ordering.keys]
    priorities = [key[0] for key in ordering.keys]
    return Simulation(packages, builders, priorities, store_keys, ordering.weights).run()


def explain(
    packages: list[Package],
    builders: list[Builder],
    result: Result,
    estimates: Sequence[float] | None = None,
    bucket: float = 30.0,
) -> list[str]:
    """Where the makespan goes: the chain that ends last (each link's release, wait, host
    speed against the fastest of its arch, estimate against its real work), and per machine
    arch the share of slots busy and the tasks queued, per `bucket` minutes."""
    fastest = fastest_speeds(builders)
    speed = {b.view.host: b.speed for b in builders}
    machine = {b.view.host: b.view.host.rsplit("-", 1)[0] for b in builders}
    tasks = [(i, a) for i, p in enumerate(packages) for a in p.arches]
    end = {i: e for i, _, e in result.built_order}
    released = {i: max((end[d] for d in p.deps), default=0.0) for i, p in enumerate(packages)}
    by_package: dict[int, list[int]] = {}
    for tid, (i, _) in enumerate(tasks):
        by_package.setdefault(i, []).append(tid)
    # The chain: from the package that ends last, back through the dependency that ended last.
    chain = [max(end, key=lambda i: end[i])]
    while packages[chain[-1]].deps:
        chain.append(max(packages[chain[-1]].deps, key=lambda d: end[d]))
    chain.reverse()
    lines = [f"the chain that ends last ({len(chain)} links), times in minutes:"]
    lines.append(
        f"  {'package':24} {'work':>6} {'est':>6} {'released':>8} {'wait':>6} {'speed/best':>10}"
        f" {'ran':>6} {'ideal':>6} {'end':>7}"
    )
    waited = slow = 0.0
    for i in chain:
        p = packages[i]
        # The task that ended the package decides it.
        tid = max(by_package[i], key=lambda t: result.runs[t][2])
        host, start, stop = result.runs[tid]
        arch = tasks[tid][1]
        ideal = p.work / fastest[arch]
        waited += start - released[i]
        slow += (stop - start) - ideal
        est = f"{estimates[i]:6.0f}" if estimates is not None else f"{'-':>6}"
        lines.append(
            f"  {p.name[:24]:24} {p.work:6.0f} {est} {released[i]:8.0f} {start - released[i]:6.0f}"
            f" {speed[host]:4.2f}/{fastest[arch]:4.2f}:{arch[:3]} {stop - start:6.0f}"
            f" {ideal:6.0f} {stop:7.0f}"
        )
    lines.append(
        f"  on this chain: {waited:.0f} min waiting for a slot, {slow:.0f} min lost to slower"
        f" hosts than the fastest, of a {result.makespan:.0f} min makespan"
    )
    # Utilisation per machine arch over time, and the queue per task arch.
    n = max(1, math.ceil(result.makespan / bucket))
    slots: dict[str, int] = {}
    for b in builders:
        slots[machine[b.view.host]] = slots.get(machine[b.view.host], 0) + b.slots
    busy = {a: [0.0] * n for a in slots}
    for host, start, stop in result.runs.values():
        row = busy[machine[host]]
        k = int(start // bucket)
        while k < n and k * bucket < stop:
            row[k] += min(stop, (k + 1) * bucket) - max(start, k * bucket)
            k += 1
    queued = {a: [0] * n for a in (*TAG_ARCHES, "noarch")}
    for tid, (i, a) in enumerate(tasks):
        start = result.runs[tid][1]
        for k in range(n):
            if released[i] <= k * bucket < start:
                queued[a][k] += 1
    lines.append(f"busy share of each machine arch's slots / tasks queued, per {bucket:.0f} min:")
    header = " ".join(f"{a:>16}" for a in slots)
    lines.append(f"  {'from h':>6} {header} {'noarch q':>8}")
    for k in range(n):
        cells = " ".join(
            f"{busy[a][k] / (slots[a] * bucket):6.0%} q{queued[a][k]:<8}" for a in slots
        )
        lines.append(f"  {k * bucket / 60:6.1f} {cells} {queued['noarch'][k]:8}")
    return lines


def read_rows(path: Path, sample: int | None, rng: random.Random) -> tuple[list[dict], set[str]]:
    """The rows (a random `sample` of them if given) and every name the whole file provides."""
    with gzip.open(path, "rt") as f:
        rows = [json.loads(line) for line in f]
    universe = {r["name"] for r in rows} | {s for r in rows for s in r.get("subpackages", [])}
    if sample is not None and sample < len(rows):
        rows = rng.sample(rows, sample)
    return rows, universe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--packages", type=int, default=None, help="subsample N source packages")
    parser.add_argument("--builders", type=int, default=500)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--estimate-noise",
        type=float,
        default=0.3,
        help="sigma of the log-normal error of the durations the priority is computed from",
    )
    parser.add_argument(
        "--cycles",
        choices=("dfs", "scc"),
        default="scc",
        help="break dependency cycles by dropping every edge inside a strongly connected"
        " component (default: a loop's members build against the repository's builds), or"
        " only DFS back edges (an arbitrary order inside each loop)",
    )
    parser.add_argument(
        "--orderings",
        default="policy,policy-sim,policy-uniform,policy-greedy,fifo,cp-priority,cp-exact",
        help="comma-separated orderings to run (policy is the real one)",
    )
    parser.add_argument(
        "--pad",
        type=float,
        default=PAD,
        help="the policy's matching.Outlook.pad (estimated paths count as this much longer)",
    )
    parser.add_argument(
        "--work-pad",
        type=float,
        default=WORK_PAD,
        help="the policy's matching.Outlook.work_pad (a task's own work counts this much longer)",
    )
    parser.add_argument(
        "--heavy-share",
        type=float,
        default=HEAVY_SHARE,
        help="the policy's matching.Outlook.heavy_share (0: off)",
    )
    parser.add_argument(
        "--decline-max",
        type=float,
        default=DECLINE_MAX,
        help="the policy's decline bound, minutes ([dispatcher] decline_max_seconds / 60)",
    )
    parser.add_argument(
        "--pull-extra",
        type=int,
        default=4,
        help="the policy's candidates beyond the free slots a pull reads (the live one's: 4)",
    )
    parser.add_argument(
        "--late-pad",
        type=float,
        default=1.0,
        help="the policy's matching.lease_frees_at late_pad (a late lease frees by this times"
        " its estimate, else at its expiry)",
    )
    parser.add_argument(
        "--keep",
        type=float,
        default=KEEP,
        help="the policy's matching.keeps window, minutes ([dispatcher] keep_seconds / 60;"
        " 0: no slot kept for a coming chain link)",
    )
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument(
        "--explain",
        action="store_true",
        help="after each ordering, the chain that ends last and each arch's load over time",
    )
    args = parser.parse_args()
    if args.builders < len(HOST_MIX) or (args.packages is not None and args.packages < 1):
        parser.error(f"--builders must be at least {len(HOST_MIX)}, --packages positive")
    rng = random.Random(args.seed)
    t0 = time.monotonic()
    rows, universe = read_rows(args.data, args.packages, rng)
    workload = load_workload(rows, rng, args.cycles, universe)
    packages = workload.packages
    builders = make_builders(args.builders, rng)
    bounds = lower_bounds(packages, builders)
    lb = max(bounds["critical_path"], bounds["work_capacity"])
    lb_arch = max(lb, bounds["per_arch"])
    n_tasks = sum(len(p.arches) for p in packages)
    print(
        f"{len(packages)} packages ({n_tasks} tasks) of {workload.stats['spec_rows']} spec rows;"
        f" {len(builders)} builders, {sum(b.slots for b in builders)} slots"
    )
    print("workload:", ", ".join(f"{k} {v}" for k, v in workload.stats.items()))
    for a, _, _ in HOST_MIX:
        hs = [b for b in builders if a in b.view.arches]
        cap = sum(b.slots * b.speed for b in hs)
        work = sum(p.work for p in packages if a in p.arches)
        print(f"  {a:8} {len(hs):4} builders capacity {cap:7.1f}  work {work / 60:8.1f} h")
    noarch = sum(p.work for p in packages if p.arches == ("noarch",))
    print(f"  noarch   work {noarch / 60:8.1f} h (any builder)")
    print(
        f"lower bound: critical path {bounds['critical_path'] / 60:.2f} h,"
        f" work/capacity {bounds['work_capacity'] / 60:.2f} h -> {lb / 60:.2f} h;"
        f" per-arch {bounds['per_arch'] / 60:.2f} h -> {lb_arch / 60:.2f} h"
    )
    keys = orderings(
        packages,
        builders,
        rng,
        args.estimate_noise,
        args.pad,
        args.work_pad,
        args.heavy_share,
        args.decline_max,
        args.pull_extra,
        args.late_pad,
        args.keep,
    )
    print(
        f"{'ordering':12} {'makespan h':>10} {'/ LB':>6} {'/ arch LB':>9} {'util':>6}"
        f" {'declined':>8} {'sim s':>6}"
    )
    for name in args.orderings.split(","):
        if name not in keys:
            parser.error(f"unknown ordering {name!r}: one of {', '.join(keys)}")
        key = keys[name]
        t = time.monotonic()
        result = simulate(packages, builders, key)
        print(
            f"{name:12} {result.makespan / 60:10.2f} {result.makespan / lb:6.3f}"
            f" {result.makespan / lb_arch:9.3f} {result.busy / result.slot_minutes:6.1%}"
            f" {result.declined:8} {time.monotonic() - t:6.1f}"
        )
        if args.explain:
            estimates = None if key.weights is None else key.weights.estimates
            print("\n".join(explain(packages, builders, result, estimates)))
    print(f"total {time.monotonic() - t0:.1f} s")


if __name__ == "__main__":
    main()
