"""The dispatcher's reactions: queue requests, lease tasks, follow them to the end."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Sequence
from typing import Any

import koji
from fedora_messaging import message as fm
from skyline_messages import (
    BuildCompleteV1,
    BuildFailedV1,
    BuildQueuedV1,
    BuildRequestV1,
    BuildStoredV1,
    HostStatusV1,
    TaskFinishedV1,
    TaskLeasedV1,
    TaskMismatchV1,
    TaskReplicateV1,
    TaskVerifiedV1,
)

from services.common import batch
from services.common.errors import Reject, Retry
from services.common.service import Context, Runtime

from . import chain_handlers, collector, critical, failures, fairshare, matching, quota, store

log = logging.getLogger(__name__)
# A task refused or lost this many times fails its build; counted apart for its own (build)
# leases and for the replicas or tie-breaks of each replicate request.
MAX_ATTEMPTS = 3
PULL_LIMIT = 200  # queued tasks one pull considers at most
HOSTS_TRIED = 16  # free hosts a new task tries at most (each pulls)
EXPLAIN_HOSTS = 1000  # hosts of an arch looked at to explain a wait
CATCH_UP_HOSTS = 200  # hosts one catch-up pass (the periodic sweep) lets pull
OUTLOOK_HOSTS = 32  # of an arch's hosts, the fastest a pull weighs for matching.declines
LOGGED = ("id", "arch", "host", "purpose")  # of a lease


async def on_build_request(msg: BuildRequestV1, ctx: Context) -> None:
    # The bus checked who sent it (the routing key's principal); the body's owner is a claim.
    if not matching.may_request_for(msg.requester, msg.owner, ctx.config.dispatcher.may_act_for):
        raise Reject(f"{msg.requester} may not request builds for owner {msg.owner!r}")
    srpm = msg.srpm_name
    try:
        nvra = koji.parse_NVRA(srpm)
    except koji.GenericError:
        raise Reject(f"{srpm!r} is not an N-V-R.src.rpm file name") from None
    if nvra["arch"] != "src":
        raise Reject(f"{srpm!r} is not a source RPM")
    nvr = f"{nvra['name']}-{nvra['version']}-{nvra['release']}"
    build = await store.create_build(ctx.conn, msg.id, nvr, msg)
    if build is None:
        log.info("request %s was already queued", msg.id)
        return
    if await refuse_over_quota(ctx, build):
        return
    tasks = await store.build_tasks(ctx.conn, build["id"])
    log.info("queued build %s of %s for %s", build["id"], nvr, ", ".join(msg.arches))
    scheduling = Pass(ctx)  # build.queued goes out first, with the leases, in one insert
    scheduling.messages.append(
        BuildQueuedV1(
            body={
                "build_id": build["id"],
                "owner": build["owner"],
                "nvr": nvr,
                "srpm_sha256": build["srpm_sha256"],
                "scratch": build["scratch"],
                "tasks": [{"task_id": t["id"], "arch": t["arch"]} for t in tasks],
            }
        )
    )
    await schedule_tasks(ctx, [t["id"] for t in tasks], scheduling)


async def refuse_over_quota(ctx: Context, build: Any) -> bool:
    """Fail a new build at once if its owner has too many in progress (see quota.py)."""
    owner = build["owner"]
    active = await store.active_builds(ctx.conn, owner, besides=build["id"])
    reason = quota.refusal(owner, active, ctx.config.dispatcher.max_active_builds_per_owner)
    if reason is None:
        return False
    await fail_build(ctx, build["id"], reason)
    return True


@batch.idempotent
async def on_host_statuses(msgs: Sequence[HostStatusV1], ctx: Context) -> None:
    """A batch of statuses in one transaction (services/common/batch.py): one upsert of every
    host, then each host whose status applied and that has a slot free pulls.

    Idempotent without a processed-message row per status: a status applies only if it is
    not older than the host's stored one and none of its last applied ones (store.
    upsert_hosts), and only an applied status pulls, so a redelivered or stale status
    changes nothing.
    """
    rows = await store.upsert_hosts(ctx.conn, msgs)
    # A host that says it is running builds keeps its leases (see [dispatcher] lease_seconds).
    if running := [r["host"] for r in rows if r["state"] == "online" and r["running"] > 0]:
        conf = ctx.config.dispatcher
        await store.renew_leases(
            ctx.conn, running, conf.lease_seconds, conf.lease_max_seconds, conf.lease_overrun
        )
    hosts = [store.host_view(row) for row in rows]
    scheduling = Pass(ctx)
    # Online, with a slot free by the dispatcher's own count; locked by the upsert.
    await pull_many(ctx, [host for host in hosts if host.free_slots > 0], scheduling)
    await scheduling.finish()


async def on_host_status(msg: HostStatusV1, ctx: Context) -> None:
    """One status (the bus hands statuses to on_host_statuses in batches)."""
    await on_host_statuses([msg], ctx)


class Pass:
    """What one transaction's pulls write last: the fair-share charges, in one statement in
    owner order (store.charge_many), and the task.leased messages (after any the caller
    queued first), in one outbox insert. Later pulls of the transaction see earlier ones'
    charges through `terms`."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.now = time.time()
        self.half_life = ctx.config.dispatcher.fair_share_half_life
        self.terms: dict[str, float] = {}  # charges not written yet, by owner
        self.messages: list[fm.Message] = []  # task.leased (after what the caller put first)
        # Tasks a slower host left to a faster one (matching.declines), and why: their queue
        # reason, which explain() leaves as it is.
        self.declined: dict[int, str] = {}
        self._throttle: matching.Throttle | None = None
        self._batch_end: float | None = None
        self._coming: dict[str, list[matching.Coming]] = {}

    async def throttle(self) -> matching.Throttle:
        """The throttle as this transaction first read it: once per pass, however many hosts
        pull in it."""
        if self._throttle is None:
            self._throttle = await store.throttle(self.ctx.conn)
        return self._throttle

    async def batch_end(self) -> float:
        """The batch's expected end (store.batch_end, the outlooks' deadline) as this
        transaction first read it: its leases are written only when the pass ends, so every
        pull in it would read the same (and each read scans the online hosts)."""
        if self._batch_end is None:
            _, self._batch_end = await store.batch_end(self.ctx.conn)
        return self._batch_end

    async def coming(self, arches: Sequence[str]) -> dict[str, list[matching.Coming]]:
        """store.coming of these arches, each read once per pass (as batch_end: one statement
        over the longest blocked paths, the same for every kind of pulling hosts)."""
        if missing := sorted(set(arches) - self._coming.keys()):
            found = await store.coming(self.ctx.conn, missing)
            self._coming.update({arch: found.get(arch, []) for arch in missing})
        return {arch: self._coming[arch] for arch in arches if self._coming[arch]}

    def charge(self, owner: str, units: int) -> None:
        term = fairshare.charge_term(self.now, units, self.half_life)
        self.terms[owner] = fairshare.add_key(self.terms.get(owner), term)

    async def finish(self) -> None:
        await store.charge_many(self.ctx.conn, self.terms)
        await self.ctx.publish_many(self.messages)
        self.terms, self.messages = {}, []


