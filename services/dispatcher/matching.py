"""Which host may build which task: pure policy, no I/O.

Rules: the host is online with a free slot; it builds the task's architecture (HostView.arches
is what it builds, arches.buildable of what it advertised: noarch anywhere, an advertised arch
Koji calls native to its primary one); it offers the requested release, if one was requested; it is
not quarantined; a task that failed on a host goes neither to that host nor to any host of the
same owner (its failure is being confirmed: see failures.py); and a replica or tie-break the
verifier asked for (task.replicate) goes only to a host of at least its minimum trust that is
none of its excluded hosts and of none of its excluded owners.

Any host may build an official (non-scratch) build: a volunteer's result counts only after the
verifier's acceptance policy found independent agreement. Still, an official build's own lease
(not a replica) goes to a free core host when there is one: its result is accepted at once.

Free slots are the dispatcher's own count (free_slots()), never a heartbeat's word alone.

While the farm-wide throttle is engaged (the verifier saw too many bad results: Throttle),
only core hosts get new leases; leases already given run on.

Among eligible hosts (preference()): a core host first for an official build's own lease;
then, for a task whose critical-path weight is known (TaskView.path: a mass rebuild's or a
chain's), the fastest host by the registry's speed factor; then the registry's QoS score;
then the most free slots. A host the registry has not rated counts as neutral (NEUTRAL_QOS,
NEUTRAL_SPEED). Owner diversity for replicas is a constraint (exclude_owners), not a preference.

A slower host declines a critical task when a faster host will be free soon enough to end it
earlier (declines()): the task's path, not the host's idle slot, decides the batch's end.
Whether it is critical (critical_path_ends) may pad the estimates for their error and share
the slack along the path (Outlook.pad, pro_rata); a pull's declined tasks each count on a
different faster slot (declines' `ahead`), so slow hosts do not all wait for one fast slot.
The task's own work may count at an upper quantile of its estimate (Outlook.work_pad: a lease
commits its error), and a heavy task may be left to a faster host even with slack
(Outlook.heavy_share: the deadline is an estimate too). A fast host may keep a free slot for
a critical chain link about to be queued (keeps()): in a saturated arch, no fast slot would
be free for it otherwise.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Iterable, Sequence

from services.registry.trust import Trust, at_least

# A host the registry has not rated: midway (a new host scores about 0.48), at the farm's pace.
NEUTRAL_QOS, NEUTRAL_SPEED = 0.5, 1.0


@dataclasses.dataclass
class HostView:
    host: str
    trust: str
    arches: frozenset[str]  # what it builds (arches.buildable), not merely what it advertised
    releases: frozenset[str]
    free_slots: int
    owner: str = ""
    # The registry's view (host.status qos_score, speed_factor): 0..1, 1 best; and its pace,
    # 1 the farm's, 2 twice as fast. Unknown: neutral.
    qos_score: float = NEUTRAL_QOS
    speed: float = NEUTRAL_SPEED


@dataclasses.dataclass(frozen=True)
class TaskView:
    task_id: int
    arch: str
    release: str | None
    scratch: bool
    # Hosts that reported the task failed or whose result was refused, and the owners of
    # those that failed it: not asked again.
    failed_hosts: frozenset[str] = frozenset()
    failed_owners: frozenset[str] = frozenset()
    # What the next lease is for ("build", "replica", "tiebreak") and who may take it
    # (task.replicate): at least this trust (None: any), none of these hosts or owners.
    purpose: str = "build"
    min_trust: str | None = None
    exclude_hosts: frozenset[str] = frozenset()
    exclude_owners: frozenset[str] = frozenset()
    # Whose build it is and its priority class (fairshare.py): a pull shares by these.
    owner: str = ""
    klass: int = 1
    # Critical-path weight, in seconds at the farm's pace (speed 1): the task's own estimated
    # build time and the longest dependency path from it to the end of its batch, itself
    # included. None: not known (the task is not treated as critical).
    work: float | None = None
    path: float | None = None

    @property
    def prefers_core(self) -> bool:
        """An official build's own lease: a core host's result is accepted without replica."""
        return not self.scratch and self.purpose == "build"


@dataclasses.dataclass(frozen=True)
class Throttle:
    """The farm-wide throttle as the verifier last announced it (throttle.engaged/released)."""

    engaged: bool = False
    bad_rate: float = 0.0
    results: int | None = None  # how many results the rate is over (None: not said)

    def blocks(self, host: HostView) -> bool:
        return self.engaged and host.trust != Trust.CORE

    @property
    def waiting(self) -> str:
        over = f" over the last {self.results} results" if self.results is not None else ""
        return f"throttled (bad-result rate {self.bad_rate:.0%}{over}): only core hosts build"


OPEN = Throttle()


def free_slots(advertised_free: int, running: int, max_slots: int, open_leases: int) -> int:
    """How many more leases a host may take now.

    The host's own capacity (free + running, by its last heartbeat) is capped by what it
    enrolled (max_slots), and the dispatcher's open leases on it are taken off that: a
    heartbeat sent before a lease arrived, or one that lies, never gives back a slot the
    dispatcher still counts as leased. The host may still say it is full (advertised_free),
    e.g. while it stops.
    """
    capacity = min(advertised_free + running, max_slots)
    return max(0, min(advertised_free, capacity - open_leases))


def trusted_enough(trust: str, minimum: str | None) -> bool:
    """Never a quarantined host (nor one of a trust level unknown here); else >= minimum."""
    try:
        level = Trust(trust)
    except ValueError:
        return False
    if level == Trust.QUARANTINED:
        return False
    return minimum is None or at_least(level, Trust(minimum))


def can_build(host: HostView, task: TaskView, throttle: Throttle = OPEN) -> bool:
    return host.free_slots > 0 and may_build(host, task, throttle)


def may_build(host: HostView, task: TaskView, throttle: Throttle = OPEN) -> bool:
    """can_build once the host has a slot free."""
    return (
        not throttle.blocks(host)
        and task.arch in host.arches
        and (task.release is None or task.release in host.releases)
        and trusted_enough(host.trust, task.min_trust)
        and host.host not in task.failed_hosts
        and host.owner not in task.failed_owners
        and host.host not in task.exclude_hosts
        and host.owner not in task.exclude_owners
    )


def preference(task: TaskView, host: HostView) -> tuple[bool, float, float, int, int]:
    """How much `task` wants `host`, the larger the better: a core host for an official
    build's own lease; the faster host for a task with a critical-path weight (it bounds its
    batch's end); the better QoS score; the most free slots (spreading load); a hash of task
    and host (ties spread)."""
    return (
        task.prefers_core and host.trust == Trust.CORE,
        host.speed if task.path is not None else 0.0,
        host.qos_score,
        host.free_slots,
        zlib.crc32(f"{task.task_id}:{host.host}".encode()),
    )


def pick_host(task: TaskView, hosts: Iterable[HostView]) -> HostView | None:
    """The eligible host `task` prefers (preference())."""
    eligible = [h for h in hosts if can_build(h, task)]
    if not eligible:
        return None
    return max(eligible, key=lambda h: preference(task, h))


# What the live dispatcher and the mass-rebuild simulation both judge criticality with: a
# path counts as this many times its estimate (the estimates' error: the simulation's
# log-normal sigma 0.3 gave the best makespan at 1.15 on both seeds tried), and the slack is
# shared along the path (pro rata), so one link never spends the links' after it.
ESTIMATE_PAD = 1.15


@dataclasses.dataclass(frozen=True)
class Outlook:
    """What the dispatcher expects of the hosts of a task's arch, for declines()."""

    now: float
    # The batch's estimated end at best (its lower bound, or later once behind it): a task
    # whose path still ends by then may go to any host.
    deadline: float
    fastest: float  # the speed of the fastest host of the arch
    # (speed, when it has a slot free: now or its earliest lease's estimated end) of hosts
    # of the arch faster than the one pulling.
    faster: Sequence[tuple[float, float]] = ()
    # Estimated durations are off (a log-normal error): a path counts as `pad` times its
    # estimate when judging whether it is critical (1: taken at its word).
    pad: float = 1.0
    # Slack shared along the path (critical_path_ends): each link may use only its share.
    pro_rata: bool = False
    # The task's own work counts this many times its estimate (None: `pad`, as the rest of
    # its path). Its error is what a lease commits: once a giant runs on a slow host, an
    # underestimate there ends the batch late, while the links after it are judged again
    # when they are ready (with what is known then). So the own work takes an upper
    # quantile of its error, the rest of the path only `pad`.
    work_pad: float | None = None
    # A heavy task (its padded work here at least this share of the time left to the
    # deadline) is left to a faster host as a critical one is, even with slack (None:
    # never). The deadline is itself an estimate, and the longest of many noisy paths
    # overstates it, so a giant's slack may be none; while the queue is long, the slower
    # host takes the next task instead, which loses little there.
    heavy_share: float | None = None


