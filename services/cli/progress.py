"""`skyline watch` and `skyline status`: a build's tasks, leases (replicas), waiting reasons
and verdicts, as the dispatcher's GET /api/v1/builds/{id} shows them.

`changes` is pure: it compares a build with what was already shown and returns events (dicts
with a `text` line for people), so `watch` prints only what changed, as text or JSON lines.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
from typing import Any

import aiohttp

from . import common
from .common import CliError

FINAL = ("complete", "failed")
POLL_SECONDS = 0.5
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _task_label(task: dict[str, Any]) -> str:
    return f"task {task['task_id']} {task['arch']}"


def changes(build: dict[str, Any], seen: dict[str, Any]) -> list[dict[str, Any]]:
    """Events for what changed since the last call (`seen` remembers what was shown)."""
    events: list[dict[str, Any]] = []
    bid = build["build_id"]

    def event(kind: str, text: str, **fields: Any) -> None:
        events.append({"event": kind, "build_id": bid, **fields, "text": text})

    if "build" not in seen:
        seen["build"] = True
        kind = "scratch build" if build.get("scratch") else "build"
        event(
            "build",
            f"{kind} {bid}: {build['nvr']} by {build['owner']} ({len(build['tasks'])} task(s))",
            nvr=build["nvr"],
            owner=build["owner"],
        )
    for task in build["tasks"]:
        tid = task["task_id"]
        label = _task_label(task)
        state_key = f"task:{tid}"
        if seen.get(state_key) != task["state"]:
            seen[state_key] = task["state"]
            where = f" on {task['host']}" if task.get("host") else ""
            why = f" ({task['reason']})" if task["state"] == "failed" and task["reason"] else ""
            event(
                "task", f"  {label}: {task['state']}{where}{why}", task_id=tid, state=task["state"]
            )
        for lease in task.get("leases", []):
            key = f"lease:{lease['lease_id']}"
            if seen.get(key) != lease["state"]:
                seen[key] = lease["state"]
                purpose = lease.get("purpose") or "build"
                event(
                    "lease",
                    f"  {label}: {purpose} lease to {lease['host']}: {lease['state']}",
                    task_id=tid,
                    lease_id=lease["lease_id"],
                    host=lease["host"],
                    purpose=purpose,
                    state=lease["state"],
                )
        # What it waits for (a replica's agreement), or why no host runs it now (queued).
        queued = task["state"] == "queued"
        wait = task.get("waiting") or (task.get("queue_reason") if queued else None)
        waiting_key = f"waiting:{tid}"
        if wait and seen.get(waiting_key) != wait:
            seen[waiting_key] = wait
            event("waiting", f"  {label}: waiting: {wait}", task_id=tid)
        verdict_key = f"verdict:{tid}"
        if task.get("agreeing") and verdict_key not in seen:
            seen[verdict_key] = True
            hosts = ", ".join(_host_names(task["agreeing"]))
            rule = f" ({task['rule']})" if task.get("rule") else ""
            event(
                "verdict",
                f"  {label}: accepted, agreed by {hosts}{rule}",
                task_id=tid,
                agreeing=task["agreeing"],
                rule=task.get("rule"),
            )
    if build["state"] in FINAL and seen.get("final") != build["state"]:
        seen["final"] = build["state"]
        suffix = f": {build['reason']}" if build.get("reason") else ""
        event("end", f"build {bid} {build['state']}{suffix}", state=build["state"])
    return events


def _host_names(agreeing: Any) -> list[str]:
    """The agreeing hosts, whether listed as names or as objects naming a host."""
    names = []
    for entry in agreeing if isinstance(agreeing, list) else []:
        names.append(str(entry.get("host", entry)) if isinstance(entry, dict) else str(entry))
    return names


def _seconds(value: Any) -> str:
    return "unknown" if value is None else f"{float(value):.0f} s"


def estimate_line(task: dict[str, Any]) -> str | None:
    """A queued task's critical-path figures (estimated seconds at the farm's pace: its own
    work, and the longest path through its chain from it), if the dispatcher has any."""
    work, path = task.get("work"), task.get("path")
    if task["state"] != "queued" or (work is None and path is None):
        return None
    return f"  {_task_label(task)}: estimated work {_seconds(work)}, path {_seconds(path)}"


def status_lines(build: dict[str, Any]) -> list[str]:
    """One build in full: the build, each task with its leases, waits, estimates and verdict."""
    events = changes(build, {})
    lines = [event["text"] for event in events if event["event"] != "end"]
    lines += [line for task in build["tasks"] if (line := estimate_line(task))]
    ends = [event["text"] for event in events if event["event"] == "end"]
    lines += ends or [f"build {build['build_id']} {build['state']}"]
    for task in build["tasks"]:
        for f in task.get("files", []):
            lines.append(f"  {f['path']}  sha256 {f['sha256']}")
    return lines


async def fetch_build(http: aiohttp.ClientSession, base: str, build_id: int) -> dict[str, Any]:
    return await common.call(
        http, "GET", f"{base}/api/v1/builds/{build_id}", what=f"asking for build {build_id}"
    )


async def find_build(
    http: aiohttp.ClientSession, base: str, request_id: str
) -> dict[str, Any] | None:
    found = await common.call(
        http,
        "GET",
        f"{base}/api/v1/builds",
        params={"request_id": request_id},
        what=f"asking for the build of request {request_id}",
    )
    builds = found.get("builds") if isinstance(found, dict) else None
    return builds[0] if builds else None


async def follow(
    http: aiohttp.ClientSession,
    base: str,
    request_id: str | None = None,
    *,
    build_id: int | None = None,
    timeout: float,
    say: Any = print,
    events: Any = None,
) -> dict[str, Any]:
    """Poll the dispatcher at `base`, reporting each change, until the build ends.

    The build is named by `build_id`, or by the `request_id` of the message that asked for it
    (the dispatcher may not have made it yet). Each change goes to `events(event)` if given,
    else its text to `say`.
    """
    deadline = time.monotonic() + timeout
    seen: dict[str, Any] = {}
    report = events or (lambda e: say(e["text"]))
    while True:
        build: dict[str, Any] | None
        if build_id is None:
            assert request_id is not None
            build = await find_build(http, base, request_id)
            if build is not None:
                build_id = build["build_id"]
        else:
            build = await fetch_build(http, base, build_id)
        if build is not None:
            for event in changes(build, seen):
                report(event)
            if build["state"] in FINAL:
                return build
        if time.monotonic() > deadline:
            raise CliError(
                f"gave up waiting after {timeout:g} s; the build goes on: see `skyline status`",
                common.TIMEOUT,
            )
        await asyncio.sleep(POLL_SECONDS)


def build_ref(text: str) -> tuple[int | None, str | None]:
    """A build named by its number or by its request's message id (what submit prints)."""
    if text.isdigit() and len(text) <= 18:
        return int(text), None
    if UUID_RE.fullmatch(text.lower()):
        return None, text.lower()
    raise CliError(f"{text!r} is not a build number or a request id")


