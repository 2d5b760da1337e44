"""The collector's reactions: learn leases, and store verified results in Koji storage."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg
from skyline_messages import (
    BuildCompleteV1,
    BuildStoredV1,
    TaskFinishedV1,
    TaskLeasedV1,
    TaskVerifiedV1,
)

from services.common.errors import Reject
from services.common.service import Context

from . import storage, store

log = logging.getLogger(__name__)


def lease_fields(msg: TaskVerifiedV1) -> dict[str, Any]:
    """Fields of a verified message that must equal the lease's, or it is about another task."""
    return {
        "task_id": msg.task_id,
        "build_id": msg.build_id,
        "host": msg.host,
        "arch": msg.arch,
        "nvr": msg.nvr,
    }


async def on_task_leased(msg: TaskLeasedV1, ctx: Context) -> None:
    """Remember the lease: uploads are accepted only for known leases."""
    if await store.add_lease(ctx.conn, msg):
        log.info("lease %s: task %s on %s", msg.lease_id, msg.task_id, msg.host)


async def on_task_verified(msg: TaskVerifiedV1, ctx: Context) -> None:
    lease_id = uuid.UUID(msg.lease_id)
    # Tasks of one build share paths (noarch subpackages), so one N-V-R is stored at a time.
    await store.lock_nvr(ctx.conn, msg.nvr)
    lease = await store.get_lease(ctx.conn, lease_id, for_update=True)
    if lease is None:
        raise Reject(f"verified lease {lease_id} is unknown here, so nothing was uploaded for it")
    for field, value in lease_fields(msg).items():
        if value != lease[field]:
            raise Reject(f"lease {lease_id}: {field} {value!r} does not match the lease")
    if msg.status != "succeeded":
        # The dispatcher handles failures; its staged logs go with the stale-lease sweep.
        log.info("lease %s: task %s failed on %s", lease_id, msg.task_id, msg.host)
        if lease["state"] == "open":
            await store.set_state(ctx.conn, lease_id, "failed")
        return
    if lease["state"] == "stored":
        # Told again: its first build.stored may have been lost. Announce the same again.
        log.info("lease %s is stored already; announcing it again", lease_id)
        stored = await store.stored_files(ctx.conn, lease_id)
        await ctx.publish(stored_message(lease, _in_order(stored, msg.files)))
        return
    if lease["state"] == "superseded":
        log.info("lease %s is superseded already; nothing to do", lease_id)
        return
    if lease["state"] != "open" or lease["cleaned_at"] is not None:
        raise Reject(f"lease {lease_id} is {lease['state']} and its uploads are gone")
    if other := await store.stored_lease_of_task(ctx.conn, lease["task_id"], lease_id):
        # Koji keeps one result per task; the first one stored stays.
        log.info("lease %s: task %s was stored from lease %s", lease_id, lease["task_id"], other)
        await store.set_state(ctx.conn, lease_id, "superseded")
        return
    await _check_staged(ctx.conn, lease_id, msg.files)
    results = await _store(ctx, lease, msg.files)
    await store.record_stored(ctx.conn, lease_id, results)
    log.info("lease %s: stored %d file(s) of %s", lease_id, len(results), lease["nvr"])
    if others := await store.supersede_other_leases(ctx.conn, lease["task_id"], lease_id):
        log.info("task %s: superseded %d other lease(s)", lease["task_id"], len(others))
    await ctx.publish(stored_message(lease, [r.entry() for r in results]))


def stored_message(lease: asyncpg.Record, files: list[dict[str, Any]]) -> BuildStoredV1:
    return BuildStoredV1(
        body={
            "build_id": lease["build_id"],
            "task_id": lease["task_id"],
            "owner": lease["owner"],
            "nvr": lease["nvr"],
            "arch": lease["arch"],
            "host": lease["host"],
            "files": files,
        }
    )


def _in_order(
    stored: list[asyncpg.Record], attested: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Stored files in the attested order, as the first build.stored listed them."""
    position = {f["name"]: i for i, f in enumerate(attested)}
    return [dict(r) for r in sorted(stored, key=lambda r: position.get(r["name"], len(position)))]


async def _check_staged(
    conn: asyncpg.Connection, lease_id: uuid.UUID, files: Sequence[Mapping[str, Any]]
) -> None:
    """Each attested file was recorded as uploaded with the attested size and digest."""
    staged = {r["name"]: (r["size"], r["sha256"]) for r in await store.staged_files(conn, lease_id)}
    for f in files:
        if staged.get(f["name"]) != (f["size"], f["sha256"]):
            raise Reject(f"lease {lease_id}: {f['name']} was not uploaded as attested")


async def _store(
    ctx: Context, lease: asyncpg.Record, files: Sequence[Mapping[str, Any]]
) -> list[storage.Result]:
    """Check every file, refuse on any conflict, then place them; return what this task stored."""
    config = ctx.config
    topdir = storage.koji_topdir(config)
    task = storage.Task(
        task_id=lease["task_id"],
        build_id=lease["build_id"],
        host=lease["host"],
        arch=lease["arch"],
        owner=lease["owner"],
        nvr=lease["nvr"],
        scratch=lease["scratch"],
        srpm_sha256=lease["srpm_sha256"],
    )
    staged = storage.staging_dir(config, lease["lease_id"])
    try:
        checked = await asyncio.to_thread(storage.check_results, topdir, staged, task, files)
    except storage.Refused as exc:
        raise Reject(f"lease {lease['lease_id']}: {exc}") from None
    # A noarch subpackage is built by every arch task of a build; like Koji, keep the first.
    siblings = await store.stored_by_siblings(
        ctx.conn, task.build_id, lease["lease_id"], [r.path for r in checked]
    )
    results = [r for r in checked if r.path not in siblings]
    # Check every destination before placing any file, so a conflict stores nothing.
    for r in results:
        found = await asyncio.to_thread(storage.existing_digest, topdir / r.path)
        if found not in (None, r.sha256):
            raise Reject(f"{r.path} already exists with other content (sha256 {found})")
    for r in results:
        try:
            await asyncio.to_thread(storage.place, r.source, topdir / r.path, r.sha256)
        except storage.Refused as exc:
            raise Reject(str(exc)) from None
    return results


async def on_task_finished(msg: TaskFinishedV1, ctx: Context) -> None:
    """Keep the builder's environment manifest: a Koji import describes the buildroot with it.

    Only the lease's own host can have sent it (the broker and the consumer's sender check);
    the verifier checks its signature, and only verified results are imported.
    """
    if msg.status == "succeeded":
        await store.record_env_manifest(
            ctx.conn, uuid.UUID(msg.lease_id), msg.host, msg.env_manifest
        )


async def on_build_complete(msg: BuildCompleteV1, ctx: Context) -> None:
    """Record the intent to import the build into Koji; kojiimport.py does it, outside this
    transaction. Scratch builds stay out of Koji, as Koji's own scratch builds do."""
    if not ctx.config.collector.koji_hub_url or msg.scratch:
        return
    if await store.add_koji_import(ctx.conn, msg.build_id, msg.nvr, msg.owner, msg.tasks):
        log.info("build %s (%s): to be imported into Koji", msg.build_id, msg.nvr)