@dataclasses.dataclass(frozen=True)
class HostSlots:
    """One of an arch's fastest online hosts as an outlook sees it: its speed, its slots free
    now, and when each of its open leases is expected to free its slot (lease_frees_at)."""

    speed: float
    spare: int
    frees_at: Sequence[float] = ()


def lease_frees_at(
    now: float,
    leased_at: float,
    work: float | None,
    speed: float,
    expires_at: float,
    finished: bool = False,
    late_pad: float = 1.0,
) -> float:
    """When an open lease is expected to free its host's slot: now if its host reported the
    build done (the verdict frees it); else its estimated end (leased_at + the task's work at
    the host's speed when leased), capped by the lease's expiry; an overdue estimate, or an
    unknown work, says nothing of when the build ends, so its expiry does (its host's
    statuses keep renewing it while the build runs: store.renew_leases)."""
    if finished:
        return now
    if work is None or speed <= 0:
        return expires_at
    ends = leased_at + work / speed
    if ends <= now:  # late, but within the estimates' error (late_pad times the estimate)?
        ends = leased_at + late_pad * work / speed
    return min(ends, expires_at) if ends > now else expires_at


def batch_end(
    now: float,
    queued: Iterable[tuple[float, float]],
    running: Iterable[tuple[float, float, float]] = (),
) -> float:
    """The batch's end as now expected (an Outlook's deadline): the latest of now plus a queued
    task's path at its arch's fastest pace (`queued`: (path, fastest speed)), and a running
    task's estimated end (not before now) plus the rest of its path after it at its arch's
    fastest pace (`running`: (frees_at, rest of the path, fastest speed)). Over every arch: a
    task has slack if its path ends before the whole batch does, whichever arch ends it."""
    end = now
    for path, fastest in queued:
        if fastest > 0:
            end = max(end, now + path / fastest)
    for frees_at, rest, fastest in running:
        if fastest > 0:
            end = max(end, max(frees_at, now) + rest / fastest)
    return end


