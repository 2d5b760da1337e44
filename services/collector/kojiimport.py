"""Import complete builds into a Koji hub as a content generator, outside any handler.

The build.complete handler records an intent (koji_imports, state pending); `import_pending`,
a periodic job of the collector, claims one due intent at a time (pushing its next_try on, so
a replica or a later run leaves it alone meanwhile), imports it with the stock koji client in a
worker thread, and records the result in a new transaction. Idempotent across crashes:

- before uploading, it asks the hub for the N-V-R: a complete build of this content generator
  whose `extra` names this Skyline build and the same file digests is taken as done (a crash
  after CGImport, before the result was recorded);
- each attempt uploads into a new work directory, so a crash between upload and CGImport
  leaves only stray uploads (Koji's work/ clean-up removes them) and the next attempt starts
  afresh; CGImport itself is one hub transaction: the build exists whole or not at all.

A hub with another build of the N-V-R marks the intent failed (an admin must look); any other
error is retried with a growing pause. With Koji draft builds (kojidraft.py), a build whose
draft holds exactly the accepted files is put in by promoting that draft instead.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import json
import logging
import uuid
from collections.abc import Mapping, Sequence
from importlib import metadata as dist_metadata
from pathlib import Path
from typing import Any

import asyncpg
import koji

from services.common.config import Config
from services.common.errors import SkylineError
from services.common.service import Runtime

from . import draft_store, kojidrafthub, kojimeta, storage, store

log = logging.getLogger(__name__)

CLAIM = datetime.timedelta(minutes=30)  # an import taking longer may be tried again beside it
MAX_PAUSE = 3600.0  # seconds; the pause after the n-th failure is min(MAX_PAUSE, 30 * 2**n)
UPLOAD_ROOT = "skyline"  # under the hub's work/
# Per hub call (an upload goes in chunks of a few MB): a hung hub must not hold the job forever.
HUB_TIMEOUT = 600


class AnotherBuild(SkylineError):
    """The hub holds another build of this N-V-R: importing would not be this build."""


@dataclasses.dataclass(frozen=True)
class HubSettings:
    url: str
    user: str
    password: str
    cg_name: str

    @classmethod
    def from_config(cls, config: Config) -> HubSettings:
        c = config.collector
        password = config.secret(c.koji_cg_password_file, "koji_cg_password_file")
        return cls(c.koji_hub_url, c.koji_cg_user, password, c.koji_cg_name)


def cg_version() -> str:
    try:
        return dist_metadata.version("skyline")
    except dist_metadata.PackageNotFoundError:
        return "0"


def session(settings: HubSettings) -> Any:
    opts = {"user": settings.user, "password": settings.password, "timeout": HUB_TIMEOUT}
    s = koji.ClientSession(settings.url, opts)
    s.login()
    return s


@dataclasses.dataclass(frozen=True)
class Imported:
    koji_build_id: int
    promoted: bool  # the hub's build is a draft of ours, promoted (Koji draft builds)


def import_build(
    settings: HubSettings,
    plan: kojimeta.Plan,
    topdir: Path,
    attempt: str,
    draft: kojidrafthub.Candidate | None = None,
) -> Imported:
    """Put `plan` into the hub unless it is there already: by promoting `draft` (the build's
    draft, imported while it waited for agreement) if it holds these very files, else by a
    regular import. Blocking (uploads, XML-RPC): run it in a thread."""
    hub = session(settings)
    try:
        if (done := _existing(hub, plan, settings.cg_name)) is not None:
            log.info("%s is in the hub already (build %d)", plan.nvr, done)
            # A crash after promoteBuild, before the result was recorded, ends here too.
            return Imported(done, bool(hub.getBuild(done).get("promotion_ts")))
        if draft is not None and draft.files == plan.digests:
            if (promoted := _promote(hub, plan, settings.cg_name, draft)) is not None:
                return Imported(promoted, True)
        folder = f"{UPLOAD_ROOT}/{plan.build_id}-{attempt}"
        upload(hub, plan, topdir, folder)
        md = kojimeta.metadata(plan, settings.cg_name, cg_version())
        try:
            build = hub.CGImport(md, folder)
        except koji.GenericError:
            # Another attempt (a replica's) may have imported it meanwhile.
            if (done := _existing(hub, plan, settings.cg_name)) is not None:
                return Imported(done, False)
            raise
        return Imported(int(build["id"]), False)
    finally:
        hub.logout()


def upload(hub: Any, plan: kojimeta.Plan, topdir: Path, folder: str) -> None:
    """Every output into the hub's work/<folder>/ (an absolute output path is used as is)."""
    for o in plan.outputs:
        target = f"{folder}/{o.relpath}" if o.relpath else folder
        hub.uploadWrapper(str(topdir / o.path), target, name=o.name)