async def schedule_host(ctx: Context, host_name: str, scheduling: Pass | None = None) -> list[int]:
    """The host, locked if it is online with a slot free and no other transaction holds it,
    pulls (see pull). Without a `scheduling` pass of the caller's, its own is finished here."""
    host = await store.lock_host(ctx.conn, host_name)
    if host is None:
        return []
    own = scheduling is None
    scheduling = scheduling or Pass(ctx)
    leased = await pull(ctx, host, scheduling)
    if own:
        await scheduling.finish()
    return leased


async def pull(ctx: Context, host: matching.HostView, scheduling: Pass) -> list[int]:
    """A host with free slots (locked by the caller) pulls: see pull_many."""
    return await pull_many(ctx, [host], scheduling)


async def pull_many(
    ctx: Context, hosts: Sequence[matching.HostView], scheduling: Pass
) -> list[int]:
    """Hosts with free slots (locked by the caller) pull their best eligible tasks, one after
    the other: by priority class, then fair share across owners (fairshare.py), each host's
    choice charged before the next one chooses. Hosts that build the same arches and
    releases choose from one set of candidates, fetched and locked at once, and every lease
    is written in one statement. Work is bounded by their free slots and the number of owners
    with queued tasks, never by the number of hosts or queued tasks. Returns the ids of the
    tasks leased."""
    throttle = await scheduling.throttle()
    kinds: dict[tuple[frozenset[str], frozenset[str]], list[matching.HostView]] = {}
    for host in hosts:
        if throttle.blocks(host):
            continue  # throttled: only core hosts get new leases then
        kinds.setdefault((host.arches, host.releases), []).append(host)
    leases: list[tuple[matching.TaskView, matching.HostView]] = []
    taken: set[int] = set()
    declined: dict[int, str] = {}
    for kind in kinds.values():
        slots = sum(host.free_slots for host in kind)
        # More candidates than slots: some may be excluded from a host (trust, replicas).
        # Of each owner, at least what one host could take; for hosts pulling together, twice
        # their slots shared among the owners waiting (so one owner's queue, alone, fills
        # them all, and many owners each offer a few, as one host's pull after another's).
        per_owner = min(PULL_LIMIT, max(host.free_slots for host in kind) + 4)
        owners = slots * 2 + 4  # some may have nothing these hosts may take
        limit = PULL_LIMIT + 2 * slots
        candidates, keys = await store.pull_candidates(
            ctx.conn,
            kind[0],
            per_owner,
            limit,
            owners,
            scheduling.terms,
            spread=2 * slots if len(kind) > 1 else 0,
            per_owner_cap=min(limit, slots + 4),
        )
        pool: dict[tuple[int, str], list[matching.TaskView]] = {}
        for task in candidates:
            if task.task_id not in taken:  # another kind's host has it (its lease unwritten)
                pool.setdefault((task.klass, task.owner), []).append(task)
        declining = await declining_for(ctx, candidates, scheduling, kind[0].arches)
        for host in kind:
            for task in choose(host, pool, keys, scheduling, declining):
                pool[(task.klass, task.owner)].remove(task)
                taken.add(task.task_id)
                leases.append((task, host))
        if declining is not None:
            declined.update(declining.reasons)
    rows = await store.lease_many(ctx.conn, leases, ctx.config.dispatcher.lease_seconds)
    # Declined by one host, not taken by another of this pass: it waits for a faster host.
    declined = {t: why for t, why in declined.items() if t not in taken}
    if declined:
        await store.mark_declined(ctx.conn, declined)
        scheduling.declined.update(declined)
    for row in rows:
        log.info("leased task %s (%s) to %s for a %s", *(row[k] for k in LOGGED))
    scheduling.messages += [lease_message(row) for row in rows]
    return [task.task_id for task, _ in leases]


