"""The registry's SQL: hosts and their last known status."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

import asyncpg
from skyline_messages import HostEnrolledV1, HostStatusV1
from skyline_messages.host import SLOTS

MAX_SLOTS: int = SLOTS["maximum"]  # type: ignore[assignment]  # the schema's own bound

PROFILE = ("arches", "releases", "cpus", "memory_mb", "disk_gb")


async def get_host(conn: asyncpg.Connection, host: str) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM hosts WHERE host = $1", host)


async def insert_host(
    conn: asyncpg.Connection, body: Mapping[str, Any], signed_at: datetime.datetime
) -> asyncpg.Record:
    return await conn.fetchrow(
        "INSERT INTO hosts (host, owner, public_key, arches, releases, cpus, memory_mb, disk_gb,"
        " trust, enrol_signed_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING *",
        body["host"],
        body["owner"],
        body["public_key"],
        body["arches"],
        body["releases"],
        body.get("cpus"),
        body.get("memory_mb"),
        body.get("disk_gb"),
        body["trust"],
        signed_at,
    )


async def update_profile(
    conn: asyncpg.Connection, body: dict[str, Any], signed_at: datetime.datetime
) -> asyncpg.Record:
    """A re-enrolling host (same key, signed) may change its hardware profile, nothing else."""
    return await conn.fetchrow(
        "UPDATE hosts SET arches = $2, releases = $3, cpus = $4, memory_mb = $5, disk_gb = $6,"
        " enrol_signed_at = $7 WHERE host = $1 RETURNING *",
        body["host"],
        *(body.get(k) for k in PROFILE),
        signed_at,
    )


async def record_heartbeat(
    conn: asyncpg.Connection, host: str, free_slots: int, running: int, signed_at: datetime.datetime
) -> asyncpg.Record | None:
    """Mark the host online unless the heartbeat is older than one already seen (a replay)."""
    return await conn.fetchrow(
        "UPDATE hosts SET free_slots = $2, running = $3, last_signed_at = $4,"
        " last_heartbeat = now(),"
        " state = CASE WHEN state = 'quarantined' THEN state ELSE 'online' END"
        " WHERE host = $1 AND (last_signed_at IS NULL OR last_signed_at < $4) RETURNING *",
        host,
        free_slots,
        running,
        signed_at,
    )


async def set_state(conn: asyncpg.Connection, host: str, state: str) -> asyncpg.Record | None:
    """An admin's decision: quarantine or release (to offline until its next heartbeat)."""
    return await conn.fetchrow(
        "UPDATE hosts SET state = $2, free_slots = 0 WHERE host = $1 RETURNING *", host, state
    )


async def mark_offline(conn: asyncpg.Connection, silent_for: float) -> list[asyncpg.Record]:
    return await conn.fetch(
        "UPDATE hosts SET state = 'offline', free_slots = 0 WHERE state = 'online'"
        " AND last_heartbeat < now() - make_interval(secs => $1) RETURNING *",
        silent_for,
    )


def public_view(row: asyncpg.Record) -> dict[str, Any]:
    """A host as the HTTP API shows it (keys are public; nothing here is secret)."""
    view = dict(row)
    view.pop("enrol_signed_at", None)
    for key in ("last_heartbeat", "last_signed_at", "enrolled_at"):
        view[key] = view[key].isoformat() if view[key] else None
    return view


def enrolled_message(row: asyncpg.Record) -> HostEnrolledV1:
    body = {k: row[k] for k in ("host", "owner", "public_key", "trust", *PROFILE)}
    return HostEnrolledV1(body={k: v for k, v in body.items() if v is not None})


def status_message(row: asyncpg.Record) -> HostStatusV1:
    """The host's status; its slots capped by what it enrolled (one per CPU, 1 if unknown).

    A heartbeat is the host's own word: without the cap, a host could claim 1,024 free slots
    and win every lease. The dispatcher also counts its own open leases against max_slots.
    """
    seen = row["last_heartbeat"] or row["enrolled_at"]
    max_slots = min(int(row["cpus"] or 1), MAX_SLOTS)
    online = row["state"] == "online"
    return HostStatusV1(
        body={
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
        }
    )
