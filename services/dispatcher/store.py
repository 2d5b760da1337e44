"""The dispatcher's SQL: builds, their tasks and leases, and its view of the hosts."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg
from skyline_messages import BuildRequestV1, HostStatusV1

from services.common import bus

from . import arches, critical, failures, fairshare
from .matching import (
    ESTIMATE_PAD,
    NEUTRAL_QOS,
    NEUTRAL_SPEED,
    Coming,
    HostSlots,
    HostView,
    Outlook,
    TaskView,
    Throttle,
    build_outlook,
    lease_frees_at,
)
from .matching import batch_end as batch_end_of

JSON_COLUMNS = ("files", "failures", "agreeing")


async def create_build(
    conn: asyncpg.Connection, request_id: str, nvr: str, request: BuildRequestV1
) -> asyncpg.Record | None:
    """A new build with one queued task per arch; None if this request was already taken."""
    priority = request.request_priority
    build = await conn.fetchrow(
        "INSERT INTO builds (request_id, owner, nvr, srpm_url, srpm_sha256, release, scratch,"
        " priority) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        " ON CONFLICT (request_id) DO NOTHING RETURNING *",
        request_id,
        request.owner,
        nvr,
        request.srpm_url,
        request.srpm_sha256,
        request.release,
        request.scratch,
        priority,
    )
    if build is not None:
        work = await estimates(conn, critical.package_of(nvr), request.arches)
        # A stand-alone build's path is its work (a chain link's: chain_handlers sets it).
        await conn.executemany(
            "INSERT INTO tasks (build_id, arch, priority, owner, class, release, scratch,"
            " work, path) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
            [
                (
                    build["id"],
                    arch,
                    priority,
                    build["owner"],
                    fairshare.priority_class(priority),
                    build["release"],
                    build["scratch"],
                    work.get(arch),
                )
                for arch in request.arches
            ],
        )
    return build


async def estimates(
    conn: asyncpg.Connection, package: str, arches: Sequence[str]
) -> dict[str, float]:
    """The package's estimated build seconds at the farm's pace, by arch: the arch's own
    history, else the package's over any arch; an arch without either is left out."""
    rows = await conn.fetch(
        "SELECT arch, seconds_ewma FROM package_durations WHERE package = $1"
        " AND arch = ANY($2::text[])",
        package,
        [*arches, critical.ANY_ARCH],
    )
    found: dict[str, float] = {r["arch"]: r["seconds_ewma"] for r in rows}
    fallback = found.get(critical.ANY_ARCH)
    if fallback is not None:
        return {a: found.get(a, fallback) for a in arches}
    return {a: found[a] for a in arches if a in found}


async def record_duration(conn: asyncpg.Connection, lease_id: Any) -> float | None:
    """Learn from an accepted lease how long its package builds: from the lease to its host's
    task.finished (or now, the verdict, if that was not seen), at the farm's pace by the
    host's speed factor when leased. Updates the package's estimate for the task's arch and
    over any arch (critical.update_estimate); returns the duration, or None if not usable."""
    row = await conn.fetchrow(
        "SELECT b.nvr, t.arch, l.speed,"
        " extract(epoch FROM coalesce(l.finished_at, now()) - l.created_at) AS elapsed"
        " FROM leases l JOIN tasks t ON t.id = l.task_id JOIN builds b ON b.id = t.build_id"
        " WHERE l.lease_id = $1",
        lease_id,
    )
    if row is None:
        return None
    seconds = critical.farm_seconds(float(row["elapsed"]), row["speed"])
    if seconds is None:
        return None
    package = critical.package_of(row["nvr"])
    keys = sorted({row["arch"], critical.ANY_ARCH})  # locked in one order: no deadlock
    old = {
        r["arch"]: r
        for r in await conn.fetch(
            "SELECT * FROM package_durations WHERE package = $1 AND arch = ANY($2::text[])"
            " ORDER BY arch FOR UPDATE",
            package,
            keys,
        )
    }
    updated = [
        critical.update_estimate(
            old[k]["seconds_ewma"] if k in old else None,
            old[k]["samples"] if k in old else 0,
            seconds,
        )
        for k in keys
    ]
    await conn.execute(
        "INSERT INTO package_durations AS p (package, arch, seconds_ewma, samples)"
        " SELECT $1, * FROM unnest($2::text[], $3::float8[], $4::int[]) ORDER BY 1"
        " ON CONFLICT (package, arch) DO UPDATE SET seconds_ewma = EXCLUDED.seconds_ewma,"
        " samples = EXCLUDED.samples, updated_at = now()",
        package,
        keys,
        [u[0] for u in updated],
        [u[1] for u in updated],
    )
    return seconds


async def build_tasks(conn: asyncpg.Connection, build_id: int) -> list[asyncpg.Record]:
    return await conn.fetch("SELECT * FROM tasks WHERE build_id = $1 ORDER BY id", build_id)


async def get_build(conn: asyncpg.Connection, build_id: int) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM builds WHERE id = $1", build_id)


def sent_at(msg: HostStatusV1) -> str | None:
    """When the registry made the status (fedora-messaging's `sent-at` header, in whole
    seconds), as text for the statement."""
    at = bus.sent_at(msg)
    return None if at is None else at.isoformat()


# Message ids of its last applied statuses a host's row keeps (a redelivery is one of them).
RECENT_STATUSES = 8