async def declining_for(
    ctx: Context,
    candidates: Sequence[matching.TaskView],
    scheduling: Pass,
    builds: frozenset[str] = frozenset(),
) -> critical.Declining | None:
    """What a pull needs for matching.declines, if any candidate has a critical-path weight:
    the outlook of their arches and how long each has been declined, in two statements; and
    for matching.keeps ([dispatcher] keep_seconds), the chain links of the arches the hosts
    `builds` about to be queued, and their arches' outlooks, in one more."""
    weighted = [t for t in candidates if t.path is not None and t.work is not None]
    if not weighted:
        return None
    conf = ctx.config.dispatcher
    coming = await scheduling.coming(sorted(builds)) if conf.keep_seconds > 0 else {}
    arches = sorted({t.arch for t in weighted} | coming.keys())
    heavy = conf.heavy_share if conf.heavy_share > 0 else None
    deadline = await scheduling.batch_end()
    outlooks, hosts = await store.outlooks(
        ctx.conn, arches, OUTLOOK_HOSTS, deadline, conf.work_pad, heavy
    )
    ages = await store.declined_for(ctx.conn, [t.task_id for t in weighted])
    return critical.Declining(
        outlooks,
        ages,
        conf.decline_max_seconds,
        hosts,
        coming=coming,
        keep_seconds=conf.keep_seconds,
    )


def group_order(
    pool: dict[tuple[int, str], list[matching.TaskView]],
    keys: dict[str, float],
    terms: dict[str, float],
) -> tuple[list[tuple[int, str]], dict[tuple[int, str], float | None]]:
    """The (class, owner) groups in the order pull_candidates gives them (class, usage,
    owner), and each group's usage key with the charges `terms` this transaction has yet to
    write."""
    effective = {
        group: fairshare.add_key(keys.get(group[1]), terms[group[1]])
        if group[1] in terms
        else keys.get(group[1])
        for group in pool
    }
    order = sorted(pool, key=lambda g: (g[0], effective[g] is not None, effective[g] or 0.0, g[1]))
    return order, effective


