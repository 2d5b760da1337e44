"""Build and queue queries over HTTP (what `skyline status` and `skyline submit` follow)."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
from aiohttp import web

from services.common.http import error
from services.common.service import RUNTIME

from . import cancel, chain_routes, matching, store

routes = web.RouteTableDef()


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def lease_view(lease: asyncpg.Record) -> dict[str, Any]:
    return {
        "lease_id": str(lease["lease_id"]),
        "host": lease["host"],
        "owner": lease["owner"],
        "purpose": lease["purpose"],
        "state": lease["state"],
        "created_at": _iso(lease["created_at"]),
        "expires_at": _iso(lease["expires_at"]),
        "finished_at": _iso(lease["finished_at"]),
    }


def task_view(task: asyncpg.Record, leases: list[asyncpg.Record]) -> dict[str, Any]:
    return {
        "task_id": task["id"],
        "arch": task["arch"],
        "state": task["state"],
        "host": task["host"],
        "attempts": task["attempts"],
        "result_digest": task["result_digest"],
        "reason": task["reason"],
        "files": json.loads(task["files"]),
        # What its next lease is for and who may take it (a replica the verifier asked for),
        # why it waits, and once accepted, who agreed and the rule met.
        "purpose": task["purpose"],
        "min_trust": task["min_trust"],
        "exclude_hosts": list(task["exclude_hosts"]),
        "exclude_owners": list(task["exclude_owners"]),
        "waiting": task["waiting"],
        # Why a queued task is not running now (the matcher's word at the last scheduling
        # pass that left it unassigned: "no online s390x host", "all 3 eligible hosts busy").
        "queue_reason": task["queue_reason"] if task["state"] == "queued" else None,
        # Its critical-path weights (critical.py), estimated seconds at the farm's pace: its
        # own build's and the longest path through the chain from it; null without history.
        "work": task["work"],
        "path": task["path"],
        "agreeing": json.loads(task["agreeing"]),
        "rule": task["rule"],
        "leases": [lease_view(lease) for lease in leases],
    }


async def build_view(conn: asyncpg.Connection, build: asyncpg.Record) -> dict[str, Any]:
    tasks = await store.build_tasks(conn, build["id"])
    leases = await store.task_leases(conn, [t["id"] for t in tasks])
    return {
        "build_id": build["id"],
        "request_id": build["request_id"],
        "owner": build["owner"],
        "nvr": build["nvr"],
        "state": build["state"],
        "reason": build["reason"],
        "scratch": build["scratch"],
        "srpm_url": build["srpm_url"],
        "created_at": _iso(build["created_at"]),
        "finished_at": _iso(build["finished_at"]),
        # Why the build is not complete yet (e.g. "waiting for agreement: ..."), per task.
        "waiting": [
            f"{t['arch']}: {t['waiting']}"
            for t in tasks
            if t["waiting"] and t["state"] in ("queued", "leased")
        ],
        "queued": [
            f"{t['arch']}: {t['queue_reason']}"
            for t in tasks
            if t["queue_reason"] and t["state"] == "queued"
        ],
        "tasks": [
            task_view(t, [lease for lease in leases if lease["task_id"] == t["id"]]) for t in tasks
        ],
    }


@routes.get("/api/v1/builds/{build_id:\\d+}")
async def get_build(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    build_id = int(request.match_info["build_id"])
    async with runtime.pool.acquire() as conn:
        build = await store.get_build(conn, build_id)
        if build is None:
            raise error(404, f"no build {build_id}")
        return web.json_response(await build_view(conn, build))


@routes.get("/api/v1/builds")
async def find_builds(request: web.Request) -> web.Response:
    """Builds by request (message) id, so a submitter can find the build its request made."""
    runtime = request.app[RUNTIME]
    request_id = request.query.get("request_id")
    async with runtime.pool.acquire() as conn:
        if request_id:
            rows = await conn.fetch("SELECT * FROM builds WHERE request_id = $1", request_id)
        else:
            rows = await conn.fetch("SELECT * FROM builds ORDER BY id DESC LIMIT 50")
        return web.json_response({"builds": [await build_view(conn, r) for r in rows]})


# The queue lists at most this many waiting tasks (queued ones, and leased ones that wait for
# agreement), oldest first.
WAITING_LISTED = 200


@routes.get("/api/v1/queue")
async def queue(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    async with runtime.pool.acquire() as conn:
        tasks = await conn.fetch("SELECT state, count(*) AS n FROM tasks GROUP BY state")
        hosts = await conn.fetch(
            "SELECT h.host, h.state, h.trust, h.free_slots, h.running, h.max_slots,"
            " (SELECT count(*) FROM leases l WHERE l.host = h.host AND l.state = 'open')"
            " AS open_leases FROM hosts h ORDER BY h.host"
        )
        waiting = await conn.fetch(
            "SELECT id, build_id, arch, state, purpose, min_trust, waiting,"
            " CASE WHEN state = 'queued' THEN queue_reason END AS queue_reason FROM tasks"
            " WHERE state = 'queued' OR (waiting IS NOT NULL AND state = 'leased')"
            " ORDER BY id LIMIT $1",
            WAITING_LISTED,
        )
        throttle = await conn.fetchrow("SELECT * FROM throttle WHERE id = 1")
    return web.json_response(
        {
            "tasks": {r["state"]: r["n"] for r in tasks},
            # The farm-wide throttle as the verifier last announced it (throttle.py).
            "throttle": {
                "engaged": bool(throttle and throttle["engaged"]),
                "reason": throttle and throttle["reason"],
                "changed_at": _iso(throttle and throttle["changed_at"]),
            },
            "hosts": [_capacity(h) for h in hosts],
            "waiting": [
                {
                    "task_id": w["id"],
                    "build_id": w["build_id"],
                    "arch": w["arch"],
                    "state": w["state"],
                    "purpose": w["purpose"],
                    "min_trust": w["min_trust"],
                    "waiting": w["waiting"],
                    "queue_reason": w["queue_reason"],
                }
                for w in waiting
            ],
        }
    )


def _capacity(row: Any) -> dict[str, Any]:
    """A host as the dispatcher counts it: what it advertised, and what it may still take."""
    free = matching.free_slots(
        row["free_slots"], row["running"], row["max_slots"], row["open_leases"]
    )
    return {
        "host": row["host"],
        "state": row["state"],
        "trust": row["trust"],
        "advertised_free_slots": row["free_slots"],
        "max_slots": row["max_slots"],
        "open_leases": row["open_leases"],
        "free_slots": free if row["state"] == "online" else 0,
    }


ROUTES = [*routes, *cancel.ROUTES, *chain_routes.ROUTES]