# One statement for a batch of statuses: the newest of each host's (by seen_at, then the
# registry's sent-at, then arrival) applies if it is not older than the stored one and none
# of the host's last applied statuses, so a redelivered or stale status changes nothing (no
# processed-message row is kept per status). Rows are written, and so locked, in host order:
# concurrent batches never wait on each other in a cycle. A row written stays locked to the
# end of the transaction: its host pulls next (store.lock_host's job for a single host).
_UPSERT_HOSTS = """
INSERT INTO hosts AS h (host, owner, state, trust, arches, releases, free_slots, running,
    max_slots, seen_at, status_sent_at, build_arches, recent_statuses, qos_score, speed)
SELECT DISTINCT ON (v.host) v.host, v.owner, v.state, v.trust,
    ARRAY(SELECT jsonb_array_elements_text(v.arches)),
    ARRAY(SELECT jsonb_array_elements_text(v.releases)),
    v.free_slots, v.running, v.max_slots, v.seen_at::timestamptz, v.sent_at::timestamptz,
    ARRAY(SELECT jsonb_array_elements_text(v.build_arches)), ARRAY[v.message_id],
    v.qos_score, v.speed
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::jsonb[], $6::jsonb[],
    $7::int[], $8::int[], $9::int[], $10::text[], $11::text[], $12::jsonb[], $13::text[],
    $15::float8[], $16::float8[])
    WITH ORDINALITY AS v(host, owner, state, trust, arches, releases, free_slots, running,
        max_slots, seen_at, sent_at, build_arches, message_id, qos_score, speed, arrival)
LEFT JOIN hosts s ON s.host = v.host
WHERE s.host IS NULL OR v.message_id <> ALL(s.recent_statuses)
ORDER BY v.host, v.seen_at::timestamptz DESC, v.sent_at::timestamptz DESC NULLS LAST,
    v.arrival DESC
ON CONFLICT (host) DO UPDATE SET owner = EXCLUDED.owner, state = EXCLUDED.state,
    trust = EXCLUDED.trust, arches = EXCLUDED.arches, releases = EXCLUDED.releases,
    free_slots = EXCLUDED.free_slots, running = EXCLUDED.running,
    max_slots = EXCLUDED.max_slots, seen_at = EXCLUDED.seen_at,
    status_sent_at = EXCLUDED.status_sent_at, build_arches = EXCLUDED.build_arches,
    recent_statuses = (EXCLUDED.recent_statuses || h.recent_statuses)[1:$14],
    qos_score = EXCLUDED.qos_score, speed = EXCLUDED.speed
WHERE (h.seen_at, coalesce(h.status_sent_at, '-infinity'))
    <= (EXCLUDED.seen_at, coalesce(EXCLUDED.status_sent_at, '-infinity'))
    AND EXCLUDED.recent_statuses[1] <> ALL(h.recent_statuses)
RETURNING *
"""


async def upsert_hosts(
    conn: asyncpg.Connection, msgs: Sequence[HostStatusV1]
) -> list[asyncpg.Record]:
    """Apply statuses (see _UPSERT_HOSTS); returns the rows of the hosts whose status applied,
    locked, in host order."""
    bodies = [m.body for m in msgs]
    return await conn.fetch(
        _UPSERT_HOSTS,
        [b["host"] for b in bodies],
        [b["owner"] for b in bodies],
        [b["state"] for b in bodies],
        [b["trust"] for b in bodies],
        [json.dumps(b["arches"]) for b in bodies],
        [json.dumps(b["releases"]) for b in bodies],
        [b["free_slots"] for b in bodies],
        [m.running for m in msgs],
        [m.max_slots for m in msgs],
        [b["seen_at"] for b in bodies],
        [sent_at(m) for m in msgs],
        [json.dumps(sorted(arches.buildable(b["arches"]))) for b in bodies],
        [m.id for m in msgs],
        RECENT_STATUSES,
        [m.qos_score for m in msgs],
        [m.speed_factor for m in msgs],
    )


async def renew_leases(
    conn: asyncpg.Connection,
    hosts: Sequence[str],
    seconds: int,
    max_seconds: int,
    overrun: float,
) -> None:
    """The building leases of these hosts (each said it is running builds) expire no sooner
    than `seconds` from now, and never later than `max_seconds` after they were given, nor
    later than `overrun` times their task's estimated time on the host (when it has one, and
    at least `seconds`). A lease whose build is reported done is left to its verdict grace
    (extend_lease)."""
    await conn.execute(
        "WITH renewed AS (UPDATE leases l SET expires_at = GREATEST(l.expires_at,"
        "   LEAST(now() + make_interval(secs => $2), l.created_at + make_interval(secs =>"
        "     LEAST($3, GREATEST($2, coalesce($4 * t.work / coalesce(l.speed, 1.0), $3))))))"
        "  FROM tasks t WHERE l.host = ANY($1::text[]) AND l.state = 'open'"
        "  AND l.finished_at IS NULL AND t.id = l.task_id AND t.lease_id = l.lease_id"
        "  AND t.state = 'leased' RETURNING l.task_id, l.expires_at)"
        " UPDATE tasks t SET lease_expires = r.expires_at FROM renewed r"
        " WHERE t.id = r.task_id AND t.lease_expires < r.expires_at",
        sorted(hosts),
        seconds,
        max_seconds,
        overrun,
    )


