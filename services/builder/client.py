"""The builder's HTTP side: enrol with the registry, fetch SRPMs, upload results to the collector.

A builder only connects out (design.md, Builders), so everything here is a client call. Each
call retries what is worth retrying, with jittered exponential backoff: a registry or collector
that is (re)starting must not fail an hour-long build, and 100,000 hosts coming back after an
outage must not all knock at the same second.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import os
import random
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote

import aiohttp
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from yarl import URL

from services.common.errors import SkylineError
from services.common.http import response_error
from services.common.rpmfiles import sha256_file
from services.common.signing import now_iso, sign_body, sign_fields

log = logging.getLogger(__name__)

CHUNK = 1024 * 1024
SHA256_HEADER = "X-Skyline-Sha256"
# An upload is signed with the host's enrolled key: the lease id alone is no secret (every
# reader of `skyline.task.leased.*` sees it). The collector checks these (collector/routes.py).
HOST_HEADER = "X-Skyline-Host"
SIGNED_AT_HEADER = "X-Skyline-Signed-At"
SIGNATURE_HEADER = "X-Skyline-Signature"
# What may go wrong on the way rather than at the other end: worth another try.
NETWORK_ERRORS = (aiohttp.ClientError, TimeoutError, ConnectionError)


class EnrolmentError(SkylineError):
    """The registry did not enrol this host; the message tells the volunteer what to do."""


class FetchError(SkylineError):
    """The SRPM could not be downloaded."""


class UploadError(SkylineError):
    """The collector refused an upload, or kept failing until we gave up."""


@dataclasses.dataclass(frozen=True)
class HostProfile:
    """What the registry records about a host at enrolment (the body of POST /api/v1/hosts)."""

    host: str
    owner: str
    public_key: str
    arches: list[str]
    releases: list[str]
    cpus: int
    memory_mb: int
    disk_gb: int
    # How it confines its builds (sandbox.Sandbox.kind), as its heartbeats say; None: unsaid.
    sandbox: str | None = None

    def body(self) -> dict[str, Any]:
        """The enrolment body: the profile without what it leaves unsaid (null is no value)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


def backoff(base: float, cap: float) -> Iterator[float]:
    """Delays doubling from `base` up to `cap`, each jittered down by up to half."""
    delay = base
    while True:
        yield delay * random.uniform(0.5, 1.0)
        delay = min(cap, delay * 2)


async def enrol(
    session: aiohttp.ClientSession,
    registry_url: str,
    profile: HostProfile,
    *,
    signing_key: Ed25519PrivateKey,
    token: str = "",
    key_file: Path | None = None,
    deadline: float = 60.0,
    base_delay: float = 1.0,
) -> dict[str, Any]:
    """Enrol (or re-confirm) this host and its public key; returns the registry's JSON reply.

    Each try is signed anew with the host's key (`signing_key`): the registry takes a change
    only from the key's holder, and refuses a signature older than one it has seen.

    Enrolling again with the same key is how every start confirms the registration, so
    200 and 201 are both success. Connection errors and 5xx are retried for `deadline`
    seconds, since the registry may still be starting next to us.
    """
    url = f"{registry_url.rstrip('/')}/api/v1/hosts"
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    loop = asyncio.get_running_loop()
    give_up = loop.time() + deadline
    delays = backoff(base_delay, 10.0)
    while True:
        try:
            body = sign_body(profile.body(), signing_key)
            async with session.post(url, json=body, headers=headers) as resp:
                if resp.status in (200, 201):
                    return await _json_object(resp)
                detail = await response_error(resp)
                if resp.status < 500:
                    raise EnrolmentError(_refusal(profile, resp.status, detail, key_file))
                problem = f"HTTP {resp.status}: {detail}"
        except NETWORK_ERRORS as exc:
            problem = str(exc) or type(exc).__name__
        delay = next(delays)
        if loop.time() + delay > give_up:
            raise EnrolmentError(
                f"cannot enrol with the registry at {url}: {problem} (gave up after {deadline:g} s)"
            )
        log.warning("registry not ready (%s); retrying in %.1f s", problem, delay)
        await asyncio.sleep(delay)


def _refusal(profile: HostProfile, status: int, detail: str, key_file: Path | None) -> str:
    if status == 409:
        key = f" ({key_file})" if key_file else ""
        return (
            f"the registry already has a host named {profile.host!r} enrolled with a different "
            f"key ({detail}). If this is that same machine, put back the key file it enrolled "
            f"with{key}; if it is another machine, choose another name with --host or "
            f"[builder] host. A Skyline admin can also remove the old enrolment."
        )
    if status in (401, 403):
        return (
            f"the registry refused the enrolment ({detail}): set [builder] enrol_token to your "
            f"owner token (from your Skyline admins, or your sponsor's invitation)"
        )
    return f"the registry refused to enrol {profile.host!r}: HTTP {status}: {detail}"


async def _json_object(resp: aiohttp.ClientResponse) -> dict[str, Any]:
    try:
        data = await resp.json(content_type=None)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


async def fetch_srpm(
    session: aiohttp.ClientSession,
    url: str,
    dest: Path,
    expected_sha256: str,
    max_bytes: int,
    *,
    tries: int = 10,  # ~2-4 min: a collector restart must not fail a packager's build
    base_delay: float = 1.0,
) -> str:
    """Download `url` to `dest`, hashing as it streams; return the sha256 of what arrived.

    The caller compares the result with the lease: a mismatch is a finding to report, not an
    error here. A file already at `dest` with the expected digest (a resumed task) is kept.
    """
    if URL(url).scheme not in ("http", "https"):
        raise FetchError(f"refusing to fetch {url!r}: only http and https are allowed")
    if await asyncio.to_thread(_has_digest, dest, expected_sha256):
        return expected_sha256
    part = dest.with_name(dest.name + ".part")
    delays = backoff(base_delay, 60.0)
    for attempt in range(1, tries + 1):
        try:
            return await _download(session, url, dest, part, max_bytes)
        except _Transient as exc:
            problem = str(exc)
        except NETWORK_ERRORS as exc:
            problem = str(exc) or type(exc).__name__
        finally:
            part.unlink(missing_ok=True)
        if attempt == tries:
            break
        delay = next(delays)
        log.warning("fetching %s failed (%s); retrying in %.1f s", url, problem, delay)
        await asyncio.sleep(delay)
    raise FetchError(f"cannot fetch {url}: {problem} (after {tries} tries)")


