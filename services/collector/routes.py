"""HTTP: builders upload results, packagers upload source RPMs, builders fetch them.

PUT  /api/v1/uploads/{lease_id}/{name}   a result file, header X-Skyline-Sha256: <hex digest>,
                                         signed by the lease's host (auth.py)
GET  /api/v1/uploads/{lease_id}          {"files": [{name, size, sha256, rpm}]}: what is staged;
                                         rpm is null for a log, else the RPM's header as read
                                         on upload ({name, version, release, epoch, arch,
                                         sourcerpm}) or {error} if it is not an intact RPM
GET  /api/v1/leases/{lease_id}           {"lease_id", "state", "files"}: the lease's state
                                         (open, stored, failed, superseded) and the files
                                         it stored, as build.stored lists them
GET  /api/v1/leases/{lease_id}/facts     {"lease_id", "rpms": [{name, sha256, nevra, files,
                                         deps, tags}]}: what the verifier compares of each
                                         staged RPM (services/common/rpmfacts.py); 404 for
                                         an unknown lease or one whose uploads are removed,
                                         422 when an RPM is not intact
PUT  /api/v1/sources/{sha256}/{name}     an N-V-R.src.rpm, stored by digest, from an owner
                                         (Authorization: Bearer <owner token>, owners.py)
GET  /sources/{sha256}/{name}            download it

An upload must be signed by the lease's host with its enrolled key (auth.py): 401 without
the signing headers, 403 when they do not prove that host now, 503 when the registry cannot
be asked for the key (the builder retries).

Limits (config [collector], pure policy in limits.py): a lease holds at most
max_files_per_lease files and max_lease_mb in all (413); a host sends at most
host_uploads_per_minute uploads (429 with Retry-After); an owner stores at most
source_uploads_per_hour sources and source_mb_per_day (429). A file name longer than the
file system takes is a 400.

While a lease is open, uploading a name again with other bytes replaces the staged file: a
builder that resumes a lease rebuilds, and its build.log never comes out the same. That is
safe because only bytes matching the signed attestation are ever stored (handlers.py). Once
the lease is closed (stored, failed, superseded) it takes no uploads at all.

Names are checked against the schemas' FILE_NAME (no '/', no leading '.'), and the paths on
disk are built from the validated name and the canonical UUID or digest only, so no request
can reach outside its folder. Bodies are streamed to disk (see spool.py).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import re
import uuid

from aiohttp import web
from skyline_messages.base import FILE_NAME

from services.common.config import CollectorConfig
from services.common.http import error
from services.common.rpmfiles import RpmCheckError, check_rpm_digests, read_rpm_info
from services.common.service import RUNTIME, Runtime

from . import auth, facts, limits, owners, storage, store
from .spool import spool

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

SHA256_HEADER = "X-Skyline-Sha256"
_FILE_NAME = re.compile(FILE_NAME["pattern"])
_SHA256 = re.compile(r"[0-9a-f]{64}")
MB = 1024 * 1024
_RATE_KEY = "host-upload-rate"
_FACTS_KEY = "facts-reads"


def _name(request: web.Request) -> str:
    name = request.match_info["name"]
    if not _FILE_NAME.match(name):
        raise error(400, f"{name!r} is not a valid file name")
    return name


def _lease_id(request: web.Request) -> uuid.UUID:
    try:
        return uuid.UUID(request.match_info["lease_id"])
    except ValueError:
        raise error(400, "the lease id is not a UUID") from None


def _sha256(value: str | None, what: str) -> str:
    if value is None or not _SHA256.fullmatch(value.lower()):
        raise error(400, f"{what} must be a hex SHA-256 digest")
    return value.lower()


def _limit(request: web.Request) -> int:
    return request.app[RUNTIME].config.collector.max_upload_mb * MB


def _check_rate(runtime: Runtime, host: str) -> None:
    """429 when `host` sends uploads faster than host_uploads_per_minute."""
    per_minute = runtime.config.collector.host_uploads_per_minute
    limiter = runtime.state.get(_RATE_KEY)
    if limiter is None:
        limiter = runtime.state[_RATE_KEY] = limits.RateLimiter(per_minute)
    wait = limiter.take(host)
    if wait:
        seconds = math.ceil(wait)
        exc = error(
            429,
            f"host {host} sends more than {per_minute} uploads a minute"
            f" (host_uploads_per_minute); retry in {seconds} s",
        )
        exc.headers["Retry-After"] = str(seconds)
        raise exc


def _lease_room(
    config: CollectorConfig, lease_id: uuid.UUID, name: str, others: limits.Usage, size: int | None
) -> int:
    """The bytes `name` may have in the lease; 413 when it does not fit."""
    try:
        return limits.lease_room(
            others,
            max_files=config.max_files_per_lease,
            max_bytes=config.max_lease_mb * MB,
            size=size,
        )
    except limits.Refusal as exc:
        log.warning("lease %s: refused the upload of %s: %s", lease_id, name, exc)
        raise error(413, f"{name}: {exc}") from None


def _source_room(
    config: CollectorConfig, owner: str, recent: limits.Usage, size: int | None
) -> int:
    """The bytes `owner`'s next source may have; 429 when the owner's quota is spent."""
    try:
        return limits.source_room(
            owner,
            recent,
            per_hour=config.source_uploads_per_hour,
            bytes_per_day=config.source_mb_per_day * MB,
            size=size,
        )
    except limits.Refusal as exc:
        log.warning("refused a source upload: %s", exc)
        raise error(429, str(exc)) from None


def _capped(
    limit: int, room: int, refusal: web.HTTPException
) -> tuple[int, web.HTTPException | None]:
    """The spool's byte limit, and what to answer past it when `room` (not `limit`) is the cap."""
    return (room, refusal) if room < limit else (limit, None)


