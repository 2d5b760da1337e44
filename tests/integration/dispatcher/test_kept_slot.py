"""A fast host keeps a free slot for a critical chain link about to be queued (matching.keeps,
[dispatcher] keep_seconds), on a real database: it leaves a short-path build to others while
the link's predecessor runs, and takes the link once it is queued."""

from __future__ import annotations

import dataclasses

import pytest
from skyline_messages import TaskLeasedV1

from services.common.service import Runtime
from services.dispatcher.__main__ import SERVICE
from tests.integration.dispatcher.test_chains import chain, link
from tests.integration.dispatcher.test_critical_path import build_of, history, task_of
from tests.integration.dispatcher.test_dispatcher_service import (
    new_messages,
    of_type,
    stored,
    verified,
)
from tests.integration.dispatcher.test_host_qos import rated

pytestmark = pytest.mark.integration


def with_keep(runtime: Runtime, seconds: float) -> None:
    config = runtime.config
    runtime.config = dataclasses.replace(
        config, dispatcher=dataclasses.replace(config.dispatcher, keep_seconds=seconds)
    )


@pytest.mark.parametrize("keep_seconds", [600.0, 0.0])
async def test_a_fast_host_keeps_a_slot_for_a_critical_link_about_to_be_queued(
    runtime: Runtime, sent, keep_seconds: float
) -> None:
    with_keep(runtime, keep_seconds)
    for package, seconds in (("skyline-base", 10.0), ("skyline-giant", 1000.0)):
        await history(runtime, package, seconds)
    await history(runtime, "skyline-filler", 40.0)
    # A host of speed 2 builds the chain's first link (5 s there); the giant waits for it.
    await SERVICE.handle(runtime, rated("mid", 0.5, 2.0, free_slots=1))
    msg = chain(link("skyline-base-1-1"), link("skyline-giant-1-1", 0))
    [base] = of_type(await new_messages(runtime, sent, msg), TaskLeasedV1)
    assert (await task_of(runtime, "skyline-giant-1-1"))["state"] == "blocked"
    filler = build_of("skyline-filler-1-1")
    assert of_type(await new_messages(runtime, sent, filler), TaskLeasedV1) == []
    # The fastest host comes with a slot free: the filler (40 s, with slack) has a shorter
    # path than the giant (1000 s, critical), queued in about 5 s; no other slot is as fast.
    leases = of_type(await new_messages(runtime, sent, rated("fast", 0.5, 4.0, 1)), TaskLeasedV1)
    if not keep_seconds:  # the window off: the fast host takes the filler, as before
        assert [(m.body["host"], m.build_id) for m in leases] == [
            ("fast", (await task_of(runtime, "skyline-filler-1-1"))["build_id"])
        ]
        return
    assert leases == []
    assert (await task_of(runtime, "skyline-filler-1-1"))["state"] == "queued"
    # Once the first link is stored, the giant is queued and goes to the kept slot.
    await SERVICE.handle(runtime, verified(base))
    leases = of_type(await new_messages(runtime, sent, stored(base)), TaskLeasedV1)
    giant = (await task_of(runtime, "skyline-giant-1-1"))["build_id"]
    assert ("fast", giant) in [(m.body["host"], m.build_id) for m in leases]