async def upsert_host(conn: asyncpg.Connection, msg: HostStatusV1) -> bool:
    """Apply one status (as upsert_hosts); whether it applied."""
    return bool(await upsert_hosts(conn, [msg]))


async def get_host(conn: asyncpg.Connection, host: str) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM hosts WHERE host = $1", host)


def host_view(r: Any) -> HostView:
    """A hosts row as the matcher sees it: what it builds, and the slots it may still take."""
    return HostView(
        r["host"],
        r["trust"],
        frozenset(r["build_arches"]),
        frozenset(r["releases"]),
        r["spare"] if r["state"] == "online" else 0,
        owner=r["owner"],
        # Not rated by the registry: neutral (HostView's defaults).
        qos_score=NEUTRAL_QOS if r["qos_score"] is None else r["qos_score"],
        speed=NEUTRAL_SPEED if r["speed"] is None else r["speed"],
    )


_NONE: frozenset[str] = frozenset()


def task_view(r: Any) -> TaskView:
    # A pull makes a view of every candidate: most have no failures, exclusions or refusals,
    # and share the empty set rather than parse and build their own.
    failed = failures.parse(r["failures"]) if r["failures"] != "[]" else []
    refused, exclude_hosts, exclude_owners = (
        r["refused_hosts"],
        r["exclude_hosts"],
        r["exclude_owners"],
    )
    return TaskView(
        r["id"],
        r["arch"],
        r["release"],
        r["scratch"],
        failed_hosts=frozenset([*(f.host for f in failed), *refused])
        if failed or refused
        else _NONE,
        failed_owners=frozenset(f.owner for f in failed) if failed else _NONE,
        purpose=r["purpose"],
        min_trust=r["min_trust"],
        exclude_hosts=frozenset(exclude_hosts) if exclude_hosts else _NONE,
        exclude_owners=frozenset(exclude_owners) if exclude_owners else _NONE,
        owner=r["owner"],
        klass=r["class"],
        work=r["work"],
        path=r["path"],
    )


async def lock_host(conn: asyncpg.Connection, host: str) -> HostView | None:
    """The host, locked, if it is online with a slot free; None if not, or if another
    transaction holds it (that one is filling it: its slots are counted when it commits)."""
    row = await conn.fetchrow(
        "SELECT * FROM hosts WHERE host = $1 AND state = 'online' AND spare > 0"
        " FOR UPDATE SKIP LOCKED",
        host,
    )
    return host_view(row) if row is not None else None


async def any_queued(conn: asyncpg.Connection) -> bool:
    """Whether any task waits for a host (one probe of tasks_queued_owner_path)."""
    return bool(await conn.fetchval("SELECT EXISTS (SELECT 1 FROM tasks WHERE state = 'queued')"))


async def lock_available_hosts(conn: asyncpg.Connection, limit: int = 1000) -> list[HostView]:
    """Up to `limit` online hosts with a free slot, most free first, locked (hosts_spare)."""
    rows = await conn.fetch(
        "SELECT * FROM hosts WHERE state = 'online' AND spare > 0 ORDER BY spare DESC, host"
        " LIMIT $1 FOR UPDATE SKIP LOCKED",
        limit,
    )
    return [host_view(r) for r in rows]


# free_hosts_for: the best `$3` free hosts of an arch by matching.preference without sorting
# them all. Each part walks an index in its order and stops at the limit (migration 0016,
# whose expressions these must match): core hosts for an official build's own lease (few),
# then by QoS score, or by speed then QoS score for a task with a critical-path weight; the
# union holds the best `$3` by the whole order, which the outer query then applies.
_FREE = (
    "state = 'online' AND spare > 0 AND build_arches @> ARRAY[$1::text]"
    " AND ($2::text IS NULL OR $2 = ANY(releases))"
)
_QOS = f"coalesce(qos_score, {NEUTRAL_QOS})"
_SPEED = f"coalesce(speed, {NEUTRAL_SPEED})"
_FREE_HOSTS = f"""
SELECT * FROM hosts WHERE host IN (
    (SELECT host FROM hosts WHERE $4 AND trust = 'core' AND {_FREE}
        ORDER BY CASE WHEN $5 THEN {_SPEED} ELSE 0 END DESC, {_QOS} DESC, spare DESC, host
        LIMIT $3)
    UNION ALL (SELECT host FROM hosts WHERE NOT $5 AND {_FREE}
        ORDER BY {_QOS} DESC, spare DESC, host LIMIT $3)
    UNION ALL (SELECT host FROM hosts WHERE $5 AND {_FREE}
        ORDER BY {_SPEED} DESC, {_QOS} DESC, spare DESC, host LIMIT $3))
ORDER BY ($4 AND trust = 'core') DESC, CASE WHEN $5 THEN {_SPEED} ELSE 0 END DESC,
    {_QOS} DESC, spare DESC, host
LIMIT $3
"""


async def free_hosts_for(conn: asyncpg.Connection, task: TaskView, limit: int) -> list[HostView]:
    """Up to `limit` online hosts with a free slot that build the task's arch (and offer its
    release), best first by matching.preference: a core host for an official build's own
    lease, the fastest for a task with a critical-path weight, then QoS score, then free
    slots (unrated: neutral); not locked (lock_host locks the one a pull fills)."""
    rows = await conn.fetch(
        _FREE_HOSTS, task.arch, task.release, limit, task.prefers_core, task.path is not None
    )
    return [host_view(r) for r in rows]


