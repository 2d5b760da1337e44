"""Attestations in, verdicts out: only authenticated, consistent results reach storage."""

from __future__ import annotations

import json
import logging

from skyline_messages import TaskFinishedV1, TaskLeasedV1, TaskMismatchV1, TaskVerifiedV1

from services.common.errors import SignatureError
from services.common.rpmfacts import RpmFacts, comparison_key
from services.common.service import Context
from services.common.signing import verify_body

from . import agreement, checks, peers, throttle, throttle_store

log = logging.getLogger(__name__)


async def on_task_leased(msg: TaskLeasedV1, ctx: Context) -> None:
    await ctx.conn.execute(
        "INSERT INTO leases (lease_id, task_id, build_id, host, arch, nvr, srpm_sha256,"
        " scratch, purpose) VALUES ($1::uuid, $2, $3, $4, $5, $6, $7, $8, $9)"
        " ON CONFLICT DO NOTHING",
        msg.lease_id,
        msg.task_id,
        msg.build_id,
        msg.host,
        msg.arch,
        msg.nvr,
        msg.srpm_sha256,
        msg.scratch,
        msg.purpose,
    )


async def on_task_finished(msg: TaskFinishedV1, ctx: Context) -> None:
    config = ctx.config.verifier
    host = await peers.enrolled_host(ctx.runtime.http, config.registry_url, msg.host)
    if host is None:
        return await refuse(ctx, msg, "unknown_host", f"{msg.host} is not enrolled")
    try:
        verify_body(msg.body, host["public_key"])
    except SignatureError:
        return await refuse(ctx, msg, "bad_signature", "not signed by the host's enrolled key")
    lease = await ctx.conn.fetchrow("SELECT * FROM leases WHERE lease_id = $1::uuid", msg.lease_id)
    # Only the lease's holder may fill its one attestation slot. An authenticated host that
    # attests to a lease never issued, or issued to another host, is refused without a record:
    # recording it would lock the holder out (its real attestation would be a "replay").
    holder = lease is not None and lease["host"] == msg.host
    if host["state"] == "quarantined" or host.get("trust") == "quarantined":
        return await refuse(ctx, msg, "host_not_allowed", f"{msg.host} is quarantined", keep=holder)

    previous = await ctx.conn.fetchrow(
        "SELECT signature FROM attestations WHERE lease_id = $1::uuid", msg.lease_id
    )
    if previous is not None:
        if previous["signature"] == msg.signature:
            log.info("attestation for lease %s received again; already judged", msg.lease_id)
            return None
        return await refuse(
            ctx, msg, "replayed", "a different attestation exists for this lease", keep=False
        )

    refusal = checks.check_lease(msg, dict(lease) if lease else None)
    refusal = refusal or checks.check_result_digest(msg)
    facts: list[RpmFacts] = []
    if refusal is None and msg.status == "succeeded":
        staged = await peers.staged_files(ctx.runtime.http, config.collector_url, msg.lease_id)
        refusal = checks.check_uploads(msg.files, staged)
        refusal = refusal or checks.check_packages(dict(lease), msg.files, staged)
        if refusal is None:
            facts, refusal = await _facts(ctx, msg)
    if refusal is not None:
        await refuse(ctx, msg, *refusal, keep=holder)
        bad = throttle.refusal_outcome(refusal[0], host.get("trust"))
        owner = str(host["owner"])
        return await count_outcomes(ctx, {} if bad is None else {msg.lease_id: (bad, owner)})

    await record(ctx, msg, "verified")
    log.info("verified task %s (%s) from %s", msg.task_id, msg.arch, msg.host)
    if msg.status != "succeeded":
        # A failure needs no agreement here: the dispatcher confirms failures (failures.py).
        failed = msg.result_fields()
        if msg.failure is not None:
            failed["failure"] = msg.failure  # the agent's own fault: built again elsewhere
        return await ctx.publish(TaskVerifiedV1(body=failed))
    outcomes: dict[str, throttle.Outcome] = {}
    for out in await agreement.on_result(
        ctx.conn,
        ctx.runtime.http,
        config,
        msg,
        host,
        dict(lease),
        facts,
        comparison_key(facts),
    ):
        await ctx.publish(out)
        if isinstance(out, TaskVerifiedV1):
            owners = {}
            if out.odd_ones_out:
                rows = await ctx.conn.fetch(
                    "SELECT lease_id, owner FROM results WHERE task_id = $1", msg.task_id
                )
                owners = {str(r["lease_id"]): r["owner"] for r in rows}
            outcomes.update(throttle.verdict_outcomes(out, owners))
    return await count_outcomes(ctx, outcomes)


async def count_outcomes(ctx: Context, outcomes: dict[str, throttle.Outcome]) -> None:
    """Count settled results towards the throttle (last: it locks the throttle's state)."""
    config = ctx.config.verifier.throttle
    await ctx.publish_many(await throttle_store.count(ctx.conn, outcomes, config))


async def _facts(ctx: Context, msg: TaskFinishedV1) -> tuple[list[RpmFacts], checks.Refusal]:
    """The facts of the attested RPMs as the collector read them from the staged bytes."""
    url = ctx.config.verifier.collector_url
    try:
        found = await peers.rpm_facts_of_files(ctx.runtime.http, url, msg.lease_id)
    except peers.FactsRefused as exc:
        return [], ("bad_rpm", str(exc))
    if found is None:
        return [], ("missing_upload", "the collector no longer has the lease's uploads")
    attested = {(f["name"], f["sha256"]) for f in msg.files if f["name"].endswith(".rpm")}
    if {(name, sha) for name, sha, _ in found} != attested:
        # Replaced since the listing was checked: judge the bytes attested, or nothing.
        return [], ("digest_mismatch", "the staged RPMs changed during verification")
    facts = [f for _, _, f in found]
    if len({f.nevra for f in facts}) != len(facts):
        return [], ("bad_rpm", "two RPMs of the result have the same N-E-V-R-A")
    return facts, None


async def refuse(
    ctx: Context, msg: TaskFinishedV1, reason: str, detail: str, *, keep: bool = True
) -> None:
    """Publish the refusal. Only authenticated attestations are recorded: a forgery must not
    occupy the lease's one attestation slot and lock the honest host out."""
    log.error(
        "refused attestation for task %s from %s: %s (%s)",
        msg.task_id,
        msg.host,
        reason,
        detail,
    )
    if keep and reason not in ("unknown_host", "bad_signature"):
        await record(ctx, msg, reason, detail)
    await ctx.publish(TaskMismatchV1.refusing(msg, reason, detail))


async def record(
    ctx: Context, msg: TaskFinishedV1, verdict: str, detail: str | None = None
) -> None:
    await ctx.conn.execute(
        "INSERT INTO attestations (lease_id, host, status, result_digest, env_digest, signature,"
        " verdict, detail, body) VALUES ($1::uuid, $2, $3, $4, $5, $6, $7, $8, $9::jsonb)",
        msg.lease_id,
        msg.host,
        msg.status,
        msg.result_digest,
        msg.env_digest,
        msg.signature,
        verdict,
        detail,
        json.dumps(msg.body),
    )
