"""`POST /api/v1/builds/{id}/cancel`: the build's owner stops it.

Its waiting tasks fail, its open leases are revoked (task.revoked to each lease's host, whose
agent stops the build within seconds), and the build fails with "cancelled by <owner>" (which
fails the chain links that come after it). The owner is whoever the registry says the
Bearer token belongs to (services/common/owner_tokens.py, as for the collector's uploads).
"""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
from aiohttp import web
from skyline_messages import TaskRevokedV1

from services.common import owner_tokens
from services.common.http import error
from services.common.service import RUNTIME, Context

from . import handlers

log = logging.getLogger(__name__)
routes = web.RouteTableDef()


@routes.post("/api/v1/builds/{build_id:\\d{1,18}}/cancel")
async def cancel_build(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    owner = await owner_tokens.owner_of(request, runtime, runtime.config.dispatcher.registry_url)
    build_id = int(request.match_info["build_id"])
    async with runtime.transaction() as ctx:
        build = await ctx.conn.fetchrow("SELECT * FROM builds WHERE id = $1 FOR UPDATE", build_id)
        if build is None:
            raise error(404, f"no build {build_id}")
        if build["owner"] != owner:
            raise error(
                403, f"build {build_id} is {build['owner']}'s: only its owner may cancel it"
            )
        if build["state"] != "building":
            raise error(409, f"build {build_id} is already {build['state']}")
        reason = f"cancelled by {owner}"
        revoked = await revoke_leases(ctx, build, reason)
        cancelled = await ctx.conn.fetchval(
            "WITH t AS (UPDATE tasks SET state = 'failed', reason = $2, waiting = NULL,"
            " updated_at = now() WHERE build_id = $1"
            " AND state IN ('blocked', 'queued', 'leased') RETURNING 1) SELECT count(*) FROM t",
            build_id,
            reason,
        )
        await handlers.fail_build(ctx, build_id, reason)
    log.info("build %s cancelled by %s: %d lease(s) revoked", build_id, owner, len(revoked))
    return web.json_response(
        {
            "build_id": build_id,
            "state": "failed",
            "reason": reason,
            "cancelled_tasks": cancelled,
            "revoked": revoked,
        }
    )


async def revoke_leases(ctx: Context, build: asyncpg.Record, reason: str) -> list[dict[str, Any]]:
    """End the build's open leases as 'revoked' and tell each host to stop its build."""
    rows = await ctx.conn.fetch(
        "UPDATE leases l SET state = 'revoked' FROM tasks t"
        " WHERE t.id = l.task_id AND t.build_id = $1 AND l.state = 'open'"
        " RETURNING l.lease_id, l.host, t.id AS task_id, t.arch",
        build["id"],
    )
    for r in rows:
        body = {
            "task_id": r["task_id"],
            "build_id": build["id"],
            "lease_id": str(r["lease_id"]),
            "host": r["host"],
            "arch": r["arch"],
            "nvr": build["nvr"],
            "reason": reason,
        }
        await ctx.publish(TaskRevokedV1(body=body, topic=TaskRevokedV1.topic_for(r["host"])))
    return [{"lease_id": str(r["lease_id"]), "host": r["host"]} for r in rows]


ROUTES = list(routes)
