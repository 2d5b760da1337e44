"""The throttle on a real database: while engaged only core hosts get new leases, queued tasks
say so, leases given stay; on release the queue is scheduled again."""

from __future__ import annotations

import datetime
from typing import TypeVar

import pytest
from fedora_messaging import message as fm
from skyline_messages import TaskLeasedV1, TaskRevokedV1, ThrottleEngagedV1, ThrottleReleasedV1

from services.common.service import Runtime
from services.dispatcher.__main__ import SERVICE
from tests.integration.dispatcher.test_dispatcher_service import (
    new_messages,
    of_type,
    request,
    status,
    task_rows,
)
from tests.integration.dispatcher.test_scheduling import queue_reasons

pytestmark = pytest.mark.integration
Message = TypeVar("Message", bound=fm.Message)

BODY = {"bad_rate": 0.3, "threshold": 0.25, "window_seconds": 3600, "results": 40}
THROTTLED = "throttled (bad-result rate 30% over the last 40 results): only core hosts build"


def engaged() -> ThrottleEngagedV1:
    return ThrottleEngagedV1(body={**BODY, "reason": "12 of the last 40 results bad"})


def released() -> ThrottleReleasedV1:
    return ThrottleReleasedV1(body={**BODY, "bad_rate": 0.05, "threshold": 0.1})


def _at(msg: Message, at: datetime.datetime) -> Message:
    """The message as if the verifier had made it at `at` (its sent-at header)."""
    msg._headers["sent-at"] = at.isoformat()
    return msg


async def throttle_row(runtime: Runtime) -> bool:
    return await runtime.pool.fetchval("SELECT engaged FROM throttle")


async def test_engaged_only_core_hosts_get_new_work_until_released(runtime, sent, client) -> None:
    # Before: a volunteer takes a build.
    await SERVICE.handle(runtime, request(scratch=True))
    [before] = of_type(
        await new_messages(runtime, sent, status("alice-1", trust="trusted", owner="alice")),
        TaskLeasedV1,
    )
    assert before.body["host"] == "alice-1"
    # Engaged: nothing is revoked, the volunteer keeps its lease.
    out = await new_messages(runtime, sent, engaged())
    assert of_type(out, TaskRevokedV1) == [] and of_type(out, TaskLeasedV1) == []
    assert await throttle_row(runtime) is True
    [task] = await task_rows(runtime)
    assert (task["state"], task["host"]) == ("leased", "alice-1")

    # A new build waits: volunteers with free slots get nothing, whatever their trust.
    await SERVICE.handle(runtime, request(scratch=True))
    for volunteer in (
        status("bob-1", trust="untrusted", owner="bob"),
        status("carol-1", trust="trusted", owner="carol", free_slots=4),
    ):
        assert of_type(await new_messages(runtime, sent, volunteer), TaskLeasedV1) == []
    assert await queue_reasons(client, 2) == {"noarch": THROTTLED}
    queue = await (await client.get("/api/v1/queue")).json()
    assert queue["throttle"]["engaged"] is True
    assert queue["throttle"]["reason"] == "12 of the last 40 results bad"
    assert [w["queue_reason"] for w in queue["waiting"]] == [THROTTLED]

    # Released: the schedule pass gives the queued task to a free volunteer at once.
    [lease] = of_type(await new_messages(runtime, sent, released()), TaskLeasedV1)
    assert lease.body["host"] in ("bob-1", "carol-1")
    assert lease.body["build_id"] == 2
    assert await throttle_row(runtime) is False
    queue = await (await client.get("/api/v1/queue")).json()
    assert queue["throttle"]["engaged"] is False


async def test_engaged_a_core_host_still_builds(runtime, sent, client) -> None:
    await SERVICE.handle(runtime, status("bob-1", trust="trusted", owner="bob", free_slots=0))
    await SERVICE.handle(runtime, engaged())
    await SERVICE.handle(runtime, request(scratch=True))
    assert await queue_reasons(client, 1) == {"noarch": THROTTLED}
    [lease] = of_type(await new_messages(runtime, sent, status("core-1")), TaskLeasedV1)
    assert lease.body["host"] == "core-1"


async def test_an_engagement_explains_the_queue_at_once(runtime, sent, client) -> None:
    await SERVICE.handle(runtime, status("bob-1", trust="trusted", owner="bob", free_slots=0))
    await SERVICE.handle(runtime, request(scratch=True))
    assert await queue_reasons(client, 1) == {"noarch": "all 1 eligible hosts busy"}
    await SERVICE.handle(runtime, engaged())
    assert await queue_reasons(client, 1) == {"noarch": THROTTLED}
    await SERVICE.handle(runtime, released())
    assert await queue_reasons(client, 1) == {"noarch": "all 1 eligible hosts busy"}


async def test_an_older_announcement_does_not_undo_a_newer_one(runtime, sent) -> None:
    now = datetime.datetime.now(datetime.UTC)
    await SERVICE.handle(runtime, _at(released(), now))
    await SERVICE.handle(runtime, _at(engaged(), now - datetime.timedelta(seconds=5)))
    assert await throttle_row(runtime) is False
    await SERVICE.handle(runtime, _at(engaged(), now + datetime.timedelta(seconds=5)))
    assert await throttle_row(runtime) is True