def choose(
    host: matching.HostView,
    pool: dict[tuple[int, str], list[matching.TaskView]],
    keys: dict[str, float],
    scheduling: Pass,
    declining: critical.Declining | None = None,
) -> list[matching.TaskView]:
    """What `host` takes of the candidates `pool` (by class and owner, each in priority
    order): core claims first (matching.core_claims), then the fair-share interleave by each
    owner's usage with this transaction's charges so far, which this choice is charged to.
    Candidates are looked at only while they could still be chosen: until the core claims
    fill the host, and of a group until it has as many eligible tasks as the host has slots.
    A task `declining` says to leave to a faster host is skipped (a core claim only for a
    faster core host: a core host's result needs no replica, and neither does that one's).
    A slot `declining` keeps for a chain link about to be queued (matching.keeps) is left
    free."""
    slots = host.free_slots
    if declining is not None and declining.coming:
        slots -= declining.keeping(host, (t for g in pool.values() for t in g))
    order, effective = group_order(pool, keys, scheduling.terms)
    # Whether the host claims any candidate: only a core host may (matching.claims), so no
    # other walks the pool for it, and a core one stops at the first it claims.
    claiming = host.trust == matching.Trust.CORE and any(
        matching.claims(host, t) for g in order for t in pool[g]
    )
    claims: list[matching.TaskView] = []
    groups: dict[tuple[int, str], list[matching.TaskView]] = {}
    for group in order:
        if len(claims) >= slots:
            break  # the core claims alone fill the host
        # The interleave takes at most `slots` tasks, each next one from the open group of
        # least usage (charged as it goes): a group is only taken from once every group
        # before it in this order was, so it never reaches past the first `slots` groups
        # with an eligible task. Past those, only core claims are looked for.
        full = len(groups) >= slots and group not in groups
        if full and not claiming:
            break
        for task in pool[group]:
            if len(claims) >= slots:
                break  # the core claims alone fill the host
            claim = claiming and matching.claims(host, task)
            if not claim and (full or len(groups.get(group, ())) >= slots):
                continue  # the group has all the interleave could take of it
            if not matching.can_build(host, task):
                continue
            # A core claim is left only to a faster core host: the replica it saves is kept.
            if declining is not None and declining.leaves(host, task, core_only=claim):
                continue
            if claim:
                claims.append(task)
            else:
                groups.setdefault(group, []).append(task)
    usage = {
        group: fairshare.usage_at(effective[group], scheduling.now, scheduling.half_life)
        for group in groups
    }
    chosen = claims + fairshare.interleave(groups, usage, slots - len(claims))
    host.free_slots -= len(chosen)
    charged: dict[str, int] = {}
    for task in chosen:
        charged[task.owner] = charged.get(task.owner, 0) + 1
    for owner, units in charged.items():
        scheduling.charge(owner, units)
    return chosen


async def schedule_tasks(
    ctx: Context, task_ids: list[int], scheduling: Pass | None = None
) -> list[int]:
    """New or requeued tasks look for free hosts that build them (by index), and each such
    host pulls (schedule_host: the new tasks compete fairly with those already queued).
    Whatever is left unassigned gets the matcher's reason why it waits. The `scheduling` pass
    given is finished here too."""
    leased: list[int] = []
    tasks = await store.queued_tasks(ctx.conn, task_ids)
    tried: set[str] = set()
    scheduling = scheduling or Pass(ctx)
    throttle = await scheduling.throttle()
    for task in tasks:
        if task.task_id in leased:
            continue
        # The hosts pick_host prefers first (matching.preference: core for an official
        # build's own lease, speed for a critical one, then QoS score, then free slots), in
        # SQL so that the best are among those tried, and again here for its tie-breaks; the
        # ones that may not build it (throttle, exclusions) are skipped below.
        hosts = await store.free_hosts_for(ctx.conn, task, HOSTS_TRIED)
        hosts.sort(key=lambda h: matching.preference(task, h), reverse=True)
        for host in hosts:
            if host.host in tried or not matching.can_build(host, task, throttle):
                continue
            tried.add(host.host)
            leased += await schedule_host(ctx, host.host, scheduling)
            if task.task_id in leased:
                break
    await scheduling.finish()
    # A declined task's reason names the faster host it waits for: kept.
    waiting = [t for t in tasks if t.task_id not in leased and t.task_id not in scheduling.declined]
    await explain(ctx, waiting)
    return leased


async def explain(ctx: Context, tasks: list[matching.TaskView]) -> None:
    """Record why each of these queued tasks is not running (matching.why_waiting)."""
    if tasks:
        await store.set_queue_reasons(ctx.conn, await reasons_for(ctx, tasks))


async def reasons_for(ctx: Context, tasks: list[matching.TaskView]) -> dict[int, str]:
    """Why each of these queued tasks waits, by task id: one query of the online hosts per
    arch among them (at most EXPLAIN_HOSTS each), never one per task."""
    by_arch: dict[str, list[matching.HostView]] = {}
    reasons = {}
    throttle = await store.throttle(ctx.conn)
    # why_waiting is pure: tasks alike in all but their id (most of a queue) share one answer,
    # computed once instead of once per task over up to EXPLAIN_HOSTS hosts.
    alike: dict[matching.TaskView, str] = {}
    for task in tasks:
        if task.arch not in by_arch:
            by_arch[task.arch] = await store.online_hosts_for(ctx.conn, task.arch, EXPLAIN_HOSTS)
        shape = dataclasses.replace(task, task_id=0)
        if shape not in alike:
            alike[shape] = matching.why_waiting(task, by_arch[task.arch], throttle)
        reasons[task.task_id] = alike[shape]
    return reasons


REASON_CURSOR = "dispatcher.reason_cursor"  # runtime.state: the last task id refresh_reasons did


