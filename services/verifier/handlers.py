"""Attestations in, verdicts out: only authenticated, consistent results reach storage."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from skyline_messages import TaskFinishedV1, TaskLeasedV1, TaskMismatchV1, TaskVerifiedV1

from services.common.errors import SignatureError
from services.common.service import Context
from services.common.signing import verify_body

from . import checks, peers

log = logging.getLogger(__name__)


async def on_task_leased(msg: TaskLeasedV1, ctx: Context) -> None:
    b = msg.body
    await ctx.conn.execute(
        "INSERT INTO leases (lease_id, task_id, build_id, host, arch, nvr, srpm_sha256)"
        " VALUES ($1::uuid, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
        b["lease_id"],
        b["task_id"],
        b["build_id"],
        b["host"],
        b["arch"],
        b["nvr"],
        b["srpm_sha256"],
    )


async def on_task_finished(msg: TaskFinishedV1, ctx: Context) -> None:
    body = msg.body
    config = ctx.config.verifier
    host = await peers.enrolled_host(ctx.runtime.http, config.registry_url, body["host"])
    if host is None:
        return await refuse(ctx, body, "unknown_host", f"{body['host']} is not enrolled")
    try:
        verify_body(body, host["public_key"])
    except SignatureError:
        return await refuse(ctx, body, "bad_signature", "not signed by the host's enrolled key")
    lease = await ctx.conn.fetchrow(
        "SELECT * FROM leases WHERE lease_id = $1::uuid", body["lease_id"]
    )
    # Only the lease's holder may fill its one attestation slot. An authenticated host that
    # attests to a lease never issued, or issued to another host, is refused without a record:
    # recording it would lock the holder out (its real attestation would be a "replay").
    holder = lease is not None and lease["host"] == body["host"]
    if host["state"] == "quarantined":
        return await refuse(
            ctx, body, "host_not_allowed", f"{body['host']} is quarantined", keep=holder
        )

    previous = await ctx.conn.fetchrow(
        "SELECT signature FROM attestations WHERE lease_id = $1::uuid", body["lease_id"]
    )
    if previous is not None:
        if previous["signature"] == body["signature"]:
            log.info("attestation for lease %s received again; already judged", body["lease_id"])
            return None
        return await refuse(
            ctx, body, "replayed", "a different attestation exists for this lease", keep=False
        )

    refusal = checks.check_lease(body, dict(lease) if lease else None)
    refusal = refusal or checks.check_result_digest(body)
    if refusal is None and body["status"] == "succeeded":
        staged = await peers.staged_files(ctx.runtime.http, config.collector_url, body["lease_id"])
        refusal = checks.check_uploads(body["files"], staged)
        refusal = refusal or checks.check_packages(dict(lease), body["files"], staged)
    if refusal is not None:
        return await refuse(ctx, body, *refusal, keep=holder)

    await record(ctx, body, "verified")
    log.info("verified task %s (%s) from %s", body["task_id"], body["arch"], body["host"])
    await ctx.publish(
        TaskVerifiedV1(
            body={
                k: body[k]
                for k in (
                    "task_id",
                    "build_id",
                    "lease_id",
                    "host",
                    "arch",
                    "nvr",
                    "status",
                    "files",
                    "result_digest",
                )
            }
        )
    )
    return None


async def refuse(
    ctx: Context, body: Mapping[str, Any], reason: str, detail: str, *, keep: bool = True
) -> None:
    """Publish the refusal. Only authenticated attestations are recorded: a forgery must not
    occupy the lease's one attestation slot and lock the honest host out."""
    log.error(
        "refused attestation for task %s from %s: %s (%s)",
        body["task_id"],
        body["host"],
        reason,
        detail,
    )
    if keep and reason not in ("unknown_host", "bad_signature"):
        await record(ctx, body, reason, detail)
    await ctx.publish(
        TaskMismatchV1(
            body={
                "task_id": body["task_id"],
                "build_id": body["build_id"],
                "lease_id": body["lease_id"],
                "host": body["host"],
                "arch": body["arch"],
                "reason": reason,
                "detail": detail[:2000],
            }
        )
    )


async def record(
    ctx: Context, body: Mapping[str, Any], verdict: str, detail: str | None = None
) -> None:
    await ctx.conn.execute(
        "INSERT INTO attestations (lease_id, host, status, result_digest, env_digest, signature,"
        " verdict, detail, body) VALUES ($1::uuid, $2, $3, $4, $5, $6, $7, $8, $9::jsonb)",
        body["lease_id"],
        body["host"],
        body["status"],
        body["result_digest"],
        body["env_digest"],
        body["signature"],
        verdict,
        detail,
        json.dumps(body),
    )
