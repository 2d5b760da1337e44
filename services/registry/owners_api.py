"""Owner accounts over HTTP: made by an administrator or invited by a sponsor, checked by
other services.

POST   /api/v1/owners          {"name", "sponsor"?, "max_hosts"?} -> 201 {"name", "token"}
                               (admin; token shown once)
POST   /api/v1/owners/invite   {"name"} -> 201 {"name", "token", "sponsor", "standing"}
                               (Authorization: Bearer <the sponsor's own owner token>)
GET    /api/v1/owners          -> 200 {"owners": [...]}                     (admin)
GET    /api/v1/owners/tree     -> 200 {"tree": [... {"sponsored": [...]}]}  (admin)
GET    /api/v1/owners/whoami   Authorization: Bearer <owner token> -> 200 {"owner"}
GET    /api/v1/owners/{name}   -> 200 owner view with "frauds" and "hosts"  (admin)
DELETE /api/v1/owners/{name}   -> 200 {"name", "revoked_at"}                (admin)
PUT    /api/v1/owners/{name}/max_hosts  {"max_hosts": N | null} -> 200 owner view (admin)
PUT    /api/v1/owners/{name}/standing   {"standing": "good" | "sponsored"} -> 200 (admin)
POST   /api/v1/owners/{name}/frauds     {"detail", "host"?, "task_id"?} -> 201 (admin)

Standing and sponsorship: standing.py. The admin calls need `Authorization: Bearer
<[registry] admin_token>`; with no admin_token set they are disabled (403), so a fresh install
never has an open door.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from aiohttp import web
from skyline_messages.base import HOST

from services.common import principals
from services.common.errors import Retry
from services.common.http import error
from services.common.service import RUNTIME
from services.common.tokens import bearer, same_token

from . import broker, owners
from .standing import BASE_STANDINGS, Standing, may_sponsor

log = logging.getLogger(__name__)
routes = web.RouteTableDef()
MAX_HOSTS = 100_000  # an owner's host limit, when an admin sets one
MAX_DETAIL = 2000
HOST_NAME = re.compile(HOST["pattern"])
RESERVED_NAMES = frozenset({"tree", "whoami", "invite"})  # paths under /api/v1/owners/


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


async def json_object(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise error(400, "request body is not JSON") from None
    if not isinstance(body, dict):
        raise error(400, "request body must be a JSON object")
    return body


def _name(value: Any, what: str = "an owner name") -> str:
    if not isinstance(value, str) or not owners.OWNER_NAME.match(value):
        raise error(
            400,
            f"{what} is 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit",
        )
    try:
        principals.owner_user(value)
    except ValueError as exc:
        raise error(400, str(exc)) from None
    if value in RESERVED_NAMES:
        raise error(400, f"{value!r} is a reserved name")
    return value


def _max_hosts(value: Any) -> int | None:
    if value is not None and (
        not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_HOSTS
    ):
        raise error(400, f"max_hosts must be null or an integer from 0 to {MAX_HOSTS}")
    return value


async def _new_owner(request: web.Request, allowed: frozenset[str]) -> dict[str, Any]:
    body = await json_object(request)
    if "name" not in body or not set(body) <= allowed:
        fields = ", ".join(sorted(allowed - {"name"}))
        raise error(400, f'the body must be {{"name": "<owner>"}}, optionally with {fields}')
    return body


async def _create(
    runtime: Any,
    name: str,
    *,
    sponsor: str | None,
    base: Standing,
    max_hosts: int | None = None,
    check_sponsor: bool = False,
) -> str:
    async with runtime.transaction() as ctx:
        if sponsor is not None:
            # Locked: a sponsor put on probation meanwhile cannot slip one more in.
            await ctx.conn.execute("SELECT 1 FROM owners WHERE name = $1 FOR UPDATE", sponsor)
            row = await owners.get(ctx.conn, sponsor)
            if row is None or row["revoked_at"] is not None:
                raise error(400, f"no current owner named {sponsor!r} to sponsor {name}")
            level = owners.standing_of(row, runtime.config.registry.standing)
            if check_sponsor and not may_sponsor(level):
                raise error(403, f"{sponsor} may not sponsor owners while {level}")
        try:
            token = await owners.create(
                ctx.conn, name, sponsor=sponsor, base=base, max_hosts=max_hosts
            )
        except owners.OwnerExists:
            raise error(
                409, f"owner {name} exists (names of revoked owners are not reused)"
            ) from None
        if (admin := runtime.state.get("broker_admin")) is not None:
            try:  # inside the transaction: no owner without its broker user
                await broker.create_owner_user(admin, name, token)
            except Retry as exc:
                raise error(503, str(exc)) from None
    return token


@routes.post("/api/v1/owners")
async def create_owner(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    check_admin(request)
    body = await _new_owner(request, frozenset({"name", "sponsor", "max_hosts"}))
    name = _name(body["name"])
    sponsor = None if body.get("sponsor") is None else _name(body["sponsor"], "a sponsor")
    max_hosts = _max_hosts(body.get("max_hosts"))
    # An admin vouches for whom it makes; with a sponsor named, the sponsor vouches instead.
    base = Standing.GOOD if sponsor is None else Standing.SPONSORED
    token = await _create(runtime, name, sponsor=sponsor, base=base, max_hosts=max_hosts)
    log.info("created owner %s%s", name, f" (sponsor {sponsor})" if sponsor else "")
    return web.json_response({"name": name, "token": token}, status=201)


@routes.post("/api/v1/owners/invite")
async def invite_owner(request: web.Request) -> web.Response:
    """An owner in good standing sponsors a new one: the new owner starts `sponsored`."""
    runtime = request.app[RUNTIME]
    sponsor = await authenticated_owner(request)
    body = await _new_owner(request, frozenset({"name"}))
    name = _name(body["name"])
    token = await _create(
        runtime, name, sponsor=sponsor, base=Standing.SPONSORED, check_sponsor=True
    )
    log.info("%s invited owner %s", sponsor, name)
    return web.json_response(
        {"name": name, "token": token, "sponsor": sponsor, "standing": str(Standing.SPONSORED)},
        status=201,
    )


async def authenticated_owner(request: web.Request) -> str:
    """The current owner whose token the request bears; 401 otherwise."""
    token = bearer(request)
    if token is None:
        raise error(401, "send an owner token: Authorization: Bearer <token>")
    async with request.app[RUNTIME].pool.acquire() as conn:
        name = await owners.authenticate(conn, token)
    if name is None:
        raise error(401, "unknown or revoked owner token")
    return name


def _view(request: web.Request, row: Any) -> dict[str, Any]:
    settings = request.app[RUNTIME].config.registry
    return owners.view(row, settings.standing, settings.max_hosts_per_owner)


@routes.get("/api/v1/owners")
async def list_owners(request: web.Request) -> web.Response:
    check_admin(request)
    async with request.app[RUNTIME].pool.acquire() as conn:
        rows = await owners.all_owners(conn)
    return web.json_response({"owners": [_view(request, r) for r in rows]})


@routes.get("/api/v1/owners/tree")
async def owner_tree(request: web.Request) -> web.Response:
    """Admins: every owner under the owner that sponsored it (admin-made owners are roots)."""
    check_admin(request)
    async with request.app[RUNTIME].pool.acquire() as conn:
        rows = await owners.all_owners(conn)
    return web.json_response({"tree": owners.tree([_view(request, r) for r in rows])})


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
    return web.json_response({"owner": await authenticated_owner(request)})


@routes.get("/api/v1/owners/{name}")
async def get_owner(request: web.Request) -> web.Response:
    check_admin(request)
    name = request.match_info["name"]
    async with request.app[RUNTIME].pool.acquire() as conn:
        row = await owners.get(conn, name)
        if row is None:
            raise error(404, f"no owner named {name!r}")
        frauds = await owners.frauds(conn, name)
        hosts = await owners.host_count(conn, name)
    view = _view(request, row)
    return web.json_response(
        {**view, "hosts": hosts, "frauds": [owners.fraud_view(f) for f in frauds]}
    )


@routes.put("/api/v1/owners/{name}/max_hosts")
async def set_max_hosts(request: web.Request) -> web.Response:
    """Admins: this owner's own host limit (null: back to [registry] max_hosts_per_owner).
    Hosts already enrolled beyond a lowered limit stay; no new one is enrolled."""
    check_admin(request)
    body = await json_object(request)
    if set(body) != {"max_hosts"}:
        raise error(400, 'the body must be {"max_hosts": <integer or null>}')
    return await _update(request, owners.set_max_hosts, _max_hosts(body["max_hosts"]))


@routes.put("/api/v1/owners/{name}/standing")
async def set_standing(request: web.Request) -> web.Response:
    """Admins: vouch for a sponsored owner (`good`), or take that back (`sponsored`)."""
    check_admin(request)
    body = await json_object(request)
    choices = ", ".join(BASE_STANDINGS)
    if set(body) != {"standing"} or body["standing"] not in BASE_STANDINGS:
        raise error(400, f'the body must be {{"standing": one of {choices}}}')
    return await _update(request, owners.set_base_standing, Standing(body["standing"]))


async def _update(request: web.Request, update: Any, value: Any) -> web.Response:
    name = request.match_info["name"]
    async with request.app[RUNTIME].transaction() as ctx:
        if await update(ctx.conn, name, value) is None:
            raise error(404, f"no owner named {name!r}")
        row = await owners.get(ctx.conn, name)
    return web.json_response(_view(request, row))


@routes.post("/api/v1/owners/{name}/frauds")
async def record_fraud(request: web.Request) -> web.Response:
    """Admins: a fraud confirmed by review counts against the owner and, more lightly, its
    sponsor (standing.py). The hosts involved are quarantined separately (/quarantine)."""
    check_admin(request)
    body = await json_object(request)
    if "detail" not in body or not set(body) <= {"detail", "host", "task_id"}:
        raise error(400, 'the body must be {"detail": "...", "host"?: ..., "task_id"?: ...}')
    detail, host, task_id = body["detail"], body.get("host"), body.get("task_id")
    if not isinstance(detail, str) or not detail.strip() or len(detail) > MAX_DETAIL:
        raise error(400, f"detail must be a non-blank string of at most {MAX_DETAIL} characters")
    if host is not None and (not isinstance(host, str) or not HOST_NAME.fullmatch(host)):
        raise error(400, "host must be a host name")
    if task_id is not None and (
        not isinstance(task_id, (str, int))
        or isinstance(task_id, bool)
        or not 0 < len(str(task_id)) <= 64
    ):
        raise error(400, "task_id must be a string or integer of at most 64 characters")
    name = request.match_info["name"]
    runtime = request.app[RUNTIME]
    async with runtime.transaction() as ctx:
        if await owners.get(ctx.conn, name) is None:
            raise error(404, f"no owner named {name!r}")
        fraud = await owners.record_fraud(
            ctx.conn, name, detail.strip(), "admin", host, None if task_id is None else str(task_id)
        )
        row = await owners.get(ctx.conn, name)
        assert row is not None  # found above, and owners are never deleted
        sponsor = await owners.get(ctx.conn, row["sponsor"]) if row["sponsor"] else None
    log.warning("fraud recorded against owner %s: %s", name, detail.strip())
    return web.json_response(
        {
            "fraud": owners.fraud_view(fraud),
            "owner": _view(request, row),
            "sponsor": None if sponsor is None else _view(request, sponsor),
        },
        status=201,
    )


ROUTES = list(routes)
