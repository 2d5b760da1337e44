"""Statistics from the bus: each handler records facts in the stats tables (stats_store.py).

Every message runs once per message id (the service's processed_messages), and every write
is an upsert keyed by the thing it describes, so a re-announcement changes nothing either.
"""

from __future__ import annotations

from typing import Any

from fedora_messaging import message as fm
from skyline_messages import (
    BuildCompleteV1,
    BuildFailedV1,
    BuildQueuedV1,
    HostStatusV1,
    TaskFinishedV1,
    TaskMismatchV1,
    TaskVerifiedV1,
    ThrottleEngagedV1,
    ThrottleReleasedV1,
)
from skyline_messages.base import package_of

from services.common.service import Context, Handler

from . import stats_store

REASON_CHARS = 300  # of a refusal's detail kept for the dashboard


async def on_host_status(msg: HostStatusV1, ctx: Context) -> None:
    await stats_store.record_host(ctx.conn, msg)


async def on_task_finished(msg: TaskFinishedV1, ctx: Context) -> None:
    await stats_store.record_finished(ctx.conn, msg)


async def on_task_verified(msg: TaskVerifiedV1, ctx: Context) -> None:
    """Credit the agreeing hosts' results; the odd ones out were refused."""
    if msg.status != "succeeded":
        return  # a confirmed build failure: nobody's result is judged
    package = package_of(msg.nvr)
    common: dict[str, Any] = {"task_id": msg.task_id, "build_id": msg.build_id, "arch": msg.arch}
    # A verifier from before agreement names only the stored result.
    agreeing = msg.agreeing or [{"host": msg.host, "lease_id": msg.lease_id}]
    for a in agreeing:
        await stats_store.judge_result(
            ctx.conn,
            lease_id=a["lease_id"],
            host=a["host"],
            owner=a.get("owner"),
            package=package,
            verdict="accepted",
            **common,
        )
    for odd in msg.odd_ones_out:
        await stats_store.judge_result(
            ctx.conn,
            lease_id=odd["lease_id"],
            host=odd["host"],
            package=package,
            verdict="refused",
            reason=f"disagreed: {odd['detail']}"[:REASON_CHARS],
            **common,
        )
    await stats_store.record_task(
        ctx.conn,
        package=package,
        outcome="accepted",
        rule=msg.rule,
        agreeing=[a["host"] for a in agreeing],
        odd_ones_out=len(msg.odd_ones_out),
        not_reproducible=msg.not_reproducible,
        **common,
    )


async def on_task_mismatch(msg: TaskMismatchV1, ctx: Context) -> None:
    reason = f"{msg.reason}: {msg.detail}"[:REASON_CHARS]
    await stats_store.judge_result(
        ctx.conn,
        lease_id=msg.lease_id,
        task_id=msg.task_id,
        host=msg.host,
        build_id=msg.build_id,
        arch=msg.arch,
        verdict="refused",
        reason=reason,
    )
    if msg.reason == "no_agreement":
        await stats_store.record_task(
            ctx.conn,
            task_id=msg.task_id,
            build_id=msg.build_id,
            package=None,
            arch=msg.arch,
            outcome="no_agreement",
        )


async def on_build_queued(msg: BuildQueuedV1, ctx: Context) -> None:
    await stats_store.build_queued(ctx.conn, msg)


async def on_build_complete(msg: BuildCompleteV1, ctx: Context) -> None:
    await stats_store.build_finished(ctx.conn, msg, state="complete", tasks=msg.tasks)


async def on_build_failed(msg: BuildFailedV1, ctx: Context) -> None:
    await stats_store.build_finished(ctx.conn, msg, state="failed", reason=msg.reason)


async def on_throttle_engaged(msg: ThrottleEngagedV1, ctx: Context) -> None:
    await stats_store.record_throttle(ctx.conn, msg, engaged=True)


async def on_throttle_released(msg: ThrottleReleasedV1, ctx: Context) -> None:
    await stats_store.record_throttle(ctx.conn, msg, engaged=False)


def both(first: Handler, second: Handler) -> Handler:
    """One message, two handlers, in the same transaction (a rejection undoes both)."""

    async def handle(msg: fm.Message, ctx: Context) -> None:
        await first(msg, ctx)
        await second(msg, ctx)

    return handle


# Every message the statistics need except task.verified, which the storing handler shares.
HANDLERS: dict[type[fm.Message], Handler] = {
    HostStatusV1: on_host_status,
    TaskFinishedV1: on_task_finished,
    TaskMismatchV1: on_task_mismatch,
    BuildQueuedV1: on_build_queued,
    BuildCompleteV1: on_build_complete,
    BuildFailedV1: on_build_failed,
    ThrottleEngagedV1: on_throttle_engaged,
    ThrottleReleasedV1: on_throttle_released,
}
