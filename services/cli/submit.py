"""`skyline submit`: send a build request (SRPM, spec or URL), optionally follow it."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import sys
import tempfile
from pathlib import Path
from typing import Any

import aiohttp
import aiormq
from skyline_messages import BuildRequestV1

from services.common.bus import Bus
from services.common.config import Config, masked
from services.common.errors import ConfigError
from services.common.http import response_error
from services.common.rpmfiles import SrpmBuildError, make_srpm, sha256_file

from . import common
from .common import CliError
from .progress import follow

SubmitError = CliError  # the name this module's callers used before common.py


async def _raise_for(response: aiohttp.ClientResponse, what: str) -> None:
    if response.status >= 400:
        detail = await response_error(response)
        raise CliError(
            f"{what} failed ({response.status}): {detail}", common.code_for_status(response.status)
        )


async def upload_srpm(
    http: aiohttp.ClientSession, config: Config, srpm: Path, *, token: str
) -> tuple[str, str]:
    """Put a local SRPM on the collector, which serves it to builders; returns (url, sha256).

    `token` is the owner's token (from the registry's admin): the collector takes sources
    only from owners.
    """
    if not token:
        raise CliError("uploading a source RPM needs an owner token (ask the admin for one)")
    digest = await asyncio.to_thread(sha256_file, srpm)
    url = f"{common.collector_url(config)}/api/v1/sources/{digest}/{srpm.name}"
    headers = {"Authorization": f"Bearer {token}"}
    try:
        with srpm.open("rb") as body:
            async with http.put(url, data=body, headers=headers) as response:
                await _raise_for(response, f"uploading {srpm.name}")
                return (await response.json())["url"], digest
    except aiohttp.ClientConnectionError as exc:
        raise CliError(
            f"uploading {srpm.name}: cannot reach {url} ({exc})", common.UNREACHABLE
        ) from None


async def digest_of_url(http: aiohttp.ClientSession, url: str) -> str:
    """The SHA-256 of a remote SRPM, so builders can check they build exactly that."""
    digest = hashlib.sha256()
    try:
        async with http.get(url) as response:
            await _raise_for(response, f"downloading {url}")
            async for chunk in response.content.iter_chunked(1 << 20):
                digest.update(chunk)
    except aiohttp.ClientConnectionError as exc:
        raise CliError(f"downloading {url}: {exc}", common.UNREACHABLE) from None
    return digest.hexdigest()


def _local_file(source: str) -> Path:
    path = Path(source)
    if not path.is_file():
        raise CliError(f"{source}: no such file")
    return path


async def resolve_source(
    http: aiohttp.ClientSession, config: Config, source: str, say: Any, *, token: str = ""
) -> tuple[str, str]:
    if source.startswith(("http://", "https://")):
        return source, await digest_of_url(http, source)
    path = _local_file(source)
    if path.suffix == ".spec":
        outdir = Path(tempfile.mkdtemp(prefix="skyline-srpm-"))
        try:
            path = await asyncio.to_thread(make_srpm, path, outdir)
        except SrpmBuildError as exc:
            raise CliError(
                f"{source}: rpmbuild could not make an SRPM of it: {_last(exc)}"
            ) from None
        say(f"built {path.name} from the spec")
    if not path.name.endswith(".src.rpm"):
        raise CliError(f"{source}: expected a .src.rpm, a .spec or an http(s) URL")
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
    priority: int | None = None,
    wait: bool = True,
    timeout: float = 3600,
    say: Any = print,
    token: str = "",
) -> dict[str, Any]:
    """Publish a build request; returns {"request_id", "topic", "build"}, where `build` is
    the final build with `wait` (followed until it ends), else None.

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
        if priority is not None:
            body["priority"] = priority
        request = BuildRequestV1(body=body, topic=BuildRequestV1.topic_for(bus.user))
        try:
            request.validate()
        except Exception as exc:  # jsonschema's message names the bad field
            raise CliError(f"invalid request: {getattr(exc, 'message', exc)}") from None
        try:
            await asyncio.wait_for(bus.connect(), config.cli.timeout)
            await bus.publish(request)
        except aiormq.exceptions.ProbableAuthenticationError:
            raise CliError(
                f"the broker at {masked(config.amqp_url)} refused {bus.user}'s credentials"
                " (amqp_user, amqp_password_file)",
                common.REFUSED,
            ) from None
        except (aiormq.exceptions.AMQPError, OSError, TimeoutError) as exc:
            raise CliError(
                f"cannot publish to the broker at {masked(config.amqp_url)}: "
                f"{str(exc) or type(exc).__name__}",
                common.UNREACHABLE,
            ) from None
        finally:
            await bus.close()
        say(f"published {request.topic} {request.id}: {request.summary}")
        result: dict[str, Any] = {"request_id": request.id, "topic": request.topic, "build": None}
        if wait:
            result["build"] = await follow(
                http, common.dispatcher_url(config), request.id, timeout=timeout, say=say
            )
        return result


def _last(exc: SrpmBuildError) -> str:
    """rpmbuild's last words (the reason), for a one-line error."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1][:300] if lines else "rpmbuild failed"


def print_files(build: dict[str, Any], topdir: Path, out: Any = sys.stdout) -> None:
    for task in build["tasks"]:
        for f in task["files"]:
            print(f"  {topdir / f['path']}  sha256 {f['sha256']}", file=out)


def register(commands: Any) -> None:
    s = commands.add_parser(
        "submit",
        help="request a build and follow it to the end",
        description="Publish a build request as your broker user (amqp_user); a local SRPM or"
        " spec is uploaded to the collector first. Exit codes: see `skyline --help`.",
    )
    s.add_argument("source", help="an SRPM file, a .spec file, or an http(s) URL of an SRPM")
    s.add_argument("--arch", action="append", help="architecture (repeatable; default noarch)")
    s.add_argument("--scratch", action="store_true", help="a scratch build")
    s.add_argument(
        "--owner", help="whose build it is (default: your broker user, amqp_user in the config)"
    )
    s.add_argument("--release", help="release to build for (default: any)")
    s.add_argument(
        "--priority", type=int, help="0 (last) to 1000 (first); default 100 (mass rebuilds: 10)"
    )
    s.add_argument("--no-wait", action="store_true", help="publish and return")
    s.add_argument("--timeout", type=float, default=3600, help="seconds to wait (default 3600)")
    common.add_json(s)
    s.set_defaults(func=cmd_submit)


def cmd_submit(args: argparse.Namespace) -> int:
    config = common.load(args)
    if args.priority is not None and not 0 <= args.priority <= 1000:
        raise CliError(f"--priority must be from 0 to 1000, not {args.priority}")
    try:
        result = common.run(
            submit(
                config,
                args.source,
                arches=args.arch or ["noarch"],
                owner=args.owner,
                scratch=args.scratch,
                release=args.release,
                priority=args.priority,
                wait=not args.no_wait,
                timeout=args.timeout,
                say=common.say(args),
            )
        )
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    build = result["build"]
    if args.json:
        common.emit(args, result, lambda _: [])
    elif build is not None and build["state"] == "complete":
        print("stored in Koji storage:")
        print_files(build, config.path(config.collector.koji_topdir))
    if build is None:
        return common.OK
    return common.OK if build["state"] == "complete" else common.FAILED
