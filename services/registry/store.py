"""The registry's SQL: hosts and their last known status."""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg
from skyline_messages import HostEnrolledV1, HostStatusV1
from skyline_messages.host import SLOTS

MAX_SLOTS: int = SLOTS["maximum"]  # type: ignore[assignment]  # the schema's own bound

PROFILE = (
    "arches",
    "releases",
    "cpus",
    "memory_mb",
    "disk_gb",
    "mock_configs",
    "location",
    "agent_version",
    "sandbox",
)
BOOKKEEPING = ("status_published", "status_published_at", "enrol_signed_at")  # not shown


async def get_host(conn: asyncpg.Connection, host: str) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM hosts WHERE host = $1", host)


async def insert_host(
    conn: asyncpg.Connection, msg: HostEnrolledV1, signed_at: datetime.datetime
) -> asyncpg.Record:
    return await conn.fetchrow(
        "INSERT INTO hosts (host, owner, public_key, trust, enrol_signed_at, arches, releases,"
        " cpus, memory_mb, disk_gb, mock_configs, location, agent_version, sandbox)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, coalesce($11::text[], '{}'),"
        " $12, $13, $14)"
        " RETURNING *",
        msg.host,
        msg.owner,
        msg.public_key,
        msg.trust,
        signed_at,
        *_profile(msg),
    )


async def update_profile(
    conn: asyncpg.Connection, msg: HostEnrolledV1, signed_at: datetime.datetime
) -> asyncpg.Record:
    """A re-enrolling host (same key, signed) may change its hardware profile, nothing else."""
    return await conn.fetchrow(
        "UPDATE hosts SET arches = $2, releases = $3, cpus = $4, memory_mb = $5, disk_gb = $6,"
        " mock_configs = coalesce($7::text[], '{}'), location = $8, agent_version = $9,"
        " sandbox = $10,"
        " enrol_signed_at = $11 WHERE host = $1 RETURNING *",
        msg.host,
        *_profile(msg),
        signed_at,
    )


def _profile(msg: HostEnrolledV1) -> tuple[Any, ...]:
    """The enrolment's PROFILE fields, in that order (None: not said)."""
    return (
        msg.arches,
        msg.releases,
        msg.cpus,
        msg.memory_mb,
        msg.disk_gb,
        msg.mock_configs,
        msg.location,
        msg.agent_version,
        msg.sandbox,
    )


async def state_reason(conn: asyncpg.Connection, reason: str) -> None:
    """Why the state changes this transaction makes happen: host_state_changes.reason (a
    trigger writes that history; unset, a change is put down to a heartbeat)."""
    await conn.execute("SELECT set_config('skyline.state_reason', $1, true)", reason)


async def set_state(conn: asyncpg.Connection, host: str, state: str) -> asyncpg.Record | None:
    """An admin's decision: quarantine or release (to offline until its next heartbeat)."""
    return await conn.fetchrow(
        "UPDATE hosts SET state = $2, free_slots = 0 WHERE host = $1 RETURNING *", host, state
    )


async def hosts_for_heartbeats(
    conn: asyncpg.Connection, hosts: Sequence[str]
) -> dict[str, asyncpg.Record]:
    rows = await conn.fetch(
        "SELECT host, public_key, last_signed_at FROM hosts WHERE host = ANY($1::text[])",
        list(hosts),
    )
    return {r["host"]: r for r in rows}


# A heartbeat to record: host, free_slots, running, signed_at, sandbox (None: unsaid).
Beat = tuple[str, int, int, datetime.datetime, str | None]


async def record_heartbeats(
    conn: asyncpg.Connection, beats: Sequence[Beat]
) -> list[asyncpg.Record]:
    """Mark the hosts online unless a heartbeat is older than one already seen (a replay), in
    one statement. A heartbeat that names its sandbox also updates the profile's (the host's
    latest word on it); one that does not keeps it.

    Hosts go in name order, so two batches lock their rows in the same order.
    """
    beats = sorted(beats, key=lambda b: b[0])
    return await conn.fetch(
        "UPDATE hosts h SET free_slots = v.free_slots, running = v.running,"
        " last_signed_at = v.signed_at, last_heartbeat = now(),"
        " sandbox = coalesce(v.sandbox, h.sandbox),"
        " state = CASE WHEN h.state = 'quarantined' THEN h.state ELSE 'online' END"
        " FROM unnest($1::text[], $2::int[], $3::int[], $4::timestamptz[], $5::text[])"
        " AS v(host, free_slots, running, signed_at, sandbox)"
        " WHERE h.host = v.host AND (h.last_signed_at IS NULL OR h.last_signed_at < v.signed_at)"
        " RETURNING h.*",
        *([b[i] for b in beats] for i in range(5)),
    )


