"""A build may outlast [dispatcher] lease_seconds: its host's statuses (running builds) renew
its leases, up to lease_max_seconds after they were given and up to lease_overrun times the
task's estimated time on the host; a host that goes silent, or says it runs nothing, lets
them expire."""

from __future__ import annotations

import datetime

import pytest
from skyline_messages import TaskLeasedV1

from services.common.service import Runtime
from services.dispatcher import handlers
from services.dispatcher.__main__ import SERVICE
from tests.integration.dispatcher.test_dispatcher_service import (
    finished,
    new_messages,
    of_type,
    request,
    status,
)

pytestmark = pytest.mark.integration


async def expiries(runtime: Runtime) -> dict[int, tuple[datetime.datetime, datetime.datetime]]:
    """Each leased task's expiry as the sweep reads it (tasks) and as its lease records it."""
    rows = await runtime.pool.fetch(
        "SELECT t.id, t.lease_expires, l.expires_at FROM tasks t"
        " JOIN leases l ON l.lease_id = t.lease_id ORDER BY t.id"
    )
    return {r["id"]: (r["lease_expires"], r["expires_at"]) for r in rows}


async def age_leases(runtime: Runtime, hours: float) -> None:
    """As if the leases were given `hours` ago and are about to expire."""
    await runtime.pool.execute(
        "UPDATE leases SET created_at = now() - make_interval(secs => $1::float8),"
        " expires_at = now() + interval '1 minute'",
        hours * 3600,
    )
    await runtime.pool.execute(
        "UPDATE tasks SET lease_expires = now() + interval '1 minute' WHERE state = 'leased'"
    )


async def test_a_reporting_hosts_long_build_keeps_its_lease(runtime: Runtime, sent) -> None:
    await SERVICE.handle(runtime, request(arches=["noarch"]))
    [lease] = of_type(await new_messages(runtime, sent, status(free_slots=1)), TaskLeasedV1)
    await age_leases(runtime, 2.0)  # two hours into a build, past lease_seconds (1 h)
    await SERVICE.handle(runtime, status(free_slots=0, running=1))
    [(task_expires, lease_expires)] = (await expiries(runtime)).values()
    soonest = datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=55)
    assert task_expires == lease_expires and task_expires > soonest
    await handlers.requeue_expired_leases(runtime)
    row = await runtime.pool.fetchrow("SELECT state, lease_id FROM tasks")
    assert (row["state"], str(row["lease_id"])) == ("leased", lease.body["lease_id"])


async def test_statuses_renew_no_lease_past_its_maximum(runtime: Runtime, sent) -> None:
    await SERVICE.handle(runtime, request(arches=["noarch"]))
    await new_messages(runtime, sent, status(free_slots=1))
    await age_leases(runtime, 23.5)  # lease_max_seconds is 24 h: half an hour left at most
    await SERVICE.handle(runtime, status(free_slots=0, running=1))
    [(task_expires, _)] = (await expiries(runtime)).values()
    latest = datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=31)
    assert task_expires < latest


@pytest.mark.parametrize(
    ("work", "speed", "renewed"),
    [(600, 1.0, False), (7200, 1.0, True), (1500, 0.5, True), (None, None, True)],
)
async def test_statuses_renew_a_lease_up_to_overrun_times_its_estimate(
    runtime: Runtime, sent, work: float | None, speed: float | None, renewed: bool
) -> None:
    """Two hours into the build: a 10-minute estimate (4 x 600 s is under the hour's floor)
    is not renewed; a 2-hour one is; so is 25 minutes of work on a host of half speed (4 x 50
    minutes); a task without history keeps lease_max_seconds."""
    await SERVICE.handle(runtime, request(arches=["noarch"]))
    await new_messages(runtime, sent, status(free_slots=1))
    await runtime.pool.execute("UPDATE tasks SET work = $1", work)
    await runtime.pool.execute("UPDATE leases SET speed = $1", speed)
    await age_leases(runtime, 2.0)
    before = await expiries(runtime)
    await SERVICE.handle(runtime, status(free_slots=0, running=1))
    [(task_expires, _)] = (await expiries(runtime)).values()
    soonest = datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=55)
    if renewed:
        assert task_expires > soonest
    else:
        assert await expiries(runtime) == before


@pytest.mark.parametrize("word", ["runs nothing", "offline"])
async def test_a_host_that_runs_nothing_renews_nothing(runtime: Runtime, sent, word: str) -> None:
    await SERVICE.handle(runtime, request(arches=["noarch"]))
    await new_messages(runtime, sent, status(free_slots=1))
    await age_leases(runtime, 2.0)
    before = await expiries(runtime)
    if word == "offline":
        await SERVICE.handle(runtime, status(free_slots=0, running=1, state="offline"))
    else:
        await SERVICE.handle(runtime, status(free_slots=0, running=0))
    assert await expiries(runtime) == before


async def test_a_finished_build_waits_for_its_verdict_not_for_statuses(
    runtime: Runtime, sent
) -> None:
    """Once the host reports the build done, the verdict grace governs (extend_lease)."""
    await SERVICE.handle(runtime, request(arches=["noarch"]))
    [lease] = of_type(await new_messages(runtime, sent, status(free_slots=1)), TaskLeasedV1)
    await SERVICE.handle(runtime, finished(lease))
    await age_leases(runtime, 2.0)
    before = await expiries(runtime)
    await SERVICE.handle(runtime, status(free_slots=0, running=1))
    assert await expiries(runtime) == before