# Per arch: its online hosts, fastest first (at most $2; unrated: $3), each with its open
# leases (at most $4, soonest leased first): when leased, the task's work, the host's speed
# then, the expiry, whether its host reported it finished (matching.lease_frees_at).
_OUTLOOK = """
SELECT h.*, a.arch AS outlook_arch, extract(epoch FROM now()) AS outlook_now, o.*
FROM unnest($1::text[]) AS a(arch)
CROSS JOIN LATERAL (SELECT * FROM hosts
    WHERE state = 'online' AND build_arches @> ARRAY[a.arch]
    ORDER BY coalesce(speed, $3) DESC, spare DESC, host LIMIT $2) h
CROSS JOIN LATERAL (SELECT array_agg(extract(epoch FROM l.created_at)::float8) AS leased_at,
        array_agg(t.work) AS lease_work, array_agg(coalesce(l.speed, $3)) AS lease_speed,
        array_agg(extract(epoch FROM l.expires_at)::float8) AS lease_expires,
        array_agg(l.finished_at IS NOT NULL) AS lease_finished
    FROM (SELECT * FROM leases WHERE host = h.host AND state = 'open'
        ORDER BY created_at LIMIT $4) l
    JOIN tasks t ON t.id = l.task_id) o
"""

# The batch's expected end (matching.batch_end), over every arch: each arch's longest queued
# path (a loose index scan over tasks_queued_path) and its fastest online host; and the
# leased tasks of the longest paths (at most $2, tasks_leased_path) with their current
# lease's start and host speed then, and their arch's fastest online host.
_BATCH_END = """
WITH RECURSIVE a AS (
    (SELECT arch FROM tasks WHERE state = 'queued' AND path IS NOT NULL ORDER BY arch LIMIT 1)
    UNION ALL SELECT n.arch FROM a CROSS JOIN LATERAL (SELECT t.arch FROM tasks t
        WHERE t.state = 'queued' AND t.path IS NOT NULL AND t.arch > a.arch
        ORDER BY t.arch LIMIT 1) n),
fastest AS (SELECT b.arch, max(coalesce(h.speed, $1)) AS speed
    FROM hosts h CROSS JOIN LATERAL unnest(h.build_arches) AS b(arch)
    WHERE h.state = 'online' GROUP BY b.arch)
SELECT extract(epoch FROM now())::float8 AS now, a.arch, f.speed AS fastest,
    (SELECT q.path FROM tasks q WHERE q.state = 'queued' AND q.arch = a.arch AND q.path IS NOT NULL
        ORDER BY q.path DESC LIMIT 1) AS path,
    NULL::float8 AS work, NULL::float8 AS leased_at, NULL::float8 AS speed
FROM a LEFT JOIN fastest f ON f.arch = a.arch
UNION ALL
SELECT extract(epoch FROM now())::float8, t.arch, f.speed, t.path, t.work,
    extract(epoch FROM l.created_at)::float8, coalesce(l.speed, $1)
FROM (SELECT * FROM tasks WHERE state = 'leased' AND path IS NOT NULL
    ORDER BY path DESC LIMIT $2) t
JOIN leases l ON l.lease_id = t.lease_id
LEFT JOIN fastest f ON f.arch = t.arch
"""
OUTLOOK_LEASES = 64  # of a host's open leases, those an outlook reads at most (its slots)
BATCH_END_RUNNING = 32  # leased tasks of the longest paths the batch's expected end reads


async def batch_end(conn: asyncpg.Connection) -> tuple[float, float]:
    """(now, the batch's end as now expected: matching.batch_end over the queued tasks of
    every arch and the leased ones of the longest paths), in the database's clock."""
    rows = await conn.fetch(_BATCH_END, NEUTRAL_SPEED, BATCH_END_RUNNING)
    if not rows:
        return 0.0, 0.0
    now = float(rows[0]["now"])
    queued, running = [], []
    for r in rows:
        if r["fastest"] is None or r["path"] is None:
            continue  # no online host builds the arch: it ends nothing sooner
        if r["leased_at"] is None:
            queued.append((r["path"], r["fastest"]))
        else:
            work = r["work"] or 0.0
            speed = r["speed"] if r["speed"] > 0 else NEUTRAL_SPEED
            ends = r["leased_at"] + work / speed
            running.append((ends, max(0.0, r["path"] - work), r["fastest"]))
    return now, batch_end_of(now, queued, running)


def leases_free_at(now: float, r: Any) -> list[float]:
    """matching.lease_frees_at of each lease a row lists (_OUTLOOK's, _COMING's arrays)."""
    leases = zip(
        r["leased_at"] or (),
        r["lease_work"] or (),
        r["lease_speed"] or (),
        r["lease_expires"] or (),
        r["lease_finished"] or (),
        strict=True,
    )
    return [lease_frees_at(now, *lease) for lease in leases]


