"""Trust levels over HTTP: an admin sets a host's level; anyone reads a host's trust history.

POST /api/v1/hosts/{host}/trust  {"trust": "core"|"trusted"|"untrusted", "reason": "..."}
     (admin) -> 200 {"host", "trust", "record", "transition"}
GET  /api/v1/hosts/{host}/trust[?limit=N]
     -> 200 {"host", "owner", "trust", "record", "transitions"} (newest first)

An admin decision is recorded, applied and published (`host.trust`, then a fresh
`host.status` so the dispatcher schedules on the new level) in one transaction.
"""

from __future__ import annotations

import json
import logging

from aiohttp import web
from skyline_messages.host import TRUST_REASON

from services.common.http import error, query_limit
from services.common.service import RUNTIME

from . import owners_api, store, trust, trust_store

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

# Levels an admin may set here; quarantine is the /quarantine call (it also cuts the host off).
ADMIN_LEVELS = (trust.Trust.CORE, trust.Trust.TRUSTED, trust.Trust.UNTRUSTED)
ADMIN_AGENT = "admin"  # the admin token names nobody in particular
MAX_REASON: int = TRUST_REASON["maxLength"]  # type: ignore[assignment]  # the schema's bound
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


async def _decision(request: web.Request) -> tuple[trust.Trust, str]:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise error(400, "request body is not JSON") from None
    if not isinstance(body, dict) or set(body) != {"trust", "reason"}:
        raise error(400, 'the body must be {"trust": "<level>", "reason": "<why>"}')
    level, reason = body["trust"], body["reason"]
    if level not in ADMIN_LEVELS:
        raise error(400, f"trust must be one of {', '.join(ADMIN_LEVELS)}")
    if not isinstance(reason, str) or not reason.strip() or len(reason) > MAX_REASON:
        raise error(400, f"reason must be a non-blank string of at most {MAX_REASON} characters")
    return trust.Trust(level), reason.strip()


@routes.post("/api/v1/hosts/{host}/trust")
async def set_trust(request: web.Request) -> web.Response:
    owners_api.check_admin(request)
    level, reason = await _decision(request)
    host = request.match_info["host"]
    runtime = request.app[RUNTIME]
    async with runtime.transaction() as ctx:
        row = await trust_store.lock_host(ctx.conn, host)
        if row is None:
            raise error(404, f"no host named {host!r} is enrolled")
        state, transition = trust.set_by_admin(
            trust_store.host_trust(row), level, ADMIN_AGENT, reason
        )
        recorded = await trust_store.record_transition(ctx.conn, transition)
        row = await trust_store.save(ctx.conn, state)
        await ctx.publish(trust_store.trust_message(row["owner"], transition))
        await ctx.publish(store.status_message(row))
    log.warning("host %s trust %s -> %s by an admin: %s", host, transition.old, level, reason)
    return web.json_response(
        {
            "host": host,
            "trust": row["trust"],
            "record": trust_store.record_view(row),
            "transition": trust_store.transition_view(recorded),
        }
    )


def _limit(request: web.Request) -> int:
    return query_limit(request, DEFAULT_LIMIT, MAX_LIMIT)


@routes.get("/api/v1/hosts/{host}/trust")
async def get_trust(request: web.Request) -> web.Response:
    limit = _limit(request)
    host = request.match_info["host"]
    async with request.app[RUNTIME].pool.acquire() as conn, conn.transaction():
        row = await store.get_host(conn, host)
        if row is None:
            raise error(404, f"no host named {host!r} is enrolled")
        rows = await trust_store.transitions(conn, host, limit)
    return web.json_response(
        {
            "host": host,
            "owner": row["owner"],
            "trust": row["trust"],
            "record": trust_store.record_view(row),
            "transitions": [trust_store.transition_view(r) for r in rows],
        }
    )


ROUTES = list(routes)
