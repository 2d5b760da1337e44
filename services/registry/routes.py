"""Enrolment and host queries over HTTP."""

from __future__ import annotations

import base64
import datetime
import hmac
import json
import logging

import jsonschema
from aiohttp import web

from services.common.errors import Retry, SignatureError
from services.common.http import error
from services.common.service import RUNTIME
from services.common.signing import verify_body

from . import broker, farm_api, hoststate, owners_api, store, trust_api

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
    """Enrol a host and its public key, or let it re-enrol (same key) with a new profile.

    Every enrolment is signed with the host's private key (`signed_at`, `signature`, as a
    heartbeat is): the public key is public, so naming it proves nothing. A signature older
    than the newest one seen is a replay. The reply carries the host's broker credentials
    (a new password each time), which only the holder of the key ever receives.
    """
    runtime = request.app[RUNTIME]
    config = runtime.config.registry
    _check_token(request, config.enrol_token)
    signed = await _json_body(request)
    profile = {k: v for k, v in signed.items() if k not in ("signed_at", "signature")}
    trust = "core" if profile.get("public_key") in config.core_keys else "untrusted"
    message = store.HostEnrolledV1(body={**profile, "trust": trust})
    try:
        message.validate()
        if len(base64.b64decode(profile["public_key"], validate=True)) != 32:
            raise ValueError("an Ed25519 public key is 32 bytes")
    except (jsonschema.ValidationError, ValueError) as exc:
        raise error(400, f"invalid enrolment: {getattr(exc, 'message', exc)}") from None
    signed_at = _proof_of_possession(signed, config.enrol_max_skew)
    host = profile["host"]
    async with runtime.transaction() as ctx:
        # Serialise enrolments of one name so two racing hosts cannot both "create" it.
        await ctx.conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", host)
        row = await store.get_host(ctx.conn, host)
        if row is not None and row["public_key"] != profile["public_key"]:
            raise error(409, f"host {host} is enrolled with another key")
        if row is not None and row["enrol_signed_at"] and signed_at <= row["enrol_signed_at"]:
            raise error(403, "replayed enrolment: sign a new one (signed_at is not newer)")
        if row is not None and row["state"] == "quarantined":
            raise error(403, f"host {host} is quarantined; an admin must release it first")
        if row is None:
            row = await store.insert_host(ctx.conn, message.body, signed_at)
            await ctx.publish(store.enrolled_message(row))
            log.info("enrolled %s (owner %s) as %s", row["host"], row["owner"], row["trust"])
            status = 201
        else:
            row = await store.update_profile(ctx.conn, profile, signed_at)
            status = 200
        reply = store.public_view(row)
        admin = runtime.state.get("broker_admin")
        if admin is not None:  # inside the transaction: no enrolment without its broker user
            try:
                reply["broker"] = await broker.issue_credentials(admin, host)
            except Retry as exc:
                raise error(503, str(exc)) from None
    return web.json_response(reply, status=status)


def _proof_of_possession(signed: dict, max_skew: float) -> datetime.datetime:
    """The enrolment's signature time, once it is shown to be signed by its public key."""
    if not isinstance(signed.get("signature"), str) or not isinstance(signed.get("signed_at"), str):
        raise error(400, "an enrolment must be signed with the host's key (signed_at, signature)")
    try:
        verify_body(signed, signed["public_key"])
    except SignatureError:
        raise error(403, "the enrolment is not signed by the private half of public_key") from None
    try:
        signed_at = datetime.datetime.fromisoformat(signed["signed_at"])
    except ValueError:
        raise error(400, "signed_at is not an ISO 8601 time") from None
    if signed_at.utcoffset() is None:
        raise error(400, "signed_at needs a UTC offset")
    skew = abs((datetime.datetime.now(datetime.UTC) - signed_at).total_seconds())
    if skew > max_skew:
        raise error(403, f"signed_at is {skew:.0f} s away from the registry's clock")
    return signed_at


@routes.post("/api/v1/hosts/{host}/quarantine")
async def quarantine(request: web.Request) -> web.Response:
    """Admin: stop a host at once. Its broker user is deleted (its connections closed), so it
    can neither publish nor read its leases; the dispatcher stops leasing to it."""
    owners_api.check_admin(request)
    return await _set_state(request, "quarantined")


@routes.post("/api/v1/hosts/{host}/release")
async def release(request: web.Request) -> web.Response:
    """Admin: let a quarantined host back; it gets new broker credentials when it enrols."""
    owners_api.check_admin(request)
    return await _set_state(request, "offline")


async def _set_state(request: web.Request, state: str) -> web.Response:
    runtime = request.app[RUNTIME]
    host = request.match_info["host"]
    async with runtime.transaction() as ctx:
        try:
            row = await hoststate.set_state(ctx, host, state)
        except Retry as exc:
            raise error(503, str(exc)) from None
        if row is None:
            raise error(404, f"no host named {host!r} is enrolled")
        await ctx.publish(store.status_message(row))
    log.warning("host %s is now %s", host, state)
    return web.json_response(store.public_view(row))


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


ROUTES = [*routes, *owners_api.ROUTES, *trust_api.ROUTES, *farm_api.ROUTES]