def build_outlook(
    now: float,
    hosts: Sequence[HostSlots],
    deadline: float,
    *,
    pad: float = ESTIMATE_PAD,
    pro_rata: bool = True,
    work_pad: float | None = None,
    heavy_share: float | None = None,
) -> tuple[Outlook, list[int]] | None:
    """The outlook of an arch from its fastest online hosts (`hosts`, fastest first): one
    `faster` entry per slot (free now, or when each open lease frees it, soonest first), so
    a pull that leaves several critical tasks counts each on its own slot (declines'
    `ahead`); and beside it, the index in `hosts` of each entry's host. None without a host
    of positive speed. What the live dispatcher (store.outlooks) and the mass-rebuild
    simulation both build their outlooks with."""
    fastest = max((h.speed for h in hosts), default=0.0)
    if fastest <= 0:
        return None
    faster: list[tuple[float, float]] = []
    owners: list[int] = []
    for k, host in enumerate(hosts):
        for free_at in [now] * max(0, host.spare) + sorted(host.frees_at):
            faster.append((host.speed, free_at))
            owners.append(k)
    outlook = Outlook(
        now=now,
        deadline=deadline,
        fastest=fastest,
        faster=faster,
        pad=pad,
        pro_rata=pro_rata,
        work_pad=work_pad,
        heavy_share=heavy_share,
    )
    return outlook, owners


