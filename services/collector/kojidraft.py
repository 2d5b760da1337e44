"""Koji draft builds: import a build while it waits for agreement, promote it once accepted.

When the verifier asks for a replica of a task (`skyline.task.replicate`), the handler notes
the task in the build's draft row (table koji_drafts). `import_drafts`, a periodic job beside
the import of accepted builds, claims a due draft, chooses each task's result
(draftplan.choose_leases: the accepted one, else the first one the verifier had), records that
candidate (its leases and file digests) before it imports anything, then imports it with
CGImport and `build.draft: true`, and records the hub's build id after; all outside any
handler's transaction. A retry after a crash imports the same candidate and first asks the
hub for it (a complete draft of this content generator naming this Skyline build and these
digests counts as done), so a draft is never imported twice.

Promotion happens in kojiimport.run_one on build.complete: the accepted files are compared
with the draft's, and only the same files are promoted (`promoteBuild`); otherwise the
accepted result is imported as a regular build and the draft stays unpromoted ("rejected").
A build that never completes never has its draft promoted. A hub older than Koji 1.34 gets
no drafts ("skipped"), and builds go in only once accepted, as without drafts.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import uuid
from typing import Any

import asyncpg
import koji
from skyline_messages import BuildFailedV1, TaskReplicateV1

from services.common.config import Config
from services.common.errors import SkylineError
from services.common.service import Context, Runtime

from . import draft_store, draftplan, kojidrafthub, kojiimport, kojimeta, storage, store

log = logging.getLogger(__name__)

MAX_PAUSE = 600.0  # seconds; a draft waits for other tasks' results, so it looks again often


class NoDrafts(SkylineError):
    """The hub has no draft builds (Koji < 1.34)."""


async def on_task_replicate(msg: TaskReplicateV1, ctx: Context) -> None:
    """A task waits for agreement: its first results may go into the build's draft."""
    c = ctx.config.collector
    if not (c.koji_hub_url and c.koji_drafts):
        return
    build_id, task_id = msg.build_id, msg.task_id
    build = await draft_store.build_info(ctx.conn, build_id)
    if build is None or build["scratch"]:
        return  # no lease of it here (nothing uploaded), or a scratch build: never in Koji
    if await draft_store.add_waiting(
        ctx.conn, build_id, msg.nvr, build["owner"], task_id, msg.exclude_hosts
    ):
        log.info("build %s: task %s waits for agreement, a draft is due", build_id, task_id)


async def on_build_failed(msg: BuildFailedV1, ctx: Context) -> None:
    """No agreement, or the build failed: its draft, if any, is never promoted."""
    build_id = msg.build_id
    row = await draft_store.get(ctx.conn, build_id)
    if row is not None:
        state = "skipped" if row["files"] is None else "rejected"
        await draft_store.settle(ctx.conn, build_id, state, "the build failed")


async def import_drafts(runtime: Runtime) -> None:
    """Import every due draft, one at a time; nothing to do without a hub or with drafts off."""
    config = runtime.config
    if not (config.collector.koji_hub_url and config.collector.koji_drafts):
        return
    settings = kojiimport.HubSettings.from_config(config)
    while (claimed := await _claim(runtime.pool)) is not None:
        await run_one(runtime.pool, config, settings, claimed)


async def _claim(pool: asyncpg.Pool) -> asyncpg.Record | None:
    async with pool.acquire() as conn, conn.transaction():
        return await draft_store.claim(conn, kojiimport.CLAIM)


async def run_one(
    pool: asyncpg.Pool, config: Config, settings: kojiimport.HubSettings, row: asyncpg.Record
) -> None:
    build_id = row["build_id"]
    async with pool.acquire() as conn:
        if await store.get_koji_import(conn, build_id) is not None:
            # Accepted already: kojiimport settles this draft (promotes a draft it finds).
            if row["files"] is None:
                await draft_store.settle(conn, build_id, "skipped", "accepted before a draft")
            return
        waited = datetime.datetime.now(datetime.UTC) - row["created_at"]
        if waited > datetime.timedelta(hours=config.collector.koji_draft_wait_hours):
            await draft_store.settle(conn, build_id, "skipped", "no agreement in time")
            return
        try:
            plan = await _candidate(conn, config, row)
        except draftplan.NotReady as exc:
            await _retry(conn, row, str(exc))
            return
    attempt = f"{row['attempts']}-{uuid.uuid4().hex[:8]}"
    topdir = storage.koji_topdir(config)
    try:
        koji_id = await asyncio.to_thread(import_draft, settings, plan, topdir, attempt)
    except NoDrafts as exc:
        async with pool.acquire() as conn:
            await draft_store.settle(conn, build_id, "skipped", str(exc))
        return
    except Exception as exc:
        async with pool.acquire() as conn:
            await _retry(conn, row, f"{type(exc).__name__}: {exc}")
        return
    async with pool.acquire() as conn:
        await draft_store.imported(conn, build_id, koji_id)
    log.info("build %d (%s) is in Koji as draft %d", build_id, plan.nvr, koji_id)