async def outlooks(
    conn: asyncpg.Connection,
    arches: Sequence[str],
    hosts: int,
    deadline: float,
    work_pad: float | None = None,
    heavy_share: float | None = None,
) -> tuple[dict[str, Outlook], dict[str, list[HostView]]]:
    """What matching.declines weighs, per arch, in one statement (matching.build_outlook):
    each slot of the `hosts` fastest online hosts of the arch, free now or when its lease is
    expected to end (matching.lease_frees_at), and the batch's expected end as the deadline
    (`deadline`, from batch_end). Beside each outlook, the host of each of its `faster`
    entries (a task waits only for a host that may build it). `work_pad`, `heavy_share`:
    matching.Outlook's ([dispatcher] work_pad, heavy_share)."""
    rows = await conn.fetch(_OUTLOOK, list(arches), hosts, NEUTRAL_SPEED, OUTLOOK_LEASES)
    if not rows:
        return {}, {}
    by_arch: dict[str, list[Any]] = {}
    for r in rows:
        by_arch.setdefault(r["outlook_arch"], []).append(r)
    found, views = {}, {}
    for arch, of_arch in by_arch.items():
        now = float(of_arch[0]["outlook_now"])
        of_views = [host_view(r) for r in of_arch]
        slots = [
            HostSlots(
                view.speed,
                view.free_slots,
                leases_free_at(now, r),
            )
            for view, r in zip(of_views, of_arch, strict=True)
        ]
        built = build_outlook(
            now,
            slots,
            max(deadline, now),
            pad=ESTIMATE_PAD,
            pro_rata=True,
            work_pad=work_pad,
            heavy_share=heavy_share,
        )
        if built is None:
            continue
        found[arch], owners = built
        views[arch] = [of_views[k] for k in owners]
    return found, views


async def declined_for(conn: asyncpg.Connection, task_ids: Sequence[int]) -> dict[int, float]:
    """How long each of these tasks has been declined (left to a faster host), in seconds;
    those never declined since last queued are left out."""
    rows = await conn.fetch(
        "SELECT id, extract(epoch FROM now() - declined_at) AS age FROM tasks"
        " WHERE id = ANY($1::bigint[]) AND declined_at IS NOT NULL",
        list(task_ids),
    )
    return {r["id"]: float(r["age"]) for r in rows}


async def mark_declined(conn: asyncpg.Connection, reasons: Mapping[int, str]) -> None:
    """These queued tasks were left to a faster host: when that first happened (the decline
    bound counts from it) and why they wait."""
    await conn.execute(
        "UPDATE tasks t SET declined_at = coalesce(t.declined_at, now()),"
        " queue_reason = r.reason FROM unnest($1::bigint[], $2::text[]) AS r(id, reason)"
        " WHERE t.id = r.id AND t.state = 'queued'",
        list(reasons),
        list(reasons.values()),
    )


async def online_hosts_for(conn: asyncpg.Connection, arch: str, limit: int) -> list[HostView]:
    """Up to `limit` online hosts that build `arch`, free or not (to explain a wait)."""
    rows = await conn.fetch(
        "SELECT * FROM hosts WHERE state = 'online' AND build_arches @> ARRAY[$1::text] LIMIT $2",
        arch,
        limit,
    )
    return [host_view(r) for r in rows]


TASK_COLUMNS = (
    "t.id, t.arch, t.owner, t.class, t.priority, t.failures, t.refused_hosts, t.purpose,"
    " t.min_trust, t.exclude_hosts, t.exclude_owners, t.release, t.scratch, t.work, t.path"
)


# Per arch, its blocked chain links of the longest paths (at most $2, tasks_blocked_path),
# each with the leases of its predecessors' tasks still running (as _OUTLOOK reads them),
# kept only if every such task is running or done: its ready time is then known.
_COMING = f"""
SELECT {TASK_COLUMNS}, extract(epoch FROM now())::float8 AS coming_now, d.*
FROM unnest($1::text[]) AS a(arch)
CROSS JOIN LATERAL (SELECT * FROM tasks WHERE state = 'blocked' AND arch = a.arch
    AND path IS NOT NULL ORDER BY path DESC LIMIT $2) t
CROSS JOIN LATERAL (SELECT
        bool_and(p.state IN ('leased', 'verified', 'stored')) AS known,
        array_agg(extract(epoch FROM l.created_at)::float8) FILTER (WHERE r) AS leased_at,
        array_agg(p.work) FILTER (WHERE r) AS lease_work,
        array_agg(coalesce(l.speed, $3)) FILTER (WHERE r) AS lease_speed,
        array_agg(extract(epoch FROM l.expires_at)::float8) FILTER (WHERE r) AS lease_expires,
        array_agg(l.finished_at IS NOT NULL) FILTER (WHERE r) AS lease_finished
    FROM build_deps b JOIN tasks p ON p.build_id = b.after_build
    LEFT JOIN leases l ON l.lease_id = p.lease_id
    CROSS JOIN LATERAL (SELECT p.state = 'leased' AND l.lease_id IS NOT NULL AS r) s
    WHERE b.build_id = t.build_id) d
WHERE d.known
"""
COMING_LINKS = 16  # of an arch's blocked chain links, the longest paths matching.keeps weighs


async def coming(conn: asyncpg.Connection, arches: Sequence[str]) -> dict[str, list[Coming]]:
    """Per arch, the blocked chain links (of the COMING_LINKS longest paths) whose every
    predecessor's task is leased or done, longest path first, with when the last of those
    leases is expected to end (matching.lease_frees_at; an overdue one at its expiry): what
    matching.keeps keeps a fast slot for. One statement (tasks_blocked_path)."""
    rows = await conn.fetch(_COMING, list(arches), COMING_LINKS, NEUTRAL_SPEED)
    found: dict[str, list[Coming]] = {}
    for r in rows:
        now = float(r["coming_now"])
        ready = max(leases_free_at(now, r), default=now)
        found.setdefault(r["arch"], []).append(Coming(task_view(r), ready))
    for links in found.values():
        links.sort(key=lambda c: (-(c.task.path or 0.0), c.task.task_id))
    return found