class _Transient(Exception):
    """A server-side failure worth another try."""


async def _download(
    session: aiohttp.ClientSession, url: str, dest: Path, part: Path, max_bytes: int
) -> str:
    async with session.get(url) as resp:
        if resp.status != 200:
            detail = f"HTTP {resp.status}: {await response_error(resp)}"
            if resp.status >= 500 or resp.status == 429:
                raise _Transient(detail)
            raise FetchError(f"cannot fetch {url}: {detail}")
        if resp.content_length is not None and resp.content_length > max_bytes:
            raise FetchError(f"{url} is {resp.content_length} bytes, over the {max_bytes} limit")
        digest = hashlib.sha256()
        size = 0
        # Disk writes go to a thread: a volunteer's disk busy with a build must not stall
        # the event loop (and with it the heartbeat). One hop per MiB costs next to nothing.
        out = await asyncio.to_thread(open, part, "wb")
        try:
            async for chunk in resp.content.iter_chunked(CHUNK):
                size += len(chunk)
                if size > max_bytes:
                    raise FetchError(f"{url} is over the {max_bytes} byte limit")
                digest.update(chunk)
                await asyncio.to_thread(out.write, chunk)
        finally:
            await asyncio.to_thread(out.close)
    await asyncio.to_thread(os.replace, part, dest)
    return digest.hexdigest()


def _has_digest(path: Path, sha256: str) -> bool:
    return path.is_file() and sha256_file(path) == sha256


async def _blocks(body: BinaryIO, size: int) -> AsyncIterator[bytes]:
    """`size` bytes of `body` in CHUNK blocks, each read in a thread; a file that shrank
    since it was measured is an error, not a short body the collector would wait on."""
    left = size
    while left:
        block = await asyncio.to_thread(body.read, min(CHUNK, left))
        if not block:
            raise UploadError(f"{body.name} shrank during its upload")
        left -= len(block)
        yield block


def upload_headers(
    lease_id: str,
    name: str,
    sha256: str,
    *,
    host: str,
    key: Ed25519PrivateKey,
    signed_at: str | None = None,
) -> dict[str, str]:
    """The headers that name an upload's digest and sign it as `host`'s, at `signed_at`."""
    signed_at = signed_at or now_iso()
    fields = {
        "lease_id": lease_id,
        "name": name,
        "sha256": sha256,
        "host": host,
        "signed_at": signed_at,
    }
    return {
        SHA256_HEADER: sha256,
        HOST_HEADER: host,
        SIGNED_AT_HEADER: signed_at,
        SIGNATURE_HEADER: sign_fields(fields, key),
    }


async def upload(
    session: aiohttp.ClientSession,
    collector_url: str,
    lease_id: str,
    path: Path,
    sha256: str,
    *,
    host: str,
    key: Ed25519PrivateKey,
    tries: int = 12,  # ~4-8 min, well inside a lease
    base_delay: float = 1.0,
    max_delay: float = 60.0,
) -> None:
    """PUT `path` to the collector under the lease, streamed, signed with the host's key.

    404 is retried with the rest: the collector learns about leases from the bus and may not
    have seen this one yet; so are 429 (this host's upload rate) and 503 (e.g. the collector
    cannot reach the registry for our key). Any other 4xx, 401, 403 and 413 (a lease's limits)
    included, is final and raised with the server's reason.
    """
    url = (
        f"{collector_url.rstrip('/')}/api/v1/uploads/"
        f"{quote(lease_id, safe='')}/{quote(path.name, safe='')}"
    )
    delays = backoff(base_delay, max_delay)
    for attempt in range(1, tries + 1):
        # Signed afresh each try: the collector refuses signatures older than a few minutes,
        # and retries can span longer than that.
        headers = {
            **upload_headers(lease_id, path.name, sha256, host=host, key=key),
            "Content-Type": "application/octet-stream",
        }
        try:
            # A fresh file object per try, read in CHUNK blocks in a thread (aiohttp's own
            # file payload hands 256 KiB at a time to its executor: 4x the thread hops).
            body = await asyncio.to_thread(open, path, "rb", buffering=0)
            with body:
                size = (await asyncio.to_thread(os.fstat, body.fileno())).st_size
                # Sized, not chunked: the collector refuses one past its limits unread.
                headers["Content-Length"] = str(size)
                data = _blocks(body, size)
                async with session.put(url, data=data, headers=headers) as resp:
                    if resp.status < 300:
                        return
                    detail = await response_error(resp)
                    if resp.status < 500 and resp.status not in (404, 429):
                        raise UploadError(
                            f"collector refused {path.name}: HTTP {resp.status}: {detail}"
                        )
                    problem = f"HTTP {resp.status}: {detail}"
        except NETWORK_ERRORS as exc:
            problem = str(exc) or type(exc).__name__
        if attempt == tries:
            break
        delay = next(delays)
        log.warning("upload of %s failed (%s); retrying in %.1f s", path.name, problem, delay)
        await asyncio.sleep(delay)
    raise UploadError(f"cannot upload {path.name} to {url}: {problem} (after {tries} tries)")
