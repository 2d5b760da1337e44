"""The dashboard in headless Chromium, served by a running collector that learnt everything
from real messages: published on a real RabbitMQ by their real principals (the registry, the
dispatcher, the verifier, the hosts), consumed by the collector's own consumer, kept in a
real PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from fedora_messaging import message as fm

from services.collector.__main__ import SERVICE
from services.common.broker_admin import Principals
from services.common.bus import Bus
from services.common.config import Config
from services.common.localstack import free_port
from services.common.testing import service_runtime, until
from tests import browser
from tests.integration.collector import stats_farm as farm
from tests.integration.collector.test_collector_stats import NVR, Farm

pytestmark = pytest.mark.integration

PUBLISHERS = {  # topic -> who publishes it (services/common/principals.py); else the host
    "skyline.task.leased": "dispatcher",
    "skyline.host.status": "registry",
    "skyline.build.queued": "dispatcher",
    "skyline.build.complete": "dispatcher",
    "skyline.build.failed": "dispatcher",
    "skyline.task.verified": "verifier",
    "skyline.task.mismatch": "verifier",
    "skyline.throttle.engaged": "verifier",
}


@contextlib.asynccontextmanager
async def running_collector(config: Config) -> AsyncIterator[str]:
    """SERVICE.run as `skyline-collector` runs it; yields its base URL once it answers."""
    port = int(config.collector.listen.rsplit(":", 1)[1])
    stop = asyncio.Event()
    task = asyncio.create_task(SERVICE.run(config, stop))
    url = f"http://127.0.0.1:{port}"
    try:
        await until(lambda: ok(f"{url}/healthz"), "the collector answers")
        yield url
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def ok(url: str) -> bool:
    with contextlib.suppress(aiohttp.ClientError):
        async with aiohttp.ClientSession() as http, http.get(url) as resp:
            return resp.status == 200
    return False


async def get_json(url: str) -> dict:
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


class Publishers:
    """One connected Bus per principal, made on first use."""

    def __init__(self, broker: Principals) -> None:
        self.broker = broker
        self.buses: dict[str, Bus] = {}

    async def bus(self, msg: fm.Message) -> Bus:
        service = PUBLISHERS.get(type(msg).topic)  # None: the host's own (task.finished)
        name = service or f"host:{msg.body['host']}"
        if name not in self.buses:
            url = await (
                self.broker.service(service) if service else self.broker.host(msg.body["host"])
            )
            bus = self.buses[name] = Bus(url, name=f"test-{name}")
            await bus.connect()
        return self.buses[name]

    async def publish(self, msg: fm.Message) -> None:
        await (await self.bus(msg)).publish(msg)

    async def close(self) -> None:
        for bus in self.buses.values():
            await bus.close()


@pytest.fixture
async def publishers(broker: Principals) -> AsyncIterator[Publishers]:
    p = Publishers(broker)
    try:
        yield p
    finally:
        await p.close()


async def test_the_dashboard_in_chromium_shows_the_leaderboard_and_the_verdicts(
    config, broker, publishers, rpms
) -> None:
    config = dataclasses.replace(
        config,
        amqp_url=await broker.service("collector"),
        collector=dataclasses.replace(
            config.collector,
            listen=f"127.0.0.1:{free_port()}",
            dispatcher_url="http://127.0.0.1:9",  # no dispatcher here: the queue is unavailable
        ),
    )
    day = Farm()
    async with running_collector(config) as url:
        # The collector's queue is bound once it consumes: until then a message goes nowhere.
        async def registered() -> bool:
            await publishers.publish(
                farm.host_status("alice-1", "alice", arches=["x86_64", "noarch"])
            )
            hosts = await get_json(f"{url}/api/v1/stats/hosts")
            return any(h["host"] == "alice-1" for h in hosts["hosts"])

        await until(registered, "the collector hears the registry")
        leases = day.leases()
        for msg in leases:
            await publishers.publish(msg)

        async def leased() -> bool:
            return all([await ok(f"{url}/api/v1/leases/{m.body['lease_id']}") for m in leases])

        await until(leased, "the collector knows the leases")
        # The uploads, as the upload route stages them once their signatures are checked.
        async with service_runtime(config, "collector") as runtime, runtime.transaction() as ctx:
            await day.upload(ctx.conn, config, rpms)
        for msg in day.story():
            await publishers.publish(msg)

        async def all_heard() -> bool:
            board = await get_json(f"{url}/api/v1/stats/leaderboard")
            builds = await get_json(f"{url}/api/v1/stats/builds")
            verdicts = {b["build_id"]: b["verdict"] for b in builds["builds"]}
            hosts = {h["host"]: h for h in board["hosts"]}
            return (
                verdicts == {1: "complete", 2: "failed"}
                and hosts.get("alice-1", {}).get("credit") == 150.0
                and hosts.get("mallory-1", {}).get("refused") == 2
                and hosts.get("bob-1", {}).get("credit") == 100.0
            )

        await until(all_heard, "the collector has heard the whole day")

        dom = await browser.dump_dom(f"{url}/dashboard")
        page = browser.tables(dom)
        assert "script" not in page.tags  # the hostile N-V-R stayed text
        hosts = {row[1]: row for row in page.tables["hosts"][1:]}
        # rank, host, owner, credit, valid rate, accepted, refused, results, build hours
        assert hosts["alice-1"][:7] == ["1", "alice-1", "alice", "150.0", "100.0 %", "2", "0"]
        assert hosts["mallory-1"][3:7] == ["0.0", "0.0 %", "0", "2"]
        owners = {row[1]: row for row in page.tables["owners"][1:]}
        assert owners["alice"][3] == "150.0"
        builds = {row[1]: row for row in page.tables["builds"][1:]}
        # build, nvr, owner, verdict, hosts that agreed, reason, finished
        assert builds[NVR][3] == "complete"
        assert builds[NVR][4].splitlines() == [
            "x86_64: alice-1, bob-1 (quorum)",
            "noarch: alice-1 (core)",
        ]
        assert builds[farm.XSS_NVR][3] == "failed"
        assert "svg" in page.tags  # the builds-per-hour chart

        shots = Path(tempfile.mkdtemp(prefix="skyline-dashboard-"))
        shot = await browser.screenshot(f"{url}/dashboard", shots / "dashboard.png")
        print(f"dashboard screenshot: {shot}")
        assert shot.read_bytes().startswith(b"\x89PNG")
