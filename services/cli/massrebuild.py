"""`skyline mass-rebuild`: rebuild many packages at mass-rebuild priority, from a list of
sources (SRPM files or URLs) or from a Koji tag (the latest builds `listTagged` names on a
hub, their SRPMs fetched from the hub's topurl), with a progress line and a summary.

Mass rebuilds go at priority MASS_REBUILD_PRIORITY (BuildRequestV1's `priority`: higher is
sooner, a plain request is 100), so that interactive builds pass them in the queue.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import time
from collections.abc import Callable, Iterable
from typing import Any

import aiohttp
import koji
from skyline_messages import BuildRequestV1

from services.common.bus import Bus
from services.common.config import Config

from . import common
from .common import dispatcher_url
from .progress import FINAL
from .submit import SubmitError, _raise_for, resolve_source

MASS_REBUILD_PRIORITY = 10
MAX_SOURCES = 20_000  # one run's requests (Fedora has about 25,000 source packages)
POLL_CONCURRENCY = 8
POLL_SECONDS = 2.0


@dataclasses.dataclass
class Summary:
    built: int = 0
    failed: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    waiting: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    failed_nvrs: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def done(self) -> bool:
        return not self.waiting

    def line(self) -> str:
        return (
            f"built {self.built}, failed {sum(self.failed.values())},"
            f" waiting {sum(self.waiting.values())}"
        )

    def report(self) -> list[str]:
        lines = [self.line()]
        if self.failed:
            lines.append("failed:")
            lines += [f"  {nvr}: {why}" for nvr, why in sorted(self.failed_nvrs.items())]
        if self.waiting:
            lines.append("waiting:")
            lines += [f"  {n}: {why}" for why, n in self.waiting.most_common()]
        return lines


def waiting_reason(build: dict[str, Any] | None) -> str:
    """Why a build is not finished yet, in one phrase (the dispatcher's own words if any)."""
    if build is None:
        return "not queued by the dispatcher yet"
    if build["waiting"]:
        return build["waiting"][0].split(": ", 1)[-1]
    states = {t["state"] for t in build["tasks"]}
    if states & {"verified"}:
        return "being stored"
    if "leased" in states:
        return "building"
    return "queued for a host"


def summarize(builds: Iterable[dict[str, Any] | None]) -> Summary:
    """Pure: count builds by outcome, failures and waits by reason."""
    summary = Summary()
    for build in builds:
        if build is not None and build["state"] == "complete":
            summary.built += 1
        elif build is not None and build["state"] == "failed":
            reason = build["reason"] or "no reason given"
            summary.failed[reason] += 1
            summary.failed_nvrs[build["nvr"]] = reason
        else:
            summary.waiting[waiting_reason(build)] += 1
    return summary


def tagged_sources(hub_url: str, topurl: str, tag: str) -> list[str]:
    """The SRPM URLs of the latest builds in a Koji tag (inherited ones too, as Koji's
    `listTagged` gives them)."""
    session = koji.ClientSession(hub_url)
    paths = koji.PathInfo(topdir=topurl.rstrip("/"))
    try:
        builds = session.listTagged(tag, latest=True, inherit=True)
    except koji.GenericError as exc:
        raise SubmitError(f"Koji hub {hub_url}: cannot list tag {tag!r}: {exc}") from None
    urls = []
    for build in sorted(builds, key=lambda b: b["nvr"]):
        srpms = session.listRPMs(buildID=build["build_id"], arches="src")
        if not srpms:
            raise SubmitError(f"Koji build {build['nvr']} has no source RPM")
        urls.append(f"{paths.build(build)}/{paths.rpm(srpms[0])}")
    return urls


async def publish_requests(
    config: Config,
    sources: list[str],
    *,
    arches: list[str],
    priority: int = MASS_REBUILD_PRIORITY,
    scratch: bool = False,
    say: Callable[[str], None] = print,
    token: str = "",
) -> list[BuildRequestV1]:
    """One build request per source, at `priority`, as the configured broker user."""
    if len(sources) > MAX_SOURCES:
        raise SubmitError(f"{len(sources)} sources: at most {MAX_SOURCES} per mass rebuild")
    if not token and config.amqp_user:
        token = config.secret(config.amqp_password_file, "amqp_password_file")
    bus = Bus(config.broker_url(), exchange=config.exchange, name="skyline-cli")
    requests = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as http:
        for source in sources:
            url, digest = await resolve_source(http, config, source, lambda _: None, token=token)
            body = {
                "srpm_url": url,
                "srpm_sha256": digest,
                "arches": arches,
                "owner": bus.user,
                "scratch": scratch,
                "priority": priority,
            }
            request = BuildRequestV1(body=body, topic=BuildRequestV1.topic_for(bus.user))
            try:
                request.validate()
            except Exception as exc:  # jsonschema's message names the bad field
                raise SubmitError(f"{source}: {getattr(exc, 'message', exc)}") from None
            requests.append(request)
    await bus.connect()
    try:
        for request in requests:
            await bus.publish(request)
    finally:
        await bus.close()
    say(f"published {len(requests)} build request(s) at priority {priority}")
    return requests


async def follow_all(
    config: Config,
    request_ids: list[str],
    *,
    timeout: float,
    say: Callable[[str], None] = print,
) -> Summary:
    """Poll the dispatcher until every request's build is final (or `timeout`), printing the
    progress line whenever it changes; returns the last summary."""
    base = dispatcher_url(config)
    builds: dict[str, dict[str, Any] | None] = dict.fromkeys(request_ids)
    gate = asyncio.Semaphore(POLL_CONCURRENCY)
    deadline = time.monotonic() + timeout
    last = ""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:

        async def refresh(request_id: str) -> None:
            async with (
                gate,
                http.get(f"{base}/api/v1/builds", params={"request_id": request_id}) as r,
            ):
                await _raise_for(r, "asking the dispatcher")
                found = (await r.json())["builds"]
            builds[request_id] = found[0] if found else None

        while True:
            pending = [i for i, b in builds.items() if b is None or b["state"] not in FINAL]
            await asyncio.gather(*(refresh(i) for i in pending))
            summary = summarize(builds.values())
            if summary.line() != last:
                last = summary.line()
                say(last)
            if summary.done or time.monotonic() > deadline:
                return summary
            await asyncio.sleep(POLL_SECONDS)


async def mass_rebuild(
    config: Config,
    sources: list[str],
    *,
    arches: list[str],
    tag: str | None = None,
    hub_url: str = "",
    topurl: str = "",
    wait: bool = True,
    timeout: float = 7 * 24 * 3600,
    say: Callable[[str], None] = print,
) -> Summary | None:
    if tag is not None:
        if not hub_url or not topurl:
            raise SubmitError("a mass rebuild from a tag needs --koji-hub and --koji-topurl")
        sources = sources + await asyncio.to_thread(tagged_sources, hub_url, topurl, tag)
        say(f"{tag}: {len(sources)} build(s) tagged")
    if not sources:
        raise SubmitError("nothing to rebuild: name sources or a --tag")
    requests = await publish_requests(config, sources, arches=arches, say=say)
    if not wait:
        return None
    summary = await follow_all(config, [r.id for r in requests], timeout=timeout, say=say)
    for line in summary.report():
        say(line)
    return summary


def register(commands: Any) -> None:
    m = commands.add_parser(
        "mass-rebuild", help="rebuild many sources, or a Koji tag's builds, at low priority"
    )
    m.add_argument("sources", nargs="*", help="SRPM files or http(s) URLs")
    m.add_argument("--tag", help="also every latest build in this Koji tag")
    m.add_argument("--koji-hub", help="the hub's XML-RPC URL (default [collector] koji_hub_url)")
    m.add_argument("--koji-topurl", help="the hub's file URL (koji.conf's topurl)")
    m.add_argument("--arch", action="append", help="architecture (repeatable; default noarch)")
    m.add_argument("--no-wait", action="store_true", help="publish and return")
    m.add_argument("--timeout", type=float, default=7 * 24 * 3600, help="seconds to follow")
    m.set_defaults(func=cmd_mass_rebuild)


def cmd_mass_rebuild(args: Any) -> int:
    config = common.load(args)
    summary = common.run(
        mass_rebuild(
            config,
            list(args.sources),
            arches=args.arch or ["noarch"],
            tag=args.tag,
            hub_url=args.koji_hub or config.collector.koji_hub_url,
            topurl=args.koji_topurl or "",
            wait=not args.no_wait,
            timeout=args.timeout,
        )
    )
    done = summary is None or (summary.done and not summary.failed)
    return common.OK if done else common.FAILED
