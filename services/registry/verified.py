"""Consumer of `skyline.task.verified`: accepted results raise or lower their hosts' trust.

Every transition is stored (listed by GET /api/v1/hosts/{host}/trust) and published as
`host.trust`, then `host.status` with the new level, in the message's transaction; a host
the policy quarantines is cut off as the admin's /quarantine does. Redeliveries are skipped
by the bus's processed-message ids, so no result counts twice.
"""

from __future__ import annotations

import logging

from skyline_messages import TaskVerifiedV1

from services.common.service import Context

from . import hoststate, qos_events, store, trust_store, verdicts
from .trust import Trust

log = logging.getLogger(__name__)


async def on_task_verified(msg: TaskVerifiedV1, ctx: Context) -> None:
    rated = await qos_events.on_verdict(msg, ctx)  # the valid-result rate of every host named
    await _grade_trust(msg, ctx)
    # After grading: a status the trust change published carries the new score already.
    await qos_events.publish_changed(ctx, rated)


async def _grade_trust(msg: TaskVerifiedV1, ctx: Context) -> None:
    if msg.status != "succeeded" or not msg.agreeing:
        return  # a failure, or a verifier without the acceptance policy: nobody is graded
    key = msg.comparison_key or msg.result_digest
    config = ctx.config.registry.trust
    task_id = str(msg.task_id)
    for outcome in verdicts.outcomes(task_id, key, msg.agreeing, msg.odd_ones_out):
        row = await trust_store.lock_host(ctx.conn, outcome.host)
        if row is None:
            log.error("task %s names unknown host %r: not graded", task_id, outcome.host)
            continue
        state, transition = verdicts.apply(trust_store.host_trust(row), outcome, config)
        row = await trust_store.save(ctx.conn, state)
        if transition is None:
            continue
        await trust_store.record_transition(ctx.conn, transition)
        cut_off = transition.new == Trust.QUARANTINED and row["state"] != hoststate.QUARANTINED
        if cut_off:
            quarantined = await hoststate.set_state(
                ctx, outcome.host, hoststate.QUARANTINED, "trust policy"
            )
            row = quarantined if quarantined is not None else row  # the row is locked: found
        await ctx.publish(trust_store.trust_message(row["owner"], transition))
        if transition.new != transition.old or cut_off:
            status = store.status_message(row)
            await ctx.publish(status)
            await store.record_published(ctx.conn, [status])
        log.warning(
            "host %s trust %s -> %s (task %s): %s",
            outcome.host,
            transition.old,
            transition.new,
            task_id,
            transition.reason,
        )