def padded_work(task: TaskView, outlook: Outlook) -> float:
    """The task's own estimated work as the rules weigh it: times outlook.work_pad (or pad)."""
    assert task.work is not None
    return (outlook.pad if outlook.work_pad is None else outlook.work_pad) * task.work


def critical_path_ends(host: HostView, task: TaskView, outlook: Outlook) -> float:
    """When `task`'s path would end if `host` built it now (estimates padded by outlook.pad).

    Greedy (the default): this link here, the rest of the path at the arch's fastest pace.
    Each link then sees the whole slack as its own, and the first one to be built on a slow
    host uses it all up, leaving none to the links after it (which are not faster either).
    Pro rata (outlook.pro_rata): the whole path at this host's pace, so a link may take a
    slower host only in proportion to its share of the path."""
    assert task.path is not None and task.work is not None
    work = padded_work(task, outlook)
    path = work + outlook.pad * max(0.0, task.path - task.work)
    if outlook.pro_rata:
        return outlook.now + path / host.speed
    return outlook.now + work / host.speed + max(0.0, path - work) / outlook.fastest


def heavy(host: HostView, task: TaskView, outlook: Outlook) -> bool:
    """Whether `task`'s padded work on `host` is at least outlook.heavy_share of the time
    left to the deadline (never without a share)."""
    if outlook.heavy_share is None:
        return False
    left = max(0.0, outlook.deadline - outlook.now)
    return padded_work(task, outlook) / host.speed >= outlook.heavy_share * left


def pressing(host: HostView, task: TaskView, outlook: Outlook) -> bool:
    """Whether `task` on `host` is critical (its path would end after the deadline:
    critical_path_ends) or heavy there (heavy()): what declines() and keeps() act on."""
    assert task.path is not None and task.work is not None
    critical = critical_path_ends(host, task, outlook) > outlook.deadline
    return critical or heavy(host, task, outlook)


def declines(
    host: HostView, task: TaskView, outlook: Outlook, ahead: int = 0, until: float | None = None
) -> bool:
    """Whether `host` leaves `task` to a faster host: the task is critical (its path would
    end after the deadline: critical_path_ends) or heavy here (heavy()), and a faster host,
    once free, would end it earlier than this one. A task without a critical-path weight, or
    a light one with slack, is never declined: an idle slot helps only if the path allows it.

    `ahead`: how many critical tasks this pull already left to faster hosts (those before
    this one in priority order). They take the faster slots that free soonest, so this task
    counts only on the ones after them: several slow hosts, or one pull's several tasks, do
    not all wait for the same fast slot while their own slots idle.

    `until`: when the task's decline bound runs out (critical.decline_expired): a faster slot
    that frees only after it is not waited for, as the task would go to whichever host pulls
    then, however slow, having waited in vain."""
    if task.path is None or task.work is None or host.speed <= 0:
        return False
    if not pressing(host, task, outlook):
        return False
    here = outlook.now + task.work / host.speed
    slots = sorted(
        (max(free_at, outlook.now), speed)
        for speed, free_at in outlook.faster
        if speed > host.speed and (until is None or free_at < until)
    )
    return any(free_at + task.work / speed < here for free_at, speed in slots[ahead:])


def claims(host: HostView, task: TaskView) -> bool:
    """Whether `host` takes `task` before any other when it pulls work: a core host, an
    official build's own lease. A core host's result is accepted alone, while a volunteer's
    official result needs a second build on another owner's host, so every official build a
    freed core slot takes saves a replica (bench/trust_simulation.py: extra builds 8% with
    this order, over 10% first come, first served)."""
    return host.trust == Trust.CORE and task.prefers_core


@dataclasses.dataclass(frozen=True)
class Coming:
    """A blocked chain link's task whose every predecessor is running or done: when the last
    of them is expected to end (lease_frees_at), it is queued."""

    task: TaskView
    ready_at: float