def _file(name: str, size: int, sha256: str, status: int = 200) -> web.Response:
    return web.json_response({"name": name, "size": size, "sha256": sha256}, status=status)


@routes.put("/api/v1/uploads/{lease_id}/{name}")
async def put_upload(request: web.Request) -> web.Response:
    """Stage one result file of an open lease: 201 new, 200 same bytes again or replaced."""
    runtime = request.app[RUNTIME]
    lease_id, name = _lease_id(request), _name(request)
    expected = _sha256(request.headers.get(SHA256_HEADER), f"the {SHA256_HEADER} header")
    creds = auth.credentials(request)
    async with runtime.pool.acquire() as conn:
        lease = await store.get_lease(conn, lease_id)
        staged = await store.staged_file(conn, lease_id, name)
        others = await store.lease_usage(conn, lease_id, name)
    if lease is None:
        raise error(404, "unknown lease")
    # Checked without holding a connection: it may wait on the registry. The lease id and
    # digest as sent, not as parsed: that is what the builder signed.
    await auth.check(
        runtime,
        lease,
        creds,
        lease_id=request.match_info["lease_id"],
        name=name,
        sha256=request.headers[SHA256_HEADER],
    )
    _check_rate(runtime, creds.host)  # only once the host is proven: nobody spends its share
    if lease["state"] != "open" or lease["cleaned_at"] is not None:
        raise error(409, f"lease {lease_id} is {lease['state']} and takes no more uploads")
    if staged is not None and staged["sha256"] == expected:  # a retry: no need to read the body
        return _file(staged["name"], staged["size"], staged["sha256"])
    config = runtime.config.collector
    room = _lease_room(config, lease_id, name, others, request.content_length)
    limit, too_large = _capped(
        _limit(request),
        room,
        error(413, f"{name}: more than the {room} bytes left of the lease's total (max_lease_mb)"),
    )
    folder = storage.staging_dir(runtime.config, lease_id)
    await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
    async with spool(request, folder, name, limit, too_large=too_large) as part:
        if part.sha256 != expected:
            raise error(422, f"{name}: body has sha256 {part.sha256}, header says {expected}")
        # Read now, so the verifier can judge the package and arch from the listing. A broken
        # RPM is still staged (recorded as such): the verifier then refuses it on the bus.
        header = None
        if name.endswith(".rpm"):
            header = await asyncio.to_thread(storage.rpm_header, part.path, name)
        async with runtime.transaction() as ctx:
            # Parallel uploads to one lease all passed the check above: decide again, in turn.
            await store.lock(ctx.conn, f"lease-uploads:{lease_id}")
            # FOR SHARE: a lease being stored is waited for, then found closed.
            if not await store.lease_takes_uploads(ctx.conn, lease_id):
                raise error(409, f"lease {lease_id} was closed during the upload")
            others = await store.lease_usage(ctx.conn, lease_id, name)
            _lease_room(config, lease_id, name, others, part.size)
            previous = await store.stage_file(
                ctx.conn, lease_id, name, part.size, part.sha256, header
            )
            os.replace(part.path, folder / name)  # under the row lock taken by stage_file
            await asyncio.to_thread(storage.fsync_dir, folder)
    if previous is None:
        log.info("lease %s: staged %s (%d bytes)", lease_id, name, part.size)
        return _file(name, part.size, part.sha256, status=201)
    if previous["sha256"] != part.sha256:
        log.info(
            "lease %s: replaced %s (sha256 %s) with %d bytes (sha256 %s)",
            lease_id,
            name,
            previous["sha256"],
            part.size,
            part.sha256,
        )
    return _file(name, part.size, part.sha256)


