"""A host's quality of service, recent builds and availability history over HTTP (public,
as GET /api/v1/hosts/{host} is).

GET /api/v1/hosts/{host}/qos                     -> 200 {"host", "qos", "counters", "uptime", "at"}
GET /api/v1/hosts/{host}/builds[?limit=N]        -> 200 {"host", "builds"} (newest first)
GET /api/v1/hosts/{host}/availability[?limit=N]  -> 200 {"host", "changes"} (newest first)
"""

from __future__ import annotations

from aiohttp import web

from services.common.http import error, query_limit
from services.common.service import RUNTIME

from . import qos_events, qos_store, store

routes = web.RouteTableDef()
DEFAULT_LIMIT = 20
MAX_LIMIT = 1000


def _limit(request: web.Request) -> int:
    return query_limit(request, DEFAULT_LIMIT, MAX_LIMIT)


def _unknown(host: str) -> web.HTTPException:
    return error(404, f"no host named {host!r} is enrolled")


@routes.get("/api/v1/hosts/{host}/qos")
async def get_qos(request: web.Request) -> web.Response:
    host = request.match_info["host"]
    runtime = request.app[RUNTIME]
    async with runtime.pool.acquire() as conn, conn.transaction(readonly=True):
        row = await store.get_host(conn, host)
        if row is None:
            raise _unknown(host)
        figures = await qos_events.compute(conn, row, runtime.config.registry.qos)
    return web.json_response({"host": host, **figures})


@routes.get("/api/v1/hosts/{host}/builds")
async def get_builds(request: web.Request) -> web.Response:
    limit, host = _limit(request), request.match_info["host"]
    async with request.app[RUNTIME].pool.acquire() as conn:
        if await store.get_host(conn, host) is None:
            raise _unknown(host)
        builds = await qos_store.recent_builds(conn, host, limit)
    return web.json_response({"host": host, "builds": builds})


@routes.get("/api/v1/hosts/{host}/availability")
async def get_availability(request: web.Request) -> web.Response:
    limit, host = _limit(request), request.match_info["host"]
    async with request.app[RUNTIME].pool.acquire() as conn:
        if await store.get_host(conn, host) is None:
            raise _unknown(host)
        changes = await qos_store.state_changes(conn, host, limit)
    return web.json_response({"host": host, "changes": changes})


ROUTES = list(routes)