async def refresh_reasons(ctx: Context) -> list[int]:
    """Say again why queued tasks wait, now that hosts may have come, gone or filled up since
    their reasons were written: up to reasons_per_sweep of them, in id order from where the
    last pass stopped, round the queue (the oldest again after the newest). Bounded: one
    fetch of the tasks, one query of the hosts per arch among them, one update. Returns the
    ids of the tasks looked at."""
    limit = ctx.config.dispatcher.reasons_per_sweep
    if limit <= 0:
        return []
    cursor = int(ctx.runtime.state.get(REASON_CURSOR, 0))
    tasks = await store.queued_from(ctx.conn, cursor, limit)
    if len(tasks) < limit and cursor > 0:  # the end of the queue: on from its start
        wrapped = await store.queued_from(ctx.conn, 0, limit - len(tasks))
        tasks += [t for t in wrapped if t.task_id <= cursor]
    ctx.runtime.state[REASON_CURSOR] = tasks[-1].task_id if len(tasks) == limit else 0
    if tasks:
        await store.refresh_queue_reasons(ctx.conn, await reasons_for(ctx, tasks))
    return [t.task_id for t in tasks]


async def schedule(ctx: Context) -> int:
    """A catch-up pass (the periodic sweep): hosts with free slots, most free first, each
    pull. Bounded by CATCH_UP_HOSTS; the incremental paths above do the everyday work."""
    if not await store.any_queued(ctx.conn):
        # Nothing to catch up on: no host is locked (a request's own pass would find the
        # free hosts it tries locked by this one, and its task would wait for the next).
        return 0
    scheduling = Pass(ctx)
    hosts = await store.lock_available_hosts(ctx.conn, CATCH_UP_HOSTS)
    leased = await pull_many(ctx, hosts, scheduling)
    await scheduling.finish()
    return len(leased)


def lease_message(row: Any) -> TaskLeasedV1:
    body = {
        "task_id": row["id"],
        "build_id": row["build_id"],
        "lease_id": str(row["lease_id"]),
        "host": row["host"],
        "arch": row["arch"],
        "owner": row["owner"],
        "nvr": row["nvr"],
        "srpm_url": row["srpm_url"],
        "srpm_sha256": row["srpm_sha256"],
        "release": row["release"] or "any",
        "scratch": row["scratch"],
        "lease_expires": row["lease_expires"].isoformat(),
        "purpose": row["purpose"],
    }
    if row.get("repos"):  # a chain link: the repositories of the links it comes after
        body["repos"] = list(row["repos"])
    return TaskLeasedV1(body=body, topic=TaskLeasedV1.topic_for(row["host"]))


async def on_task_verified(msg: TaskVerifiedV1, ctx: Context) -> None:
    await task_verified(msg, ctx)
    await pull_freed(ctx, msg.host)


async def pull_freed(ctx: Context, host: str) -> list[int]:
    """A lease of `host` ended (its result verified): the slot it held is free by the
    dispatcher's count now. The host's own status saying so came first (its build ended
    before the verdict: the lease, still open then, kept the slot) and its next one is a
    heartbeat away, so it pulls now: a task left for it (matching.declines) starts at once,
    as the mass-rebuild simulation assumes. Only this host, if online with a slot free."""
    return await schedule_host(ctx, host)


async def task_verified(msg: TaskVerifiedV1, ctx: Context) -> None:
    if msg.status == "failed":
        await verified_failure(msg, ctx)
        return
    # An accepted result may be any lease's: say the replica agreed with the first build.
    found = await store.lease_and_task(ctx.conn, msg.lease_id)
    if found is None:
        log.warning("verified result for unknown lease %s ignored", msg.lease_id)
        return
    lease, task = found
    if lease["lease_state"] not in ("open", "finished") or task["state"] not in (
        "leased",
        "queued",
    ):
        log.warning(
            "verified result for lease %s (%s) of task %s (%s) ignored",
            msg.lease_id,
            lease["lease_state"],
            task["id"],
            task["state"],
        )
        return
    await accept(ctx, task, lease, msg)


async def accept(ctx: Context, task: Any, lease: Any, msg: TaskVerifiedV1) -> None:
    """The task is accepted through `lease`: the collector stores that lease's results, and
    the task's other leases (a replica still building, results that agreed) are superseded."""
    lease_id = lease["lease_id"]
    await store.end_lease(ctx.conn, lease_id, "accepted", only_from=("open", "finished"))
    # How long the package took: the next builds of it get a critical-path weight.
    await store.record_duration(ctx.conn, lease_id)
    await store.supersede_leases(ctx.conn, task["id"], lease_id)
    await store.set_task(
        ctx.conn,
        task["id"],
        "verified",
        host=lease["lease_host"],
        lease_id=lease_id,
        result_digest=msg.result_digest,
        agreeing=msg.agreeing,
        rule=msg.rule,
        waiting=None,
    )
    # A task accepted while it waited for a replica had no running lease: the collector gets
    # as long as after any task.finished before the expiry sweep asks it.
    await store.extend_lease(ctx.conn, task["id"], ctx.config.dispatcher.verdict_grace_seconds)
    if lease_id != task["lease_id"]:
        log.info("task %s accepted through its earlier lease %s", task["id"], lease_id)


