"""`GET /api/v1/chains/{request_id}`: a chain request's builds, one per link, in link order
(what `skyline status` shows of a build, plus the links each one comes after)."""

from __future__ import annotations

import re

from aiohttp import web

from services.common.http import error
from services.common.service import RUNTIME

routes = web.RouteTableDef()
# A fedora-messaging message id (a UUID), or any id a tool chose: bounded, no odd characters.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


@routes.get("/api/v1/chains/{request_id}")
async def get_chain(request: web.Request) -> web.Response:
    request_id = request.match_info["request_id"]
    if not _REQUEST_ID.fullmatch(request_id):
        raise error(400, "a chain is named by its request's message id")
    from .routes import build_view  # routes.py serves this module's routes: import at use

    runtime = request.app[RUNTIME]
    async with runtime.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT * FROM builds WHERE chain_request = $1 ORDER BY chain_link", request_id
        )
        if not rows:
            raise error(404, f"no chain request {request_id}")
        deps = await conn.fetch(
            "SELECT build_id, after_build FROM build_deps WHERE build_id = ANY($1::bigint[])"
            " ORDER BY after_build",
            [r["id"] for r in rows],
        )
        links = []
        for r in rows:
            view = await build_view(conn, r)
            view["chain_link"] = r["chain_link"]
            view["after_builds"] = [d["after_build"] for d in deps if d["build_id"] == r["id"]]
            links.append(view)
    return web.json_response({"request_id": request_id, "links": links})


ROUTES = list(routes)
