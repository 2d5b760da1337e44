"""A database outage while builds run loses nothing: it only delays them.

PostgreSQL (the system's own private cluster) is stopped for 30 s while requests, results and
stored-notifications are in flight, and further requests are published during the outage.
Once it is back, every build completes exactly once, each file is stored once, and no
dead-letter queue holds a valid message: a database that is down is never a message's fault.
The session's leases last 20 s (tests/system.py), less than the outage: a lease whose upload
waited for the collector may expire and its task be built again, so the test asserts one
completion and one stored copy per build, not one lease.
"""

from __future__ import annotations

import asyncio
import logging
import time

import aiohttp
import pytest
from skyline_messages import TaskLeasedV1

from services.cli.localsystem import SERVICES, LocalSystem
from tests.e2e.test_recovery import (
    assert_built_once,
    completed,
    dead_lettered,
    pid_of,
    restore,
)
from tests.e2e.test_walking_skeleton import build_id_of, publish, request_body, request_message

pytestmark = pytest.mark.e2e

log = logging.getLogger(__name__)

OUTAGE_SECONDS = 30
BEFORE = 4  # requests published before the outage (some leased, some still queued)
DURING = 2  # requests published while PostgreSQL is down
DEAD_QUEUES = ["skyline.dispatcher", "skyline.verifier", "skyline.collector", "skyline.registry"]


async def idle(system: LocalSystem) -> bool:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{system.url('dispatcher')}/api/v1/queue") as response,
    ):
        tasks = (await response.json())["tasks"]
    return not any(tasks.get(state) for state in ("queued", "leased", "verified"))


async def all_dead_lettered(system: LocalSystem) -> set[str]:
    found: set[str] = set()
    for queue in DEAD_QUEUES:
        found |= await dead_lettered(system, queue)
    return found


async def test_database_outage_of_30_s_loses_no_build(system, example_srpm, tap):
    deadline = time.monotonic() + 60
    while not await idle(system):  # earlier tests' builds may still be finishing
        assert time.monotonic() < deadline, "the system did not become idle"
        await asyncio.sleep(0.5)
    dead_before = await all_dead_lettered(system)
    # Uploaded while the database is up; each request of it is a distinct scratch build.
    body = await request_body(system, example_srpm, scratch=True)
    started = time.monotonic()
    before = [request_message(system, body) for _ in range(BEFORE)]
    during = [request_message(system, body) for _ in range(DURING)]
    try:
        for request in before:
            await publish(system, request)
        build_ids = [await build_id_of(system, r) for r in before]
        # Stop the database once builds are leased: their results, verdicts and
        # stored-notifications now cross the outage, as do the still-queued tasks' leases.
        await tap.wait(TaskLeasedV1, where=lambda m: m.body["build_id"] in build_ids)
        await asyncio.to_thread(system.postgres.stop)
        outage = time.monotonic()
        for request in during:  # the broker takes them; the dispatcher cannot record them yet
            await publish(system, request)
        await asyncio.sleep(OUTAGE_SECONDS - (time.monotonic() - outage))
        await asyncio.to_thread(system.postgres.start)
        back = time.monotonic()

        build_ids += [await build_id_of(system, r, timeout=120) for r in during]
        for build_id in build_ids:
            await completed(tap, build_id, timeout=180)
        recovered = time.monotonic() - back
        # Nothing was restarted by hand: each service rode out the outage by itself.
        stopped = [n for n in [*SERVICES, *system.builder_names()] if not pid_of(system, n)]
        assert not stopped, f"died with the database: {stopped}"
    finally:
        if not system.postgres.is_running():
            await asyncio.to_thread(system.postgres.start)
        await asyncio.to_thread(restore, system)

    for request, build_id in zip(before + during, build_ids, strict=True):
        await assert_built_once(system, tap, request, build_id)

    # Nothing valid was dead-lettered: no message this test saw on the bus (each was valid,
    # as the tap decodes it), and none of the requests.
    new_dead = await all_dead_lettered(system) - dead_before
    valid = {m.id for m in tap.messages} | {r.id for r in before + during}
    assert not new_dead & valid, f"valid messages dead-lettered: {sorted(new_dead & valid)}"
    log.warning(
        "%d builds complete once; %d new dead letters; all done %.0f s after the database"
        " came back, %.0f s in all",
        len(build_ids),
        len(new_dead),
        recovered,
        time.monotonic() - started,
    )