async def verified_failure(msg: TaskVerifiedV1, ctx: Context) -> None:
    """The current lease's host verifiably failed to build the task."""
    task = await store.task_by_lease(ctx.conn, msg.lease_id)
    if task is None or task["state"] != "leased":
        log.warning("verified failure for stale lease %s ignored", msg.lease_id)
        return
    await store.end_lease(ctx.conn, task["lease_id"], "failed")
    if task["purpose"] != "build" and await store.awaits_agreement(ctx.conn, task["id"]):
        # A succeeded result waits for agreement: a replica that fails says nothing about the
        # package (failures.py would fail the build on two owners' word, one of them the
        # replica's). Another eligible host tries, within MAX_ATTEMPTS replica leases.
        await retry_elsewhere(ctx, task, f"{task['purpose']} failed on {task['host']}")
        return
    if msg.failure not in (None, "package"):
        # The host's own fault (its sandbox, a limit, a timeout, a revoked lease), not the
        # package's: another host builds it, within MAX_ATTEMPTS leases.
        await retry_elsewhere(ctx, task, f"{msg.failure} failure on {task['host']}")
        return
    await task_failed(ctx, task)


async def retry_elsewhere(ctx: Context, task: Any, reason: str) -> None:
    """A lease gave no usable result through no fault of the package's (a replica or
    tie-break that failed, a host's own failure): its host does not get the task again, and
    it is requeued with the same constraints (or fails after MAX_ATTEMPTS such leases)."""
    await store.refuse_host(ctx.conn, task["id"], task["host"])
    await requeue_or_fail(ctx, task, reason)
    await schedule_tasks(ctx, [task["id"]])


async def on_task_replicate(msg: TaskReplicateV1, ctx: Context) -> None:
    """The verifier needs another result before it accepts one: lease the task again, with
    the same SRPM and settings, to a host that meets the request's constraints.

    Idempotent: a request is acted on only if it counts more results than the newest one acted
    on, so a redelivered or stale request never leases the task twice.
    """
    task = await store.lock_task(ctx.conn, msg.task_id)
    if task is None or task["build_id"] != msg.build_id or task["arch"] != msg.arch:
        log.warning("replicate request for unknown task %s ignored", msg.task_id)
        return
    if task["state"] not in ("queued", "leased"):
        log.info("replicate request for task %s (%s) ignored", task["id"], task["state"])
        return
    build = await store.get_build(ctx.conn, task["build_id"])
    if build is None or build["state"] != "building":
        log.info("replicate request for task %s of a finished build ignored", task["id"])
        return
    # Every host with a result is excluded: without a count, that is how many there are.
    results = msg.results or len(msg.exclude_hosts)
    if results <= task["replicate_results"]:
        log.info("replicate request for task %s at %s results seen already", task["id"], results)
        return
    waiting = f"waiting for agreement: {msg.reason}"
    constraints = {
        "purpose": msg.purpose,
        # No host below untrusted is ever leased to: "at least quarantined" is "any".
        "min_trust": "untrusted" if msg.min_trust == "quarantined" else msg.min_trust,
        "exclude_hosts": msg.exclude_hosts,
        "exclude_owners": msg.exclude_owners,
        "waiting": waiting,
        "replicate_results": results,
        "replica_attempts": 0,
    }
    if task["state"] == "leased" and task["host"] not in msg.exclude_hosts:
        # The current lease has no result yet (it was leased again after an expiry while the
        # verifier judged): it runs on, and its result is the next one the verifier weighs.
        await store.set_task(ctx.conn, task["id"], "leased", **constraints)
        return
    if task["state"] == "leased":
        await store.end_lease(ctx.conn, task["lease_id"], "finished")
    log.info("task %s requeued for a %s: %s", task["id"], msg.purpose, msg.reason)
    await store.requeue(ctx.conn, task["id"], waiting, **constraints)
    await schedule_tasks(ctx, [task["id"]])


