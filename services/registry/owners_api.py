"""Owner accounts over HTTP: made and revoked by an administrator, checked by other services.

POST   /api/v1/owners          {"name"} -> 201 {"name", "token"}  (admin; token shown once)
DELETE /api/v1/owners/{name}   -> 200 {"name", "revoked_at"}      (admin)
GET    /api/v1/owners/whoami   Authorization: Bearer <owner token> -> 200 {"owner"}

The admin calls need `Authorization: Bearer <[registry] admin_token>`; with no admin_token set
they are disabled (403), so a fresh install never has an open door.
"""

from __future__ import annotations

import json
import logging

from aiohttp import web

from services.common import principals
from services.common.errors import Retry
from services.common.http import error
from services.common.service import RUNTIME
from services.common.tokens import bearer, same_token

from . import broker, owners

log = logging.getLogger(__name__)
routes = web.RouteTableDef()


def check_admin(request: web.Request) -> None:
    """Admin calls need `Authorization: Bearer <[registry] admin_token>`."""
    admin_token = request.app[RUNTIME].config.registry.admin_token
    if not admin_token:
        raise error(
            403,
            "the registry's admin API is disabled: set [registry] admin_token "
            "(or SKYLINE_REGISTRY_ADMIN_TOKEN) to enable it",
        )
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not same_token(given.strip(), admin_token):
        raise error(401, "this needs the registry's admin token (Authorization: Bearer ...)")


async def _owner_name(request: web.Request) -> str:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise error(400, "request body is not JSON") from None
    if not isinstance(body, dict) or set(body) != {"name"}:
        raise error(400, 'the body must be {"name": "<owner>"}')
    name = body["name"]
    if not isinstance(name, str) or not owners.OWNER_NAME.match(name):
        raise error(
            400,
            "an owner name is 1-64 letters, digits, '.', '_' or '-', starting with a letter or"
            " digit",
        )
    return name


@routes.post("/api/v1/owners")
async def create_owner(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    check_admin(request)
    name = await _owner_name(request)
    try:
        principals.owner_user(name)
    except ValueError as exc:
        raise error(400, str(exc)) from None
    async with runtime.transaction() as ctx:
        try:
            token = await owners.create(ctx.conn, name)
        except owners.OwnerExists:
            raise error(
                409, f"owner {name} exists (names of revoked owners are not reused)"
            ) from None
        if (admin := runtime.state.get("broker_admin")) is not None:
            try:  # inside the transaction: no owner without its broker user
                await broker.create_owner_user(admin, name, token)
            except Retry as exc:
                raise error(503, str(exc)) from None
    log.info("created owner %s", name)
    return web.json_response({"name": name, "token": token}, status=201)


@routes.delete("/api/v1/owners/{name}")
async def revoke_owner(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    check_admin(request)
    name = request.match_info["name"]
    async with runtime.transaction() as ctx:
        row = await owners.revoke(ctx.conn, name)
        if row is not None and (admin := runtime.state.get("broker_admin")) is not None:
            try:
                await broker.delete_owner_user(admin, name)
            except Retry as exc:
                raise error(503, str(exc)) from None
    if row is None:
        raise error(404, f"no owner named {name!r}")
    log.info("revoked owner %s", name)
    return web.json_response({"name": name, "revoked_at": row["revoked_at"].isoformat()})


@routes.get("/api/v1/owners/whoami")
async def whoami(request: web.Request) -> web.Response:
    """Which owner a token belongs to: how other services authenticate owners."""
    token = bearer(request)
    if token is None:
        raise error(401, "send an owner token: Authorization: Bearer <token>")
    async with request.app[RUNTIME].pool.acquire() as conn:
        name = await owners.authenticate(conn, token)
    if name is None:
        raise error(401, "unknown or revoked owner token")
    return web.json_response({"owner": name})


ROUTES = list(routes)