def cmd_status(args: argparse.Namespace) -> int:
    config = common.load(args)
    build_id, request_id = build_ref(args.build)
    base = common.dispatcher_url(config)

    async def get() -> dict[str, Any]:
        async with common.session(config) as http:
            if build_id is not None:
                return await fetch_build(http, base, build_id)
            found = await find_build(http, base, str(request_id))
            if found is None:
                raise CliError(f"no build for request {request_id} (yet)", common.NOT_FOUND)
            return found

    build = common.run(get())
    common.emit(args, build, status_lines)
    return common.FAILED if build["state"] == "failed" else common.OK


def cmd_watch(args: argparse.Namespace) -> int:
    config = common.load(args)
    build_id, request_id = build_ref(args.build)

    def report(event: dict[str, Any]) -> None:
        print(json.dumps(event, sort_keys=True) if args.json else event["text"], flush=True)

    async def watch() -> dict[str, Any]:
        async with common.session(config) as http:
            return await follow(
                http,
                common.dispatcher_url(config),
                request_id,
                build_id=build_id,
                timeout=args.timeout,
                events=report,
            )

    build = common.run(watch())
    return common.OK if build["state"] == "complete" else common.FAILED


def register(commands: Any) -> None:
    st = commands.add_parser(
        "status", help="show a build: its tasks, leases, waits and verdicts, once"
    )
    st.add_argument("build", help="a build number, or the request id `skyline submit` printed")
    common.add_json(st)
    st.set_defaults(func=cmd_status)

    w = commands.add_parser(
        "watch", help="follow a build live until it ends (exit 0 complete, 1 failed)"
    )
    w.add_argument("build", help="a build number, or the request id `skyline submit` printed")
    w.add_argument("--timeout", type=float, default=3600, help="seconds to wait (default 3600)")
    w.add_argument("--json", action="store_true", help="one JSON object per change (JSON lines)")
    w.set_defaults(func=cmd_watch)
