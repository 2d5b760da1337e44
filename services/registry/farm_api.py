"""What a new volunteer's machine needs to know about the farm, read-only and public.

GET /api/v1/farm -> 200 {"admin_ssh_keys": [...], "amqp_url": "...", "collector_url": "..."}

`skyline host enroll` and `skyline host cloud-init` read it, so a volunteer types only the
registry's URL and an owner token. Nothing here is secret: SSH public keys and two URLs
without credentials ([registry] admin_ssh_keys, public_amqp_url, public_collector_url).
"""

from __future__ import annotations

from aiohttp import web

from services.common.service import RUNTIME

routes = web.RouteTableDef()


def _without_credentials(url: str) -> str:
    if "@" not in url:
        return url
    # A URL copied from a service's own amqp_url may hold its password: never publish it.
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.rpartition('@')[2]}"


@routes.get("/api/v1/farm")
async def farm(request: web.Request) -> web.Response:
    config = request.app[RUNTIME].config.registry
    return web.json_response(
        {
            "admin_ssh_keys": list(config.admin_ssh_keys),
            "amqp_url": _without_credentials(config.public_amqp_url),
            "collector_url": config.public_collector_url,
        }
    )


ROUTES = list(routes)