async def task_failed(ctx: Context, task: Any) -> None:
    """A host's verified failure: fail the build once confirmed, else build it elsewhere."""
    host = await store.get_host(ctx.conn, task["host"])
    # Every leased host has a row; without one, trust it least (its owner is unknown).
    failure = failures.Failure(
        task["host"], host["owner"] if host else "", host["trust"] if host else "untrusted"
    )
    seen = [*failures.parse(task["failures"]), failure]
    what = f"{task['arch']} build failed on {failures.describe(seen)}"
    entries = [f.entry() for f in seen]
    if failures.confirmed(seen):
        await store.set_task(ctx.conn, task["id"], "failed", reason=what, failures=entries)
        await fail_build(ctx, task["build_id"], what)
        return
    build = await store.get_build(ctx.conn, task["build_id"])
    if build is not None and build["state"] != "building":
        await store.set_task(
            ctx.conn, task["id"], "failed", reason=f"{what}; build over", failures=entries
        )
        return
    # Not counted against MAX_ATTEMPTS: bounded anyway, as a second owner's failure confirms.
    log.warning("task %s: %s; to be confirmed on a host of another owner", task["id"], what)
    await store.requeue(
        ctx.conn, task["id"], f"{what}; to be confirmed by another owner", failures=entries
    )
    await schedule_tasks(ctx, [task["id"]])


async def on_task_finished(msg: TaskFinishedV1, ctx: Context) -> None:
    """The lease's holder finished (the bus checked it was that host): its lease no longer
    runs out while the verifier and the collector, perhaps slow or restarting, judge and
    store the result ([dispatcher] verdict_grace_seconds); the verdict decides the rest."""
    task = await store.task_by_lease(ctx.conn, msg.lease_id)
    if task is None or task["state"] != "leased" or task["host"] != msg.host:
        return
    await store.extend_lease(
        ctx.conn, task["id"], ctx.config.dispatcher.verdict_grace_seconds, finished=True
    )


async def on_task_mismatch(msg: TaskMismatchV1, ctx: Context) -> None:
    """A refused result: give the task to another host, up to MAX_ATTEMPTS in all."""
    if msg.reason in ("bad_signature", "unknown_host"):
        # A forgery says nothing about the leased host, which may still be building.
        log.warning("forged result for lease %s ignored", msg.lease_id)
        return
    task = await store.task_by_lease(ctx.conn, msg.lease_id)
    if task is None or task["state"] != "leased":
        return
    if task["host"] != msg.host:
        # Another (enrolled) host attested to this lease: its refusal is about that host, not
        # about the lease holder, which may still be building. Requeueing here would let any
        # host cancel, and after MAX_ATTEMPTS fail, other hosts' builds.
        log.warning(
            "refusal of %s's result for lease %s held by %s ignored",
            msg.host,
            msg.lease_id,
            task["host"],
        )
        return
    await store.end_lease(ctx.conn, task["lease_id"], "refused")
    what = f"result from {task['host']} refused: {msg.reason}"
    if msg.reason == "no_agreement":
        # The verifier's final word: its results limit was reached without agreement.
        reason = f"{task['arch']}: no agreement among results: {msg.detail}"
        await store.set_task(ctx.conn, task["id"], "failed", reason=reason, waiting=None)
        await fail_build(ctx, task["build_id"], reason)
        return
    # The refused host does not get this task again: the next try is another host's (for a
    # replica, with the same constraints).
    await store.refuse_host(ctx.conn, task["id"], task["host"])
    await requeue_or_fail(ctx, task, what)
    await schedule_tasks(ctx, [task["id"]])


async def on_build_stored(msg: BuildStoredV1, ctx: Context) -> None:
    task = await store.lock_task(ctx.conn, msg.task_id)
    if task is None or task["build_id"] != msg.build_id:
        log.warning(
            "build.stored for unknown task %s of build %s ignored",
            msg.task_id,
            msg.build_id,
        )
        return
    await task_stored(ctx, task, msg.files)


async def task_stored(ctx: Context, task: Any, files: list[dict[str, Any]]) -> None:
    """The task's results are in Koji storage: the build completes when it was the last one.

    Idempotent: the collector may announce a stored lease again (its first build.stored lost),
    and the expiry sweep may learn it from the collector's API first.
    """
    if task["state"] == "stored":
        log.info("task %s was stored already; announcement ignored", task["id"])
        return
    await store.set_task(ctx.conn, task["id"], "stored", files=files, waiting=None)
    if task["lease_id"] is not None:
        # Its task.verified may have been lost: the stored lease is the accepted one.
        await store.end_lease(
            ctx.conn, task["lease_id"], "accepted", only_from=("open", "finished")
        )
        await store.supersede_leases(ctx.conn, task["id"], task["lease_id"])
    tasks = await store.build_tasks(ctx.conn, task["build_id"])
    if all(t["state"] == "stored" for t in tasks):
        build = await store.finish_build(ctx.conn, task["build_id"], "complete")
        if build is None:
            return
        every_file = [f for t in tasks for f in json.loads(t["files"])]
        log.info("build %s of %s complete", build["id"], build["nvr"])
        await ctx.publish(
            BuildCompleteV1(
                body={
                    "build_id": build["id"],
                    "owner": build["owner"],
                    "nvr": build["nvr"],
                    "scratch": build["scratch"],
                    "files": every_file,
                    "tasks": [accepted_task(t) for t in tasks],
                }
            )
        )
        if await chain_handlers.link_complete(ctx, build["id"]):
            await schedule(ctx)