# An owner's usage key with the charges `p.term` this transaction has yet to write
# (fairshare.add_key in SQL, as charge_many writes it).
_KEY = (
    "CASE WHEN p.term IS NULL THEN u.usage_key WHEN u.usage_key IS NULL THEN p.term"
    " ELSE GREATEST(u.usage_key, p.term)"
    " + ln(1 + power(2, -abs(u.usage_key - p.term))) / ln(2) END"
)


async def pull_candidates(
    conn: asyncpg.Connection,
    host: HostView,
    per_owner: int,
    limit: int,
    owners: int,
    pending: Mapping[str, float],
    spread: int = 0,
    per_owner_cap: int | None = None,
) -> tuple[list[TaskView], dict[str, float]]:
    """Queued tasks `host` may build by arch and release: the first `per_owner` (or, for
    hosts pulling together, `spread` shared among the owners probed, up to `per_owner_cap`)
    of each of the `owners` least-used owners with queued tasks in the best class (a loose
    index scan finds the owners waiting, then one probe each, all on tasks_queued_owner_path:
    work grows with the owners waiting and the free slots, not with the queued tasks),
    locked (skipping those another transaction holds); in order of class, owner's usage,
    priority, critical path (the longest first, none last: matching.TaskView.path), age.
    Usage counts the charges `pending` (by owner) that the caller's transaction has yet to
    write. Also returns the stored usage key (without `pending`) of
    each owner of a candidate that has one. The rest of the matching (trust, exclusions) and
    the fair share among owners is the caller's (matching, fairshare)."""
    rows = await conn.fetch(
        "WITH RECURSIVE q AS ("
        "  (SELECT class, owner FROM tasks WHERE state = 'queued' ORDER BY class, owner LIMIT 1)"
        "  UNION ALL SELECT n.class, n.owner FROM q CROSS JOIN LATERAL (SELECT t.class, t.owner"
        "    FROM tasks t WHERE t.state = 'queued' AND (t.class, t.owner) > (q.class, q.owner)"
        "    ORDER BY t.class, t.owner LIMIT 1) n)"
        # The owners first: only the `owners` least-used of the best classes are probed.
        f" SELECT c.*, o.stored_key FROM (SELECT q.class, q.owner, {_KEY} AS usage_key,"
        "   u.usage_key AS stored_key, LEAST(count(*) OVER (), $5) AS n"
        "   FROM q LEFT JOIN owner_usage u ON u.owner = q.owner"
        "   LEFT JOIN unnest($6::text[], $7::float8[]) AS p(owner, term) ON p.owner = q.owner"
        "   ORDER BY q.class, 3 NULLS FIRST, q.owner LIMIT $5) o"
        # Each owner's first tasks, locked as they are found: those another transaction
        # holds are skipped (it is leasing them), and the state is checked again on the
        # newest row version, so a task another dispatcher leased meanwhile is left out.
        f" CROSS JOIN LATERAL (SELECT {TASK_COLUMNS} FROM tasks t"
        "   WHERE t.state = 'queued' AND t.class = o.class AND t.owner = o.owner"
        "   AND t.arch = ANY($1::text[]) AND (t.release IS NULL OR t.release = ANY($2::text[]))"
        "   ORDER BY t.priority DESC, t.path DESC NULLS LAST, t.id"
        "   LIMIT LEAST($8, GREATEST($3, ceil($9::float8 / o.n)))::int"
        "   FOR UPDATE OF t SKIP LOCKED) c"
        " ORDER BY o.class, o.usage_key NULLS FIRST, o.owner, c.priority DESC,"
        " c.path DESC NULLS LAST, c.id LIMIT $4",
        list(host.arches),
        list(host.releases),
        per_owner,
        limit,
        owners,
        list(pending),
        list(pending.values()),
        max(per_owner, per_owner_cap or 0),
        spread,
    )
    keys = {r["owner"]: r["stored_key"] for r in rows if r["stored_key"] is not None}
    return [task_view(r) for r in rows], keys


async def queued_tasks(conn: asyncpg.Connection, task_ids: list[int]) -> list[TaskView]:
    rows = await conn.fetch(
        f"SELECT {TASK_COLUMNS} FROM tasks t WHERE t.id = ANY($1::bigint[])"
        " AND t.state = 'queued' ORDER BY t.id",
        task_ids,
    )
    return [task_view(r) for r in rows]


async def charge_many(conn: asyncpg.Connection, terms: Mapping[str, float]) -> None:
    """Add charges (fairshare.charge_term, by owner) to the owners' usage keys
    (fairshare.add_key), in one statement and in owner order: concurrent transactions that
    charge the same owners wait on each other's rows only until commit, never in a cycle."""
    if not terms:
        return
    owners = sorted(terms)
    await conn.execute(
        "INSERT INTO owner_usage AS u (owner, usage_key)"
        " SELECT * FROM unnest($1::text[], $2::float8[]) ORDER BY 1"
        " ON CONFLICT (owner) DO UPDATE SET usage_key ="
        " GREATEST(u.usage_key, EXCLUDED.usage_key)"
        " + ln(1 + power(2, -abs(u.usage_key - EXCLUDED.usage_key))) / ln(2)",
        owners,
        [terms[o] for o in owners],
    )