def status_due(row: asyncpg.Record, refresh: float) -> bool:
    """Whether `row`'s status must be published: what consumers use changed, or a refresh is due."""
    if row["status_published"] is None or row["status_published_at"] is None:
        return True
    if json.loads(row["status_published"]) != status_fields(status_body(row)):
        return True
    age = datetime.datetime.now(datetime.UTC) - row["status_published_at"]
    return age.total_seconds() >= refresh


def status_fields(body: Mapping[str, Any]) -> dict[str, Any]:
    """What consumers of a status act on: all of it but the time it was seen."""
    return {k: v for k, v in body.items() if k != "seen_at"}


async def record_published(conn: asyncpg.Connection, statuses: Sequence[HostStatusV1]) -> None:
    if not statuses:
        return
    await conn.execute(
        "UPDATE hosts h SET status_published = v.fields::jsonb, status_published_at = now()"
        " FROM unnest($1::text[], $2::text[]) AS v(host, fields) WHERE h.host = v.host",
        [s.host for s in statuses],
        [json.dumps(status_fields(s.body)) for s in statuses],
    )


async def mark_offline(conn: asyncpg.Connection, silent_for: float) -> list[asyncpg.Record]:
    """Hosts silent longer than the grace period go offline (a failure, for their MTBF)."""
    await state_reason(conn, "silent")
    return await conn.fetch(
        "UPDATE hosts SET state = 'offline', free_slots = 0 WHERE state = 'online'"
        " AND last_heartbeat < now() - make_interval(secs => $1) RETURNING *",
        silent_for,
    )


def public_view(row: asyncpg.Record) -> dict[str, Any]:
    """A host as the HTTP API shows it (keys are public; nothing here is secret)."""
    view = {k: v for k, v in row.items() if k not in BOOKKEEPING}
    for key, value in view.items():
        if isinstance(value, datetime.datetime):
            view[key] = value.isoformat()
        elif isinstance(value, list):
            view[key] = list(value)
    return view


def enrolled_message(row: asyncpg.Record) -> HostEnrolledV1:
    body = {k: row[k] for k in ("host", "owner", "public_key", "trust", *PROFILE)}
    body["mock_configs"] = list(body["mock_configs"]) or None  # say nothing of an empty list
    return HostEnrolledV1(body={k: v for k, v in body.items() if v is not None})


def status_message(row: asyncpg.Record) -> HostStatusV1:
    """The host's status; its slots capped by what it enrolled (one per CPU, 1 if unknown).

    A heartbeat is the host's own word: without the cap, a host could claim 1,024 free slots
    and win every lease. The dispatcher also counts its own open leases against max_slots.
    """
    return HostStatusV1(body=status_body(row))


def status_body(row: Any) -> dict[str, Any]:
    seen = row["last_heartbeat"] or row["enrolled_at"]
    max_slots = min(int(row["cpus"] or 1), MAX_SLOTS)
    online = row["state"] == "online"
    return {
        "host": row["host"],
        "owner": row["owner"],
        "state": row["state"],
        "trust": row["trust"],
        "arches": list(row["arches"]),
        "releases": list(row["releases"]),
        "free_slots": min(row["free_slots"], max_slots) if online else 0,
        "running": min(row["running"], max_slots) if online else 0,
        "max_slots": max_slots,
        "seen_at": seen.isoformat(),
        **({} if row["qos_score"] is None else {"qos_score": round(float(row["qos_score"]), 2)}),
        # Two significant digits: a speed that drifts by a hair publishes no new status.
        **({} if row.get("speed_factor") is None else {"speed_factor": speed(row["speed_factor"])}),
    }


def speed(factor: float) -> float:
    """The speed factor as host.status says it: two significant digits, within its bounds."""
    return min(100.0, max(0.01, float(f"{float(factor):.2g}")))