def keeps(
    host: HostView,
    coming: Coming,
    outlook: Outlook,
    ahead: int = 0,
    window: float = 0.0,
    until: float | None = None,
) -> bool:
    """Whether `host` leaves one of its free slots idle for `coming` rather than fill it now.

    When a critical link is queued, the fastest slots of a saturated arch are all busy with
    whatever was queued before it, and none frees within the decline bound: the link goes
    to a slower host, and its path (the batch's end) with it. So a host keeps a slot for a
    link that (1) is ready within `window` seconds, (2) will be critical or heavy here then
    (critical_path_ends, heavy), (3) this host would take then (it would not leave it to a
    faster slot: declines, `until` its decline bound), and (4) finds no other slot as fast as
    this one free by then: `outlook.faster` lists the slots that are not this host's free
    ones, and `ahead` coming links before this one take the soonest of them. The slot idles
    at most `window`; a host slower than one that is free by then keeps nothing."""
    task = coming.task
    if task.path is None or task.work is None or host.speed <= 0:
        return False
    if not outlook.now <= coming.ready_at <= outlook.now + window:
        return False
    then = dataclasses.replace(outlook, now=coming.ready_at)
    if not pressing(host, task, then):
        return False
    others = sum(
        1 for speed, free_at in outlook.faster if speed >= host.speed and free_at <= coming.ready_at
    )
    return others <= ahead and not declines(host, task, then, ahead, until)


def core_claims(host: HostView, tasks: Iterable[TaskView]) -> list[TaskView]:
    """The tasks `host` claims (see claims), in the order given."""
    if host.trust != Trust.CORE:
        return []  # nothing to walk
    return [t for t in tasks if claims(host, t)]


def assign(tasks: Iterable[TaskView], hosts: list[HostView]) -> list[tuple[TaskView, HostView]]:
    """Greedy assignment in the given (priority) order; each lease uses up one slot."""
    leases = []
    for task in tasks:
        host = pick_host(task, hosts)
        if host is not None:
            host.free_slots -= 1
            leases.append((task, host))
    return leases


def why_waiting(task: TaskView, hosts: Iterable[HostView], throttle: Throttle = OPEN) -> str:
    """Why `task` is not running now, given the online hosts that build its arch (with their
    free slots after the scheduling pass that left it unassigned).

    The first rule that rules out every host is the reason: arch, release, trust (a replica's
    minimum, or quarantine), the hosts that built or failed it, their owners, the throttle,
    then capacity. A task some free eligible host could take waits its turn (priority class,
    fair share).
    """
    what = "host" if task.arch == "noarch" else f"{task.arch} host"
    left = [h for h in hosts if task.arch in h.arches]
    if not left:
        return f"no online {what}"
    left = [h for h in left if task.release is None or task.release in h.releases]
    if not left:
        return f"no online {what} offers release {task.release}"
    left = [h for h in left if trusted_enough(h.trust, task.min_trust)]
    if not left:
        if task.min_trust is None:
            return f"every online {what} is quarantined"
        return f"waiting for a {task.min_trust} {what} (none online)"
    excluded_hosts = task.failed_hosts | task.exclude_hosts
    excluded_owners = task.failed_owners | task.exclude_owners
    left = [h for h in left if h.host not in excluded_hosts and h.owner not in excluded_owners]
    if not left:
        # A replica, or a failure's confirmation, needs another owner: say so (rather than
        # that the excluded owner's own hosts, the only ones online, built it already).
        if task.exclude_owners and task.purpose != "build":
            return f"waiting for a host of another owner for the {task.purpose}"
        if task.failed_owners:
            return "waiting for a host of another owner to confirm the failure"
        return f"every online {what} has built or failed it already"
    if throttle.engaged:
        left = [h for h in left if not throttle.blocks(h)]
        if not left or all(h.free_slots <= 0 for h in left):
            return throttle.waiting
    free = [h for h in left if h.free_slots > 0]
    if not free:
        return f"all {len(left)} eligible hosts busy"
    return f"waiting its turn (priority class, fair share): {len(free)} eligible hosts free"


def may_request_for(requester: str | None, owner: str, may_act_for: Iterable[str]) -> bool:
    """A principal builds as itself, or for the owners config lets it act for
    ("principal:owner" or "principal:*": a Koschei- or Packit-like tool)."""
    if requester is None:
        return False
    return requester == owner or any(
        rule in (f"{requester}:{owner}", f"{requester}:*") for rule in may_act_for
    )