async def set_queue_reasons(conn: asyncpg.Connection, reasons: dict[int, str]) -> None:
    """Why each of these queued tasks is not running now."""
    await conn.execute(
        "UPDATE tasks t SET queue_reason = r.reason FROM unnest($1::bigint[], $2::text[])"
        " AS r(id, reason) WHERE t.id = r.id AND t.state = 'queued'"
        " AND t.queue_reason IS DISTINCT FROM r.reason",
        list(reasons),
        list(reasons.values()),
    )


async def queued_from(conn: asyncpg.Connection, after: int, limit: int) -> list[TaskView]:
    """Up to `limit` queued tasks with ids above `after`, oldest first (tasks_queued_id: the
    scan stops at `limit` found, whatever the number of tasks done)."""
    rows = await conn.fetch(
        f"SELECT {TASK_COLUMNS} FROM tasks t WHERE t.state = 'queued' AND t.id > $1"
        " ORDER BY t.id LIMIT $2",
        after,
        limit,
    )
    return [task_view(r) for r in rows]


async def refresh_queue_reasons(conn: asyncpg.Connection, reasons: dict[int, str]) -> int:
    """Like set_queue_reasons, but a task another transaction holds is left as it is (a pull
    is leasing it, or a handler is moving it on: its reason is that one's to write), so a
    refresh never waits on, or deadlocks with, the everyday paths. How many changed."""
    done = await conn.fetchval(
        "WITH r AS (SELECT * FROM unnest($1::bigint[], $2::text[]) AS r(id, reason)),"
        " free AS (SELECT t.id FROM tasks t JOIN r ON r.id = t.id WHERE t.state = 'queued'"
        " AND t.queue_reason IS DISTINCT FROM r.reason ORDER BY t.id FOR UPDATE OF t SKIP LOCKED),"
        " u AS (UPDATE tasks t SET queue_reason = r.reason FROM r, free"
        " WHERE t.id = r.id AND free.id = t.id RETURNING 1)"
        " SELECT count(*) FROM u",
        list(reasons),
        list(reasons.values()),
    )
    return int(done)


# What lease_many returns of a lease: the task.leased message's fields (handlers.
# lease_message) and what its log line names. Not every task column: a batch returns hundreds.
LEASED = (
    "t.id, t.build_id, t.lease_id, t.host, t.arch, t.owner, t.release, t.scratch,"
    " t.lease_expires, t.purpose, t.repos, b.nvr, b.srpm_url, b.srpm_sha256"
)


async def lease_many(
    conn: asyncpg.Connection,
    leases: Sequence[tuple[TaskView, HostView]],
    lease_seconds: int,
) -> list[asyncpg.Record]:
    """Lease tasks to hosts in one statement, each recorded in leases; returns, for each, the
    columns of LEASED (its task's, and its build's that the lease message names). A build
    lease counts in attempts, a replica or tie-break in replica_attempts (each bounded by
    handlers.MAX_ATTEMPTS)."""
    if not leases:
        return []
    return await conn.fetch(
        "WITH a AS (SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[])"
        " AS a(id, host, host_owner)),"
        " l AS (UPDATE tasks t SET state = 'leased', host = a.host,"
        " lease_id = gen_random_uuid(),"
        " attempts = attempts + (t.purpose = 'build')::int,"
        " replica_attempts = replica_attempts + (t.purpose <> 'build')::int,"
        " lease_expires = now() + make_interval(secs => $4), updated_at = now(),"
        " queue_reason = NULL, declined_at = NULL FROM a, builds b"
        " WHERE t.id = a.id AND b.id = t.build_id"
        f" RETURNING {LEASED}, a.host_owner),"
        # The host's speed factor now: its build's duration at the farm's pace (critical.py).
        " recorded AS (INSERT INTO leases (lease_id, task_id, host, owner, purpose, expires_at,"
        " speed) SELECT l.lease_id, l.id, l.host, l.host_owner, l.purpose, l.lease_expires,"
        " h.speed FROM l LEFT JOIN hosts h ON h.host = l.host)"
        " SELECT * FROM l ORDER BY id",
        [task.task_id for task, _ in leases],
        [host.host for _, host in leases],
        [host.owner for _, host in leases],
        lease_seconds,
    )


async def task_by_lease(conn: asyncpg.Connection, lease_id: str) -> asyncpg.Record | None:
    """The task currently holding this lease (locked); None for expired or unknown leases."""
    return await conn.fetchrow("SELECT * FROM tasks WHERE lease_id = $1::uuid FOR UPDATE", lease_id)


async def lease_and_task(
    conn: asyncpg.Connection, lease_id: str
) -> tuple[asyncpg.Record, asyncpg.Record] | None:
    """Any lease the task ever had (not only its current one) and its task, locked."""
    found = await conn.fetchrow(
        "SELECT l.lease_id, l.task_id, l.state AS lease_state, l.host AS lease_host"
        " FROM leases l JOIN tasks t ON t.id = l.task_id WHERE l.lease_id = $1::uuid"
        " FOR UPDATE OF t, l",
        lease_id,
    )
    if found is None:
        return None
    task = await conn.fetchrow("SELECT * FROM tasks WHERE id = $1", found["task_id"])
    return found, task