def _promote(
    hub: Any, plan: kojimeta.Plan, cg_name: str, draft: kojidrafthub.Candidate
) -> int | None:
    """Promote the build's draft if the hub has it; None to import the build instead."""
    draft_id = kojidrafthub.find_draft(hub, plan, cg_name, draft.koji_build_id)
    if draft_id is None:
        log.info("%s: no complete draft of these files in the hub", plan.nvr)
        return None
    try:
        return kojidrafthub.promote(hub, draft_id)
    except koji.ActionNotAllowed as exc:
        # The hub's draft_promotion policy refuses us: the build goes in as a regular import
        # and the draft stays unpromoted. An admin grants `draft-promoter` (see the README).
        log.error("%s: promoting draft %d is not allowed: %s", plan.nvr, draft_id, exc)
        return None


def _existing(hub: Any, plan: kojimeta.Plan, cg_name: str) -> int | None:
    found = hub.getBuild(plan.nvr)
    verdict = kojimeta.already_imported(plan, found, cg_name)
    if verdict is False:
        raise AnotherBuild(
            f"the hub holds build {found['id']} of {plan.nvr} (state {found['state']},"
            f" content generator {found.get('cg_name')}), which is not Skyline build"
            f" {plan.build_id} with these files"
        )
    return int(found["id"]) if verdict else None


async def import_pending(runtime: Runtime) -> None:
    """Import every due intent, one at a time; nothing to do without a configured hub."""
    config = runtime.config
    if not config.collector.koji_hub_url:
        return
    settings = HubSettings.from_config(config)
    while (claimed := await _claim(runtime.pool)) is not None:
        await run_one(runtime.pool, config, settings, claimed)


async def _claim(pool: asyncpg.Pool) -> asyncpg.Record | None:
    async with pool.acquire() as conn, conn.transaction():
        return await store.claim_koji_import(conn, CLAIM)


async def run_one(
    pool: asyncpg.Pool, config: Config, settings: HubSettings, claimed: asyncpg.Record
) -> None:
    build_id = claimed["build_id"]
    async with pool.acquire() as conn:
        plan = await build_plan(conn, config, claimed)
    attempt = f"{claimed['attempts']}-{uuid.uuid4().hex[:8]}"
    topdir = storage.koji_topdir(config)
    draft = await _draft(pool, config, build_id)
    try:
        done = await asyncio.to_thread(import_build, settings, plan, topdir, attempt, draft)
    except AnotherBuild as exc:
        log.error("build %d (%s) cannot be imported: %s", build_id, plan.nvr, exc)
        async with pool.acquire() as conn:
            await store.koji_import_failed(conn, build_id, str(exc))
        return
    except Exception as exc:
        pause = min(MAX_PAUSE, 30.0 * 2 ** claimed["attempts"])
        reason = f"{type(exc).__name__}: {exc}"[:2000]
        log.warning(
            "build %d (%s): import failed, retrying in %.0f s: %s",
            build_id,
            plan.nvr,
            pause,
            reason,
        )
        async with pool.acquire() as conn:
            await store.koji_import_retry(conn, build_id, reason, pause)
        return
    async with pool.acquire() as conn, conn.transaction():
        await store.koji_import_done(conn, build_id, done.koji_build_id)
        await _settle_draft(conn, build_id, done)
    how = "by promoting its draft" if done.promoted else "by import"
    log.info("build %d (%s) is Koji build %d (%s)", build_id, plan.nvr, done.koji_build_id, how)


