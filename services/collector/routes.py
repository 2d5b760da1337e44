"""HTTP: builders upload results, packagers upload source RPMs, builders fetch them.

PUT  /api/v1/uploads/{lease_id}/{name}   a result file, header X-Skyline-Sha256: <hex digest>,
                                         signed by the lease's host (auth.py)
GET  /api/v1/uploads/{lease_id}          {"files": [{name, size, sha256}]}: what is staged
GET  /api/v1/leases/{lease_id}           {"lease_id", "state", "files"}: the lease's state
                                         (open, stored, failed, superseded) and the files
                                         it stored, as build.stored lists them
PUT  /api/v1/sources/{sha256}/{name}     an N-V-R.src.rpm, stored by digest
GET  /sources/{sha256}/{name}            download it

An upload must be signed by the lease's host with its enrolled key (auth.py): 401 without
the signing headers, 403 when they do not prove that host now, 503 when the registry cannot
be asked for the key (the builder retries).

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
import os
import re
import uuid

from aiohttp import web
from skyline_messages.base import FILE_NAME

from services.common.http import error
from services.common.rpmfiles import RpmCheckError, check_rpm_digests, read_rpm_info
from services.common.service import RUNTIME

from . import auth, storage, store
from .spool import spool

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

SHA256_HEADER = "X-Skyline-Sha256"
_FILE_NAME = re.compile(FILE_NAME["pattern"])
_SHA256 = re.compile(r"[0-9a-f]{64}")


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
    return request.app[RUNTIME].config.collector.max_upload_mb * 1024 * 1024


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
    if lease["state"] != "open" or lease["cleaned_at"] is not None:
        raise error(409, f"lease {lease_id} is {lease['state']} and takes no more uploads")
    if staged is not None and staged["sha256"] == expected:  # a retry: no need to read the body
        return _file(staged["name"], staged["size"], staged["sha256"])
    folder = storage.staging_dir(runtime.config, lease_id)
    await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
    async with spool(request, folder, name, _limit(request)) as part:
        if part.sha256 != expected:
            raise error(422, f"{name}: body has sha256 {part.sha256}, header says {expected}")
        async with runtime.transaction() as ctx:
            # FOR SHARE: a lease being stored is waited for, then found closed.
            if not await store.lease_takes_uploads(ctx.conn, lease_id):
                raise error(409, f"lease {lease_id} was closed during the upload")
            previous = await store.stage_file(ctx.conn, lease_id, name, part.size, part.sha256)
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
        rows = await store.staged_files(conn, lease_id)
    return web.json_response({"files": [dict(r) for r in rows]})


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


@routes.put("/api/v1/sources/{sha256}/{name}")
async def put_source(request: web.Request) -> web.Response:
    """Store a source RPM under its digest; it must be an SRPM named after its own header."""
    runtime = request.app[RUNTIME]
    sha256, name = _sha256(request.match_info["sha256"], "the path's digest"), _name(request)
    if not name.endswith(".src.rpm"):
        raise error(400, "a source upload must be an N-V-R.src.rpm")
    folder = storage.sources_dir(runtime.config) / sha256
    url = f"{runtime.config.collector.public_url.rstrip('/')}/sources/{sha256}/{name}"
    reply = {"url": url, "sha256": sha256}
    async with runtime.pool.acquire() as conn:
        known = await store.get_source(conn, sha256)
    if known is not None and (folder / known["name"]).is_file():
        if known["name"] != name:
            raise error(409, f"this SRPM is stored as {known['name']}")
        return web.json_response(reply)
    await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
    async with spool(request, folder, name, _limit(request)) as part:
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
            await store.add_source(ctx.conn, sha256, name, part.size)
            os.replace(part.path, folder / name)
            await asyncio.to_thread(storage.fsync_dir, folder)
    log.info("stored source %s (%s)", name, sha256)
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