async def end_lease(
    conn: asyncpg.Connection, lease_id: Any, state: str, *, only_from: tuple[str, ...] = ("open",)
) -> None:
    """Move a lease on (finished, accepted, refused, expired, failed, superseded)."""
    await conn.execute(
        "UPDATE leases SET state = $2 WHERE lease_id = $1 AND state = ANY($3::text[])",
        lease_id,
        state,
        list(only_from),
    )


async def supersede_leases(conn: asyncpg.Connection, task_id: int, keep: Any) -> None:
    """The task was accepted through lease `keep`: its other leases' results are not stored."""
    await conn.execute(
        "UPDATE leases SET state = 'superseded' WHERE task_id = $1 AND lease_id <> $2"
        " AND state IN ('open', 'finished')",
        task_id,
        keep,
    )


async def awaits_agreement(conn: asyncpg.Connection, task_id: int) -> bool:
    """Whether a succeeded result of the task waits for another to agree with it."""
    return await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM leases WHERE task_id = $1 AND state = 'finished')", task_id
    )


async def task_leases(conn: asyncpg.Connection, task_ids: list[int]) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT * FROM leases WHERE task_id = ANY($1::bigint[]) ORDER BY created_at, lease_id",
        task_ids,
    )


async def extend_lease(
    conn: asyncpg.Connection, task_id: int, seconds: float, *, finished: bool = False
) -> None:
    """Push the task's current lease's expiry to at least `seconds` from now; `finished`:
    its host reported the build done."""
    expires = await conn.fetchval(
        "UPDATE tasks SET lease_expires = GREATEST(lease_expires,"
        " now() + make_interval(secs => $2)), updated_at = now() WHERE id = $1"
        " RETURNING lease_expires",
        task_id,
        seconds,
    )
    await conn.execute(
        "UPDATE leases l SET expires_at = $2,"
        " finished_at = CASE WHEN $3 THEN coalesce(l.finished_at, now()) ELSE l.finished_at END"
        " FROM tasks t WHERE t.id = $1 AND l.lease_id = t.lease_id",
        task_id,
        expires,
        finished,
    )


async def lock_task(conn: asyncpg.Connection, task_id: int) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM tasks WHERE id = $1 FOR UPDATE", task_id)


async def set_task(conn: asyncpg.Connection, task_id: int, state: str, **fields: Any) -> None:
    columns = {"state": state, **fields}
    for name in JSON_COLUMNS:
        if name in columns:
            columns[name] = json.dumps(columns[name])
    assignments = ", ".join(f"{name} = ${i}" for i, name in enumerate(columns, start=2))
    await conn.execute(
        f"UPDATE tasks SET {assignments}, updated_at = now() WHERE id = $1",
        task_id,
        *columns.values(),
    )


async def refuse_host(conn: asyncpg.Connection, task_id: int, host: str) -> None:
    await conn.execute(
        "UPDATE tasks SET refused_hosts = array_append(refused_hosts, $2) WHERE id = $1",
        task_id,
        host,
    )


async def requeue(conn: asyncpg.Connection, task_id: int, reason: str, **fields: Any) -> None:
    await set_task(
        conn,
        task_id,
        "queued",
        host=None,
        lease_id=None,
        lease_expires=None,
        reason=reason,
        declined_at=None,
        **fields,
    )


async def cancel_queued(conn: asyncpg.Connection, build_id: int, reason: str) -> None:
    """Fail the build's tasks that wait for a host (leased ones finish or expire as usual)."""
    await conn.execute(
        "UPDATE tasks SET state = 'failed', reason = $2, updated_at = now()"
        " WHERE build_id = $1 AND state = 'queued'",
        build_id,
        reason,
    )


async def expired_leases(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """Leases past expiry whose results never got stored.

    'verified' counts too: if the collector refuses what the verifier accepted (say, RPMs of
    another SRPM than the lease's), nothing else would ever move the task on.
    """
    return await conn.fetch(
        "SELECT * FROM tasks WHERE state IN ('leased', 'verified') AND lease_expires < now()"
        " FOR UPDATE SKIP LOCKED"
    )


async def finish_build(
    conn: asyncpg.Connection, build_id: int, state: str, reason: str | None = None
) -> asyncpg.Record | None:
    """Move a building build to its final state once; None if it was already final."""
    return await conn.fetchrow(
        "UPDATE builds SET state = $2, reason = $3, finished_at = now()"
        " WHERE id = $1 AND state = 'building' RETURNING *",
        build_id,
        state,
        reason,
    )


async def active_builds(conn: asyncpg.Connection, owner: str, *, besides: int) -> int:
    """How many builds `owner` has in progress, other than build `besides`.

    An advisory lock per owner, held to the end of the transaction, makes concurrent requests
    of one owner count one after the other (each sees the builds the others committed).
    """
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"quota:{owner}")
    return await conn.fetchval(
        "SELECT count(*) FROM builds WHERE owner = $1 AND state = 'building' AND id <> $2",
        owner,
        besides,
    )


async def throttle(conn: asyncpg.Connection) -> Throttle:
    """The farm-wide throttle as last announced (throttle.py keeps it)."""
    row = await conn.fetchrow("SELECT engaged, bad_rate, results FROM throttle WHERE id = 1")
    return Throttle() if row is None else Throttle(row["engaged"], row["bad_rate"], row["results"])
