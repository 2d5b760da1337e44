"""Enrolment and host queries over HTTP."""

from __future__ import annotations

import base64
import hmac
import json
import logging

import jsonschema
from aiohttp import web

from services.common.http import error
from services.common.service import RUNTIME

from . import owners_api, store

log = logging.getLogger(__name__)
routes = web.RouteTableDef()


async def _json_body(request: web.Request) -> dict:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise error(400, "request body is not JSON") from None
    if not isinstance(body, dict):
        raise error(400, "request body must be a JSON object")
    return body


def _check_token(request: web.Request, token: str) -> None:
    if not token:
        return
    given = request.headers.get("Authorization", "").removeprefix("Bearer ")
    if not hmac.compare_digest(given.encode(), token.encode()):
        raise error(401, "enrolment needs a valid token (Authorization: Bearer ...)")


@routes.post("/api/v1/hosts")
async def enrol(request: web.Request) -> web.Response:
    """Enrol a host and its public key; re-enrolling with the same key updates its profile."""
    runtime = request.app[RUNTIME]
    config = runtime.config.registry
    _check_token(request, config.enrol_token)
    body = await _json_body(request)
    trust = "core" if body.get("public_key") in config.core_keys else "untrusted"
    message = store.HostEnrolledV1(body={**body, "trust": trust})
    try:
        message.validate()
        if len(base64.b64decode(body["public_key"], validate=True)) != 32:
            raise ValueError("an Ed25519 public key is 32 bytes")
    except (jsonschema.ValidationError, ValueError) as exc:
        raise error(400, f"invalid enrolment: {getattr(exc, 'message', exc)}") from None
    async with runtime.transaction() as ctx:
        # Serialise enrolments of one name so two racing hosts cannot both "create" it.
        await ctx.conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", body["host"])
        row = await store.get_host(ctx.conn, body["host"])
        if row is not None and row["public_key"] != body["public_key"]:
            raise error(409, f"host {body['host']} is enrolled with another key")
        if row is None:
            row = await store.insert_host(ctx.conn, message.body)
            await ctx.publish(store.enrolled_message(row))
            log.info("enrolled %s (owner %s) as %s", row["host"], row["owner"], row["trust"])
            status = 201
        else:
            row = await store.update_profile(ctx.conn, body)
            status = 200
    return web.json_response(store.public_view(row), status=status)


@routes.get("/api/v1/hosts/{host}")
async def get_host(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    async with runtime.pool.acquire() as conn:
        row = await store.get_host(conn, request.match_info["host"])
    if row is None:
        raise error(404, f"no host named {request.match_info['host']!r} is enrolled")
    return web.json_response(store.public_view(row))


@routes.get("/api/v1/hosts")
async def list_hosts(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    async with runtime.pool.acquire() as conn:
        rows = await conn.fetch("SELECT * FROM hosts ORDER BY host")
    return web.json_response({"hosts": [store.public_view(r) for r in rows]})


ROUTES = [*routes, *owners_api.ROUTES]