async def _retry(conn: asyncpg.Connection, row: asyncpg.Record, reason: str) -> None:
    pause = min(MAX_PAUSE, 30.0 * 2 ** row["attempts"])
    log.info("build %d: draft not imported, again in %.0f s: %s", row["build_id"], pause, reason)
    await draft_store.retry(conn, row["build_id"], reason[:2000], pause)


async def _candidate(
    conn: asyncpg.Connection, config: Config, row: asyncpg.Record
) -> kojimeta.Plan:
    """The draft's plan: chosen now and recorded, or the one recorded by an earlier attempt."""
    leases = await draft_store.build_leases(conn, row["build_id"])
    if row["leases"] is None:
        chosen = draftplan.choose_leases(leases, json.loads(row["waiting"]))
    else:
        recorded = {int(t): uuid.UUID(lid) for t, lid in json.loads(row["leases"]).items()}
        chosen = {
            lease["task_id"]: lease
            for lease in leases
            if recorded.get(lease["task_id"]) == lease["lease_id"]
        }
    plan = await _plan(conn, config, row, chosen)
    if row["files"] is None:
        if await draft_store.set_candidate(
            conn,
            row["build_id"],
            {t: lease["lease_id"] for t, lease in chosen.items()},
            plan.digests,
        ):
            return plan
        row = await draft_store.get(conn, row["build_id"])  # another worker chose meanwhile
        return await _candidate(conn, config, row)
    if plan.digests != json.loads(row["files"]):
        # Its staged files went (the sweep) or changed: it can no longer be this draft.
        raise draftplan.NotReady("the recorded draft's files are no longer all here")
    return plan


async def _plan(
    conn: asyncpg.Connection,
    config: Config,
    row: asyncpg.Record,
    chosen: dict[int, Any],
) -> kojimeta.Plan:
    ids = [lease["lease_id"] for lease in chosen.values()]
    by_lease = {lease["lease_id"]: lease for lease in chosen.values()}
    rows: list[dict[str, Any]] = []
    for f in await draft_store.stored_files(conn, ids):
        lease = by_lease[f["lease_id"]]
        if lease["state"] == "stored":
            rows.append(_row(lease, f["name"], f["path"], f["sha256"], f["size"], f["arch"]))
    for f in await draft_store.staged_files(conn, ids):
        lease = by_lease[f["lease_id"]]
        if lease["state"] != "stored":
            # Not in Koji storage yet: uploaded from the staging folder (an absolute path).
            path = str(storage.staging_dir(config, lease["lease_id"]) / f["name"])
            arch = draftplan.rpm_arch(f["name"], lease["arch"])
            rows.append(_row(lease, f["name"], path, f["sha256"], f["size"], arch))
    header = {
        "build_id": row["build_id"],
        "nvr": row["nvr"],
        "owner": row["owner"],
        "tasks": "[]",  # no agreement yet
        "created_at": row["created_at"],
    }
    return await kojiimport.plan_from_rows(conn, config, header, draftplan.unique_files(rows))


def _row(lease: Any, name: str, path: str, sha256: str, size: int, arch: str) -> dict[str, Any]:
    return {
        "name": name,
        "path": path,
        "sha256": sha256,
        "size": size,
        "arch": arch,
        "task_id": lease["task_id"],
        "task_arch": lease["arch"],
        "host": lease["host"],
        "env_manifest": lease["env_manifest"],
        "srpm_sha256": lease["srpm_sha256"],
        "leased_at": lease["leased_at"],
        "stored": lease["state"] == "stored",
    }


def import_draft(
    settings: kojiimport.HubSettings, plan: kojimeta.Plan, topdir: Any, attempt: str
) -> int:
    """Put `plan` into the hub as a draft unless it is there already; return its build id.
    Blocking (uploads, XML-RPC): run it in a thread."""
    hub = kojiimport.session(settings)
    try:
        if not kojidrafthub.supports_drafts(hub, settings.url):
            raise NoDrafts(f"the Koji hub at {settings.url} has no draft builds (Koji < 1.34)")
        if (done := kojidrafthub.find_draft(hub, plan, settings.cg_name, None)) is not None:
            log.info("%s: the hub has its draft already (build %d)", plan.nvr, done)
            return done
        folder = f"{kojiimport.UPLOAD_ROOT}/{plan.build_id}-draft-{attempt}"
        kojiimport.upload(hub, plan, topdir, folder)
        md = kojimeta.metadata(plan, settings.cg_name, kojiimport.cg_version(), True)
        try:
            build = hub.CGImport(md, folder)
        except koji.GenericError:
            if (done := kojidrafthub.find_draft(hub, plan, settings.cg_name, None)) is not None:
                return done
            raise
        return int(build["id"])
    finally:
        hub.logout()
