"""Enrolment and host queries over HTTP.

POST /api/v1/hosts   signed profile, Authorization: Bearer <owner token> -> 201 new, 200 again
GET  /api/v1/hosts[?arch=&trust=&owner=&online=true|false&state=&limit=&after=]
     -> 200 {"hosts", "next"}
GET  /api/v1/hosts/{host}  -> 200 the host with `owner_standing`
POST /api/v1/hosts/{host}/quarantine | release | revoke   (admin) -> 200 the host

A host is enrolled for the owner whose token it brings (the body's `owner` must be that owner,
or is left out), while the owner is in standing and under its host limit (standing.py).
"""

from __future__ import annotations

import base64
import datetime
import json
import logging

import asyncpg
import jsonschema
from aiohttp import web

from services.common.errors import Retry, SignatureError
from services.common.http import error
from services.common.service import RUNTIME, Context
from services.common.signing import verify_body
from services.common.tokens import bearer

from . import (
    broker,
    farm_api,
    hostquery,
    hosts_api,
    hoststate,
    owners,
    owners_api,
    standing,
    store,
    trust_api,
)

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


async def _enrolling_owner(request: web.Request) -> asyncpg.Record:
    """The current owner whose token the enrolment bears (its hosts are enrolled for it)."""
    token = bearer(request)
    if token is None:
        raise error(401, "enrolment needs your owner token (Authorization: Bearer <token>)")
    async with request.app[RUNTIME].pool.acquire() as conn:
        name = await owners.authenticate(conn, token)
        row = None if name is None else await owners.get(conn, name)
    if row is None:
        raise error(401, "unknown or revoked owner token")
    return row


async def _check_owner_may_enrol(ctx: Context, owner: str, host: str) -> None:
    """A new host needs an owner in standing under its host limit. The owner's row is locked
    so that two racing enrolments cannot both take its last place."""
    settings = ctx.config.registry
    await ctx.conn.execute("SELECT 1 FROM owners WHERE name = $1 FOR UPDATE", owner)
    row = await owners.get(ctx.conn, owner)
    if row is None or row["revoked_at"] is not None:
        raise error(401, "unknown or revoked owner token")
    level = owners.standing_of(row, settings.standing)
    if not standing.may_enrol(level):
        raise error(403, f"owner {owner} is {level}: it may not enrol hosts")
    limit = standing.host_limit(row["max_hosts"], settings.max_hosts_per_owner)
    count = await owners.host_count(ctx.conn, owner)
    if count >= limit:
        raise error(
            403,
            f"owner {owner} has {count} host(s) enrolled, its limit: revoke one or ask the"
            f" admins for a higher limit, to enrol {host}",
        )


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
    owner = (await _enrolling_owner(request))["name"]
    signed = await _json_body(request)
    profile = {k: v for k, v in signed.items() if k not in ("signed_at", "signature")}
    # The token says whose host it is: a body may name that owner, or leave it out.
    named = profile.setdefault("owner", owner)
    if named != owner:
        raise error(403, f"this is {owner}'s token: it cannot enrol a host for {named!r}")
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
        if row is not None and row["owner"] != owner:
            raise error(403, f"host {host} belongs to another owner")
        if row is not None and row["revoked_at"] is not None:
            raise error(403, f"host {host} was revoked; its name is not reused")
        if row is not None and row["enrol_signed_at"] and signed_at <= row["enrol_signed_at"]:
            raise error(403, "replayed enrolment: sign a new one (signed_at is not newer)")
        if row is not None and row["state"] == "quarantined":
            raise error(403, f"host {host} is quarantined; an admin must release it first")
        if row is None:
            await _check_owner_may_enrol(ctx, owner, host)
            row = await store.insert_host(ctx.conn, message, signed_at)
            await ctx.publish(store.enrolled_message(row))
            log.info("enrolled %s (owner %s) as %s", row["host"], row["owner"], row["trust"])
            status = 201
        else:
            row = await store.update_profile(ctx.conn, message, signed_at)
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
    return await _set_state(request, "quarantined", "quarantine")


@routes.post("/api/v1/hosts/{host}/release")
async def release(request: web.Request) -> web.Response:
    """Admin: let a quarantined host back; it gets new broker credentials when it enrols."""
    owners_api.check_admin(request)
    return await _set_state(request, "offline", "release")


@routes.post("/api/v1/hosts/{host}/revoke")
async def revoke(request: web.Request) -> web.Response:
    """Admin: cut a host off for good. Like quarantine, and its name is never enrolled again
    (a volunteer retiring a machine, or one stolen); it no longer counts to its owner's limit."""
    owners_api.check_admin(request)
    return await _set_state(request, "quarantined", "revoke", revoking=True)


async def _set_state(
    request: web.Request, state: str, reason: str, *, revoking: bool = False
) -> web.Response:
    runtime = request.app[RUNTIME]
    host = request.match_info["host"]
    async with runtime.transaction() as ctx:
        current = await ctx.conn.fetchrow(
            "SELECT revoked_at FROM hosts WHERE host = $1 FOR UPDATE", host
        )
        if current is None:
            raise error(404, f"no host named {host!r} is enrolled")
        if current["revoked_at"] is not None:
            raise error(409, f"host {host} is revoked: nothing can change its state")
        try:
            row = await hoststate.set_state(ctx, host, state, reason)
        except Retry as exc:
            raise error(503, str(exc)) from None
        if row is None:
            raise error(404, f"no host named {host!r} is enrolled")
        if revoking:
            row = await ctx.conn.fetchrow(
                "UPDATE hosts SET revoked_at = now() WHERE host = $1 RETURNING *", host
            )
        await ctx.publish(store.status_message(row))
    log.warning("host %s is now %s%s", host, state, " (revoked)" if revoking else "")
    return web.json_response(store.public_view(row))


@routes.get("/api/v1/hosts/{host}")
async def get_host(request: web.Request) -> web.Response:
    """The host, with its owner's standing (`owner_standing`, null for an owner the registry
    has no account of) for the verifier to choose how often to replicate its results."""
    runtime = request.app[RUNTIME]
    async with runtime.pool.acquire() as conn:
        row = await store.get_host(conn, request.match_info["host"])
        owner = None if row is None else await owners.get(conn, row["owner"])
    if row is None:
        raise error(404, f"no host named {request.match_info['host']!r} is enrolled")
    view = store.public_view(row)
    settings = runtime.config.registry.standing
    view["owner_standing"] = None if owner is None else str(owners.standing_of(owner, settings))
    return web.json_response(view)


@routes.get("/api/v1/hosts")
async def list_hosts(request: web.Request) -> web.Response:
    """Hosts by name, filtered by ?arch=, ?trust=, ?owner=, ?online=true|false, ?state=,
    a page of ?limit= (default 1000) after ?after=<host>; `next` names the page's last host
    when there may be more."""
    runtime = request.app[RUNTIME]
    query = hostquery.parse(request.query)
    async with runtime.pool.acquire() as conn:
        rows = await conn.fetch(*hostquery.sql(query))
    hosts = [store.public_view(r) for r in rows]
    more = len(hosts) == query.limit
    return web.json_response({"hosts": hosts, "next": hosts[-1]["host"] if more else None})


ROUTES = [*routes, *hosts_api.ROUTES, *owners_api.ROUTES, *trust_api.ROUTES, *farm_api.ROUTES]
