"""HTTP: the statistics as JSON, and the dashboard pages that show them (dashboard.py).

GET /api/v1/stats/summary       builds per hour (last 24 h), build counts, disagreement rate,
                                throttle state
GET /api/v1/stats/leaderboard   {"owners": [...], "hosts": [...]}: credit, valid rate,
                                accepted/refused results, build hours; ?limit= (1-500, 100)
GET /api/v1/stats/hosts         {"hosts": [...], "by_arch": {arch: {trust: n}}}
GET /api/v1/stats/queue         the dispatcher's queue (queue_client.py), or available: false
GET /api/v1/stats/builds        recent builds, their verdicts and agreeing hosts; ?limit=
GET /api/v1/stats/packages      per package: builds, durations, reproducibility; ?limit=
GET /dashboard[/leaderboard|/hosts|/queue|/builds|/packages]   the same as HTML

Read-only and public, like BOINC's statistics pages: nothing here is secret.
"""

from __future__ import annotations

import datetime
from typing import Any

from aiohttp import web

from services.common.http import query_limit
from services.common.service import RUNTIME

from . import dashboard, queue_client, stats, stats_store

routes = web.RouteTableDef()

DEFAULT_LIMIT = 100
MAX_LIMIT = 500
OVERVIEW_ROWS = 10  # leaderboard rows and recent builds on the overview page


def _limit(request: web.Request) -> int:
    return query_limit(request, DEFAULT_LIMIT, MAX_LIMIT)


def _html(text: str) -> web.Response:
    return web.Response(
        text=text,
        content_type="text/html",
        # No scripts, nothing from elsewhere: even an unescaped value could not run.
        headers={"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'"},
    )


async def _summary(request: web.Request) -> dict[str, Any]:
    async with request.app[RUNTIME].pool.acquire() as conn:
        return await stats_store.summary(conn, datetime.datetime.now(datetime.UTC))


async def _leaderboard(request: web.Request, limit: int) -> dict[str, Any]:
    async with request.app[RUNTIME].pool.acquire() as conn:
        return await stats_store.leaderboard(conn, limit)


async def _hosts(request: web.Request) -> dict[str, Any]:
    async with request.app[RUNTIME].pool.acquire() as conn:
        listing = await stats_store.hosts(conn)
    return {"hosts": listing, "by_arch": stats.hosts_by_arch(listing)}


async def _builds(request: web.Request, limit: int) -> list[dict[str, Any]]:
    async with request.app[RUNTIME].pool.acquire() as conn:
        return await stats_store.recent_builds(conn, limit)


async def _packages(request: web.Request, limit: int) -> list[dict[str, Any]]:
    async with request.app[RUNTIME].pool.acquire() as conn:
        return await stats_store.packages(conn, limit)


@routes.get("/api/v1/stats/summary")
async def summary_json(request: web.Request) -> web.Response:
    return web.json_response(await _summary(request))


@routes.get("/api/v1/stats/leaderboard")
async def leaderboard_json(request: web.Request) -> web.Response:
    return web.json_response(await _leaderboard(request, _limit(request)))


@routes.get("/api/v1/stats/hosts")
async def hosts_json(request: web.Request) -> web.Response:
    return web.json_response(await _hosts(request))


@routes.get("/api/v1/stats/queue")
async def queue_json(request: web.Request) -> web.Response:
    return web.json_response(await queue_client.fetch_queue(request.app[RUNTIME]))


@routes.get("/api/v1/stats/builds")
async def builds_json(request: web.Request) -> web.Response:
    return web.json_response({"builds": await _builds(request, _limit(request))})


@routes.get("/api/v1/stats/packages")
async def packages_json(request: web.Request) -> web.Response:
    return web.json_response({"packages": await _packages(request, _limit(request))})


@routes.get("/dashboard")
async def overview_page(request: web.Request) -> web.Response:
    summary = await _summary(request)
    board = await _leaderboard(request, OVERVIEW_ROWS)
    recent = await _builds(request, OVERVIEW_ROWS)
    return _html(dashboard.overview(summary, board, recent))


@routes.get("/dashboard/leaderboard")
async def leaderboard_page(request: web.Request) -> web.Response:
    return _html(dashboard.leaderboard(await _leaderboard(request, _limit(request))))


@routes.get("/dashboard/hosts")
async def hosts_page(request: web.Request) -> web.Response:
    return _html(dashboard.hosts(await _hosts(request)))


@routes.get("/dashboard/queue")
async def queue_page(request: web.Request) -> web.Response:
    return _html(dashboard.queue(await queue_client.fetch_queue(request.app[RUNTIME])))


@routes.get("/dashboard/builds")
async def builds_page(request: web.Request) -> web.Response:
    return _html(dashboard.builds(await _builds(request, _limit(request))))


@routes.get("/dashboard/packages")
async def packages_page(request: web.Request) -> web.Response:
    return _html(dashboard.packages(await _packages(request, _limit(request))))


ROUTES = list(routes)