def accepted_task(task: Any) -> dict[str, Any]:
    """How one task was accepted, for build.complete: the hosts that agreed, the rule met.

    A task stored without the verifier's agreement fields (its task.verified lost, or from a
    verifier before them) names the host whose result was stored, and rule "unrecorded".
    """
    agreeing = [a["host"] for a in json.loads(task["agreeing"])] or [task["host"]]
    return {
        "task_id": task["id"],
        "arch": task["arch"],
        "agreeing": agreeing,
        "rule": task["rule"] or "unrecorded",
    }


async def fail_build(ctx: Context, build_id: int, reason: str) -> None:
    build = await store.finish_build(ctx.conn, build_id, "failed", reason)
    if build is None:
        return
    failed = [
        t["arch"] for t in await store.build_tasks(ctx.conn, build_id) if t["state"] == "failed"
    ]
    # The build is over: its tasks still waiting for a host would only waste builders.
    await store.cancel_queued(ctx.conn, build_id, f"build failed: {reason}")
    log.warning("build %s of %s failed: %s", build_id, build["nvr"], reason)
    await ctx.publish(
        BuildFailedV1(
            body={
                "build_id": build_id,
                "owner": build["owner"],
                "nvr": build["nvr"],
                "reason": reason,
                "failed_arches": failed,
            }
        )
    )
    # Chain links that come after this build cannot build against it: they fail at once.
    for dependent, why in await chain_handlers.link_failed(ctx, build, reason):
        await fail_build(ctx, dependent, why)


async def requeue_expired_leases(runtime: Runtime) -> None:
    """Leases whose host went silent go back to the queue (or fail after MAX_ATTEMPTS).

    Unless the collector stored the lease's results and its build.stored was lost: then the
    task completes as if it had arrived. No task is requeued while the collector cannot say;
    the rest of the sweep waits for the next one (a collector that is down answers no lease).
    """
    async with runtime.transaction() as ctx:
        requeued = []
        for task in await store.expired_leases(ctx.conn):
            try:
                if await stored_by_collector(ctx, task):
                    continue
            except Retry as exc:
                log.warning(
                    "expired leases wait: the collector cannot say if they were stored: %s", exc
                )
                break
            await store.end_lease(
                ctx.conn, task["lease_id"], "expired", only_from=("open", "accepted")
            )
            await requeue_or_fail(ctx, task, f"lease on {task['host']} expired")
            requeued.append(task["id"])
        await schedule(ctx)
        await schedule_tasks(ctx, requeued)
    # Apart, once the pass's leases are committed (its host locks released): see
    # refresh_reasons. A reason is at most ceil(queued / reasons_per_sweep) sweeps old.
    async with runtime.transaction() as ctx:
        await refresh_reasons(ctx)


async def stored_by_collector(ctx: Context, task: Any) -> bool:
    """If the collector stored this lease's results, complete the task and say so.

    Leased tasks are asked about too, not only verified ones: the dispatcher's task.verified
    may have been lost as well as build.stored. Raises Retry when the collector cannot say.
    """
    lease_id = str(task["lease_id"])
    found = await collector.lease(ctx.runtime.http, ctx.config.dispatcher.collector_url, lease_id)
    if found is None or not found.stored:
        return False
    log.warning("lease %s expired but its results were stored: build.stored was lost", lease_id)
    await task_stored(ctx, task, found.files)
    return True


async def requeue_or_fail(ctx: Context, task: Any, reason: str) -> None:
    """Give a task another host (with the same constraints, for a replica), or fail its build
    once it has had MAX_ATTEMPTS leases (of a replica: since the verifier asked for it)."""
    build = await store.get_build(ctx.conn, task["build_id"])
    if build is not None and build["state"] != "building":
        # Its build already failed (another arch did): building this one again is wasted work.
        await store.set_task(ctx.conn, task["id"], "failed", reason=f"{reason}; build over")
        return
    tries = task["attempts"] if task["purpose"] == "build" else task["replica_attempts"]
    if tries >= MAX_ATTEMPTS:
        if task["purpose"] != "build":
            reason = f"{reason} ({tries} {task['purpose']} leases)"
        await store.set_task(ctx.conn, task["id"], "failed", reason=reason, waiting=None)
        await fail_build(ctx, task["build_id"], reason)
    else:
        log.warning("requeueing task %s: %s", task["id"], reason)
        await store.requeue(ctx.conn, task["id"], reason)