async def _draft(
    pool: asyncpg.Pool, config: Config, build_id: int
) -> kojidrafthub.Candidate | None:
    """The build's draft, if drafts are on and one may be in the hub."""
    if not config.collector.koji_drafts:
        return None
    async with pool.acquire() as conn:
        row = await draft_store.get(conn, build_id)
    if row is None or row["files"] is None or row["state"] not in ("pending", "imported"):
        return None
    return kojidrafthub.Candidate(json.loads(row["files"]), row["koji_build_id"])


async def _settle_draft(conn: asyncpg.Connection, build_id: int, done: Imported) -> None:
    """The accepted build is in the hub: its draft was promoted, or it never will be."""
    if done.promoted:
        await draft_store.settle(conn, build_id, "promoted", koji_build_id=done.koji_build_id)
        return
    row = await draft_store.get(conn, build_id)
    if row is None or row["state"] not in ("pending", "imported"):
        return
    if row["files"] is None:
        await draft_store.settle(conn, build_id, "skipped", "accepted before a draft was made")
    else:
        # Another result was accepted (the draft's host was an odd one out), or promotion was
        # refused: the draft stays in the hub unpromoted.
        await draft_store.settle(conn, build_id, "rejected", "the accepted files differ")


async def build_plan(
    conn: asyncpg.Connection, config: Config, claimed: asyncpg.Record
) -> kojimeta.Plan:
    """The build as the collector stored it: every stored task's files, and the SRPM (from the
    packager's upload when no task sent it back)."""
    rows = await store.build_stored_files(conn, claimed["build_id"])
    return await plan_from_rows(conn, config, claimed, rows)


async def plan_from_rows(
    conn: asyncpg.Connection,
    config: Config,
    claimed: Mapping[str, Any],
    rows: Sequence[Mapping[str, Any]],
) -> kojimeta.Plan:
    """The plan of `rows` (as build_stored_files gives them), with the packager's SRPM if no
    row is one."""
    accepted = {t["task_id"]: t for t in json.loads(claimed["tasks"])}
    buildroots: dict[int, kojimeta.Buildroot] = {}
    outputs = []
    for r in rows:
        if r["task_id"] not in buildroots:
            manifest = json.loads(r["env_manifest"]) if r["env_manifest"] else {}
            task = accepted.get(r["task_id"], {})
            buildroots[r["task_id"]] = kojimeta.Buildroot(
                task_id=r["task_id"],
                arch=r["task_arch"],
                host=r["host"],
                env_manifest=manifest,
                agreeing=tuple(task.get("agreeing", ())),
                rule=task.get("rule"),
            )
        outputs.append(
            kojimeta.Output(r["name"], r["path"], r["sha256"], r["size"], r["arch"], r["task_id"])
        )
    if rows and not any(o.arch == "src" for o in outputs):
        srpm = await _packager_srpm(conn, config, claimed["nvr"], rows[0])
        if srpm is not None:
            outputs.append(srpm)
    started = min((r["leased_at"] for r in rows), default=claimed["created_at"])
    return kojimeta.Plan(
        build_id=claimed["build_id"],
        nvr=claimed["nvr"],
        owner=claimed["owner"],
        start_time=started.timestamp(),
        end_time=claimed["created_at"].timestamp(),
        buildroots=list(buildroots.values()),
        outputs=outputs,
    )


async def _packager_srpm(
    conn: asyncpg.Connection, config: Config, nvr: str, row: Mapping[str, Any]
) -> kojimeta.Output | None:
    source = await store.get_source(conn, row["srpm_sha256"])
    name = f"{nvr}.src.rpm"
    if source is None or source["name"] != name:
        return None  # the SRPM came from elsewhere (a URL): the build goes without it
    topdir = storage.koji_topdir(config)
    path = storage.sources_dir(config) / source["sha256"] / name
    if not path.is_file():
        return None
    rel = str(path.relative_to(topdir))
    return kojimeta.Output(name, rel, source["sha256"], source["size"], "src", row["task_id"])
