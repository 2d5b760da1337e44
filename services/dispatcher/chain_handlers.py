"""Chain builds: queue a chain request as one build per link, release a link when the links
it comes after are stored, and fail it at once when one of them failed (chains.py says how).

Hooks for handlers.py: `link_complete` after a build completes, `link_failed` after a build
failed. A blocked link's tasks are in state 'blocked', which no scheduling query picks up.
"""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
from skyline_messages import BuildChainRequestV1, BuildQueuedV1, BuildRequestV1

from services.common.errors import Reject
from services.common.service import Context

from . import chains, critical, handlers, matching, store

log = logging.getLogger(__name__)


async def on_chain_request(msg: BuildChainRequestV1, ctx: Context) -> None:
    if not matching.may_request_for(msg.requester, msg.owner, ctx.config.dispatcher.may_act_for):
        raise Reject(f"{msg.requester} may not request builds for owner {msg.owner!r}")
    links = msg.links
    why = chains.refusal(links)
    if why is not None:
        raise Reject(f"chain request refused: {why}")
    common: dict[str, Any] = {
        "owner": msg.owner,
        "scratch": msg.scratch,
        "priority": msg.request_priority,
    }
    if msg.release is not None:
        common["release"] = msg.release
    builds: list[Any] = []
    for i, link in enumerate(links):
        nvr = chains.link_nvr(str(link["srpm_url"]))
        assert nvr is not None  # checked by chains.refusal
        body = {**common, **{k: link[k] for k in ("srpm_url", "srpm_sha256", "arches")}}
        build = await store.create_build(ctx.conn, f"{msg.id}/{i}", nvr, BuildRequestV1(body=body))
        if build is None:
            log.info("chain request %s was already queued", msg.id)
            return
        await ctx.conn.execute(
            "UPDATE builds SET chain_request = $2, chain_link = $3 WHERE id = $1",
            build["id"],
            msg.id,
            i,
        )
        after = [builds[j] for j in link.get("after", [])]
        if after:
            await ctx.conn.executemany(
                "INSERT INTO build_deps (build_id, after_build) VALUES ($1, $2)",
                [(build["id"], a["id"]) for a in after],
            )
            await ctx.conn.execute(
                "UPDATE tasks SET state = 'blocked', waiting = $2 WHERE build_id = $1",
                build["id"],
                chains.waiting([a["nvr"] for a in after]),
            )
        builds.append(build)
    await set_paths(ctx.conn, [b["id"] for b in builds])
    # The chain counts against its owner's quota once, as its first link.
    if await handlers.refuse_over_quota(ctx, builds[0]):
        first = builds[0]
        for build in builds[1:]:  # those not after the first link fail too: one chain, one quota
            await handlers.fail_build(ctx, build["id"], f"chain refused with {first['nvr']}")
        return
    for build in builds:
        tasks = await store.build_tasks(ctx.conn, build["id"])
        await ctx.publish(
            BuildQueuedV1(
                body={
                    "build_id": build["id"],
                    "owner": build["owner"],
                    "nvr": build["nvr"],
                    "srpm_sha256": build["srpm_sha256"],
                    "scratch": build["scratch"],
                    "tasks": [{"task_id": t["id"], "arch": t["arch"]} for t in tasks],
                }
            )
        )
    log.info("queued chain %s: %s", msg.id, " -> ".join(b["nvr"] for b in builds))
    await handlers.schedule(ctx)


async def set_paths(conn: asyncpg.Connection, build_ids: list[int]) -> None:
    """Each link's tasks' critical-path weight: their work and the longest path among the
    links that come after theirs (critical.downstream); a task without work has none."""
    tasks = await conn.fetch(
        "SELECT build_id, work FROM tasks WHERE build_id = ANY($1::bigint[])", build_ids
    )
    deps = await conn.fetch(
        "SELECT build_id, after_build FROM build_deps WHERE build_id = ANY($1::bigint[])",
        build_ids,
    )
    work: dict[int, list[float | None]] = {b: [] for b in build_ids}
    for t in tasks:
        work[t["build_id"]].append(t["work"])
    below = critical.downstream(
        {b: critical.build_work(w) for b, w in work.items()},
        [(d["build_id"], d["after_build"]) for d in deps],
    )
    await conn.execute(
        "UPDATE tasks t SET path = t.work + d.below"
        " FROM unnest($1::bigint[], $2::float8[]) AS d(build_id, below)"
        " WHERE t.build_id = d.build_id AND t.work IS NOT NULL",
        list(below),
        list(below.values()),
    )


def repo_url(ctx: Context, build_id: int) -> str:
    """Where builders fetch the repository of a stored build's RPMs (the collector's)."""
    conf = ctx.config.dispatcher
    base = (conf.chain_repo_url or conf.collector_url).rstrip("/")
    return f"{base}/api/v1/repos/builds/{build_id}/"


async def link_complete(ctx: Context, build_id: int) -> bool:
    """Release the links waiting only for this build; True if any was queued."""
    released = False
    for dependent in await _dependents(ctx.conn, build_id):
        after = await ctx.conn.fetch(
            "SELECT b.id, b.nvr, b.state FROM build_deps d JOIN builds b ON b.id = d.after_build"
            " WHERE d.build_id = $1 ORDER BY b.chain_link, b.id",
            dependent,
        )
        pending = [a["nvr"] for a in after if a["state"] != "complete"]
        if pending:
            await ctx.conn.execute(
                "UPDATE tasks SET waiting = $2 WHERE build_id = $1 AND state = 'blocked'",
                dependent,
                chains.waiting(pending),
            )
            continue
        repos = [repo_url(ctx, a["id"]) for a in after]
        status = await ctx.conn.execute(
            "UPDATE tasks SET state = 'queued', repos = $2, waiting = NULL, updated_at = now()"
            " WHERE build_id = $1 AND state = 'blocked'",
            dependent,
            repos,
        )
        if status != "UPDATE 0":
            log.info("chain link build %s released, against %s", dependent, ", ".join(repos))
            released = True
    return released


async def link_failed(ctx: Context, build: Any, reason: str) -> list[tuple[int, str]]:
    """The builds that come after this failed one and still wait: their tasks fail now, and
    the caller fails each build with the reason returned (naming the failed link)."""
    why = chains.failed_because(build["nvr"], build["id"], reason)
    failing = []
    for dependent in await _dependents(ctx.conn, build["id"]):
        await ctx.conn.execute(
            "UPDATE tasks SET state = 'failed', reason = $2, waiting = NULL, updated_at = now()"
            " WHERE build_id = $1 AND state IN ('blocked', 'queued')",
            dependent,
            why,
        )
        failing.append((dependent, why))
    return failing


async def _dependents(conn: asyncpg.Connection, build_id: int) -> list[int]:
    """Builds still building that come after `build_id`, locked in id order."""
    rows = await conn.fetch(
        "SELECT b.id FROM build_deps d JOIN builds b ON b.id = d.build_id"
        " WHERE d.after_build = $1 AND b.state = 'building' ORDER BY b.id FOR UPDATE OF b",
        build_id,
    )
    return [r["id"] for r in rows]
