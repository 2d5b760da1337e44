"""The contributors' dashboard in headless Chromium after a real build through the system."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import aiohttp
import pytest
from skyline_messages import BuildCompleteV1, TaskVerifiedV1

from tests import browser
from tests.e2e.test_walking_skeleton import build_id_of, publish, request_body, request_message

pytestmark = pytest.mark.e2e


async def test_a_real_build_is_on_the_dashboard_with_its_verdict(system, example_srpm, tap):
    request = request_message(system, await request_body(system, example_srpm, scratch=True))
    await publish(system, request)
    build_id = await build_id_of(system, request)
    complete = await tap.wait(BuildCompleteV1, timeout=120, build_id=build_id)
    verified = await tap.wait(TaskVerifiedV1, timeout=10, build_id=build_id)
    # The hosts credited: task.verified's agreeing ones (the stored one, from an older verifier).
    agreeing = sorted({a["host"] for a in verified.agreeing} or {verified.body["host"]})

    collector = system.url("collector")
    async with aiohttp.ClientSession() as http:
        for _ in range(600):  # the collector hears build.complete on its own queue
            async with http.get(f"{collector}/api/v1/stats/builds") as reply:
                builds = {b["build_id"]: b for b in (await reply.json())["builds"]}
            async with http.get(f"{collector}/api/v1/stats/leaderboard") as reply:
                hosts = {h["host"]: h for h in (await reply.json())["hosts"]}
            if builds.get(build_id, {}).get("verdict") == "complete" and all(
                hosts.get(h, {}).get("accepted") for h in agreeing
            ):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"build {build_id} is not on the collector's statistics")
        async with http.get(f"{collector}/api/v1/stats/queue") as reply:
            queue = await reply.json()
        assert queue["available"] is True, queue  # the dispatcher's own count
        assert {h["host"] for h in queue["hosts"]} >= set(agreeing)

    page = browser.tables(await browser.dump_dom(f"{collector}/dashboard"))
    rows = {row[0]: row for row in page.tables["builds"][1:]}
    row = rows[str(build_id)]
    assert row[1] == complete.body["nvr"] and row[3] == "complete"
    if complete.tasks:  # a dispatcher that names who agreed on each task
        assert all(h in row[4] for h in agreeing)
    leaders = {r[1]: r for r in page.tables["hosts"][1:]}
    for host in agreeing:
        assert int(leaders[host][5]) >= 1  # accepted results
        assert float(leaders[host][3]) > 0  # credit: only accepted work earns it

    shot = Path(tempfile.mkdtemp(prefix="skyline-dashboard-")) / "dashboard.png"
    await browser.screenshot(f"{collector}/dashboard", shot)
    print(f"dashboard screenshot: {shot}")
