"""`skyline submit` and `skyline status`: send a build request, follow it to the end."""

from __future__ import annotations

import asyncio
import hashlib
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from skyline_messages import BuildRequestV1

from services.common.bus import Bus
from services.common.config import Config
from services.common.rpmfiles import make_srpm, sha256_file

FINAL = ("complete", "failed")


class SubmitError(Exception):
    """Something the user can fix: say what, no traceback."""


def dispatcher_url(config: Config) -> str:
    return f"http://{config.dispatcher.listen}"


async def _raise_for(response: aiohttp.ClientResponse, what: str) -> None:
    if response.status >= 400:
        try:
            detail = (await response.json())["error"]
        except (aiohttp.ContentTypeError, KeyError, ValueError):
            detail = (await response.text())[:300]
        raise SubmitError(f"{what} failed ({response.status}): {detail}")


async def upload_srpm(
    http: aiohttp.ClientSession, config: Config, srpm: Path, *, token: str
) -> tuple[str, str]:
    """Put a local SRPM on the collector, which serves it to builders; returns (url, sha256).

    `token` is the owner's token (from the registry's admin): the collector takes sources
    only from owners.
    """
    if not token:
        raise SubmitError("uploading a source RPM needs an owner token (ask the admin for one)")
    digest = await asyncio.to_thread(sha256_file, srpm)
    url = f"{config.collector.public_url}/api/v1/sources/{digest}/{srpm.name}"
    headers = {"Authorization": f"Bearer {token}"}
    with srpm.open("rb") as body:
        async with http.put(url, data=body, headers=headers) as response:
            await _raise_for(response, f"uploading {srpm.name}")
            return (await response.json())["url"], digest


async def digest_of_url(http: aiohttp.ClientSession, url: str) -> str:
    """The SHA-256 of a remote SRPM, so builders can check they build exactly that."""
    digest = hashlib.sha256()
    async with http.get(url) as response:
        await _raise_for(response, f"downloading {url}")
        async for chunk in response.content.iter_chunked(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _local_file(source: str) -> Path:
    path = Path(source)
    if not path.is_file():
        raise SubmitError(f"{source}: no such file")
    return path


async def resolve_source(
    http: aiohttp.ClientSession, config: Config, source: str, say: Any, *, token: str = ""
) -> tuple[str, str]:
    if source.startswith(("http://", "https://")):
        return source, await digest_of_url(http, source)
    path = _local_file(source)
    if path.suffix == ".spec":
        outdir = Path(tempfile.mkdtemp(prefix="skyline-srpm-"))
        path = await asyncio.to_thread(make_srpm, path, outdir)
        say(f"built {path.name} from the spec")
    if not path.name.endswith(".src.rpm"):
        raise SubmitError(f"{source}: expected a .src.rpm, a .spec or an http(s) URL")
    url, digest = await upload_srpm(http, config, path, token=token)
    say(f"uploaded {path.name} (sha256 {digest[:12]}…)")
    return url, digest


async def submit(
    config: Config,
    source: str,
    *,
    arches: list[str],
    owner: str | None = None,
    scratch: bool = False,
    release: str | None = None,
    wait: bool = True,
    timeout: float = 3600,
    say: Any = print,
    token: str = "",
) -> dict[str, Any] | None:
    """Publish a build request; with `wait`, follow it and return the final build.

    It goes out as the configured broker user (amqp_user), on that principal's own routing
    key; `owner` defaults to that principal (another owner needs the dispatcher's
    `may_act_for`). `token` is the owner's token, sent with a local SRPM's upload; it defaults
    to the broker user's password (amqp_password_file): an owner has one secret for both.
    """
    bus = Bus(config.broker_url(), exchange=config.exchange, name="skyline-cli")
    if not token and config.amqp_user:
        token = config.secret(config.amqp_password_file, "amqp_password_file")
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as http:
        srpm_url, digest = await resolve_source(http, config, source, say, token=token)
        body: dict[str, Any] = {
            "srpm_url": srpm_url,
            "srpm_sha256": digest,
            "arches": arches,
            "owner": owner or bus.user,
            "scratch": scratch,
        }
        if release:
            body["release"] = release
        request = BuildRequestV1(body=body, topic=BuildRequestV1.topic_for(bus.user))
        try:
            request.validate()
        except Exception as exc:  # jsonschema's message names the bad field
            raise SubmitError(f"invalid request: {getattr(exc, 'message', exc)}") from None
        await bus.connect()
        try:
            await bus.publish(request)
        finally:
            await bus.close()
        say(f"published {request.topic} {request.id}: {request.summary}")
        if not wait:
            return None
        return await follow(http, config, request.id, timeout=timeout, say=say)


async def follow(
    http: aiohttp.ClientSession,
    config: Config,
    request_id: str,
    *,
    timeout: float,
    say: Any = print,
) -> dict[str, Any]:
    """Poll the dispatcher and print each change of the build and its tasks until it ends."""
    deadline = time.monotonic() + timeout
    base = dispatcher_url(config)
    build: dict[str, Any] | None = None
    seen: dict[Any, str] = {}
    while time.monotonic() < deadline:
        if build is None:
            async with http.get(f"{base}/api/v1/builds", params={"request_id": request_id}) as r:
                await _raise_for(r, "asking the dispatcher")
                found = (await r.json())["builds"]
            build = found[0] if found else None
        else:
            async with http.get(f"{base}/api/v1/builds/{build['build_id']}") as r:
                await _raise_for(r, "asking the dispatcher")
                build = await r.json()
        if build is not None:
            for line in progress_lines(build, seen):
                say(line)
            if build["state"] in FINAL:
                return build
        await asyncio.sleep(0.5)
    raise SubmitError(f"gave up waiting after {timeout:.0f} s; see `skyline status`")


def progress_lines(build: dict[str, Any], seen: dict[Any, str]) -> list[str]:
    """New lines for what changed since the last call (`seen` remembers)."""
    lines = []
    if seen.get("build") is None:
        lines.append(f"build {build['build_id']}: {build['nvr']} ({len(build['tasks'])} task(s))")
        seen["build"] = "shown"
    for task in build["tasks"]:
        state = task["state"]
        # A queued task's reason to wait may change while it stays queued: shown again then.
        shown = f"{state}: {task.get('queue_reason')}" if state == "queued" else state
        if seen.get(task["task_id"]) != shown:
            seen[task["task_id"]] = shown
            where = f" on {task['host']}" if task["host"] else ""
            why = f" ({task['reason']})" if state in ("queued", "failed") and task["reason"] else ""
            if state == "queued" and task.get("queue_reason"):
                why += f" [waits: {task['queue_reason']}]"
            lines.append(f"  task {task['task_id']} {task['arch']:<8} {state}{where}{why}")
    if build["state"] in FINAL and seen.get("final") != build["state"]:
        seen["final"] = build["state"]
        suffix = f": {build['reason']}" if build["reason"] else ""
        lines.append(f"build {build['build_id']} {build['state']}{suffix}")
    return lines


async def status(config: Config, build_id: int) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{dispatcher_url(config)}/api/v1/builds/{build_id}") as response,
    ):
        await _raise_for(response, f"asking for build {build_id}")
        return await response.json()


def print_files(build: dict[str, Any], topdir: Path, out: Any = sys.stdout) -> None:
    for task in build["tasks"]:
        for f in task["files"]:
            print(f"  {topdir / f['path']}  sha256 {f['sha256']}", file=out)