@routes.get("/api/v1/uploads/{lease_id}")
async def list_uploads(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    lease_id = _lease_id(request)
    async with runtime.pool.acquire() as conn:
        if await store.get_lease(conn, lease_id) is None:
            raise error(404, "unknown lease")
        files = await store.staged_listing(conn, lease_id)
    return web.json_response({"files": files})


@routes.get("/api/v1/leases/{lease_id}")
async def get_lease(request: web.Request) -> web.Response:
    """Whether a lease's results were stored: the dispatcher asks at lease expiry, in case
    the build.stored announcing them was lost."""
    runtime = request.app[RUNTIME]
    lease_id = _lease_id(request)
    async with runtime.pool.acquire() as conn:
        lease = await store.get_lease(conn, lease_id)
        if lease is None:
            raise error(404, "unknown lease")
        files = await store.stored_files(conn, lease_id)
    return web.json_response(
        {"lease_id": str(lease_id), "state": lease["state"], "files": [dict(f) for f in files]}
    )


@routes.get("/api/v1/leases/{lease_id}/facts")
async def get_facts(request: web.Request) -> web.Response:
    """The facts of the lease's staged RPMs, for the verifier's comparison. Like the upload
    listing, open to the services: RPM contents are what gets published anyway."""
    runtime = request.app[RUNTIME]
    lease_id = _lease_id(request)
    async with runtime.pool.acquire() as conn:
        lease = await store.get_lease(conn, lease_id)
        if lease is None:
            raise error(404, "unknown lease")
        staged = await store.staged_files(conn, lease_id)
    gone = error(404, f"the uploads of lease {lease_id} were removed")
    if lease["cleaned_at"] is not None:
        raise gone
    names = [r["name"] for r in staged if r["name"].endswith(".rpm")]
    slots = runtime.state.get(_FACTS_KEY)
    if slots is None:
        slots = runtime.state[_FACTS_KEY] = asyncio.Semaphore(runtime.config.collector.facts_reads)
    folder = storage.staging_dir(runtime.config, lease_id)
    async with slots:
        try:
            rpms = await asyncio.to_thread(facts.read_facts, folder, names)
        except RpmCheckError as exc:
            raise error(422, f"not an intact RPM: {exc}") from None
        except FileNotFoundError:
            raise gone from None
    return web.json_response({"lease_id": str(lease_id), "rpms": rpms})


@routes.put("/api/v1/sources/{sha256}/{name}")
async def put_source(request: web.Request) -> web.Response:
    """Store a source RPM under its digest; it must be an SRPM named after its own header."""
    runtime = request.app[RUNTIME]
    sha256, name = _sha256(request.match_info["sha256"], "the path's digest"), _name(request)
    if not name.endswith(".src.rpm"):
        raise error(400, "a source upload must be an N-V-R.src.rpm")
    owner = await owners.owner_of(request, runtime)
    folder = storage.sources_dir(runtime.config) / sha256
    url = f"{runtime.config.collector.public_url.rstrip('/')}/sources/{sha256}/{name}"
    reply = {"url": url, "sha256": sha256}
    async with runtime.pool.acquire() as conn:
        known = await store.get_source(conn, sha256)
    if known is not None and (folder / known["name"]).is_file():
        if known["name"] != name:
            raise error(409, f"this SRPM is stored as {known['name']}")
        return web.json_response(reply)
    config = runtime.config.collector
    async with runtime.pool.acquire() as conn:
        recent = await store.owner_source_usage(conn, owner)
    room = _source_room(config, owner, recent, request.content_length)
    limit, too_large = _capped(
        _limit(request),
        room,
        error(429, f"owner {owner} may upload {room} more bytes today (source_mb_per_day)"),
    )
    await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
    async with spool(request, folder, name, limit, too_large=too_large) as part:
        if part.sha256 != sha256:
            raise error(422, f"{name}: body has sha256 {part.sha256}, not {sha256}")
        try:
            await asyncio.to_thread(check_rpm_digests, part.path)
            info = await asyncio.to_thread(read_rpm_info, part.path)
        except RpmCheckError as exc:
            raise error(422, f"{name} is not an intact RPM: {exc}") from None
        # Builds are named by the SRPM file name until the headers are read: make them agree.
        if info.arch != "src" or f"{info.nvr}.src.rpm" != name:
            raise error(422, f"{name} is not a source RPM named after its header ({info.nvr})")
        async with runtime.transaction() as ctx:
            # Parallel uploads of one owner all passed the check above: decide again, in turn.
            await store.lock(ctx.conn, f"source-quota:{owner}")
            _source_room(config, owner, await store.owner_source_usage(ctx.conn, owner), part.size)
            await store.add_source(ctx.conn, sha256, name, part.size, owner)
            os.replace(part.path, folder / name)
            await asyncio.to_thread(storage.fsync_dir, folder)
    log.info("stored source %s (%s) from owner %s", name, sha256, owner)
    return web.json_response(reply, status=201)


@routes.get("/sources/{sha256}/{name}")
async def get_source(request: web.Request) -> web.FileResponse:
    runtime = request.app[RUNTIME]
    sha256, name = _sha256(request.match_info["sha256"], "the path's digest"), _name(request)
    path = storage.sources_dir(runtime.config) / sha256 / name
    if not path.is_file():
        raise error(404, f"no source {name} with sha256 {sha256}")
    return web.FileResponse(path, headers={"Content-Type": "application/x-rpm"})


ROUTES = list(routes)
