"""The collector's statistics against a real PostgreSQL: messages through SERVICE.handle as
the bus delivers them, read back through the JSON endpoints and the dashboard pages."""

from __future__ import annotations

import dataclasses
import html.parser
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from fedora_messaging import message as fm

from services.collector import stats_routes
from services.collector.__main__ import SERVICE
from services.common.config import Config
from services.common.service import Runtime
from services.common.testing import api_client, service_runtime
from services.dispatcher.routes import ROUTES as DISPATCHER_ROUTES
from tests.integration.collector import stats_farm as farm

pytestmark = pytest.mark.integration

NVR = "hello-1.0-1"


@pytest.fixture
async def dispatcher(config: Config) -> AsyncIterator[TestClient]:
    """The real dispatcher's HTTP API on its own (empty) database schema."""
    async with (
        service_runtime(config, "dispatcher") as runtime,
        api_client(runtime, DISPATCHER_ROUTES) as client,
    ):
        yield client


@pytest.fixture
async def runtime(config: Config, dispatcher: TestClient) -> AsyncIterator[Runtime]:
    url = str(dispatcher.make_url("")).rstrip("/")
    config = dataclasses.replace(
        config, collector=dataclasses.replace(config.collector, dispatcher_url=url)
    )
    async with service_runtime(config, "collector") as runtime:
        yield runtime


@pytest.fixture
async def client(runtime: Runtime) -> AsyncIterator[TestClient]:
    async with api_client(runtime, stats_routes.ROUTES) as client:
        yield client


async def deliver(runtime: Runtime, *msgs: fm.Message) -> None:
    for msg in msgs:
        msg.validate()  # as the consumer does before any handler sees it
        await SERVICE.handle(runtime, msg)


async def get_json(client: TestClient, path: str, status: int = 200) -> Any:
    response = await client.get(path)
    assert response.status == status, await response.text()
    return await response.json()


def copy(msg: fm.Message) -> fm.Message:
    """The same announcement again under a new message id (a publisher that resent it)."""
    return type(msg)(body=msg.body, topic=msg.topic)


@dataclasses.dataclass
class Farm:
    """Build 1 (two tasks) completes: on x86_64 alice's and bob's results agree and mallory's
    is the odd one out; noarch is alice's alone. Build 2 fails: mallory's result is refused."""

    alice: farm.Result = dataclasses.field(
        default_factory=lambda: farm.Result("alice-1", "alice", 11, 1, NVR)
    )
    bob: farm.Result = dataclasses.field(
        default_factory=lambda: farm.Result("bob-1", "bob", 11, 1, NVR, trust="untrusted")
    )
    mallory: farm.Result = dataclasses.field(
        default_factory=lambda: farm.Result("mallory-1", "mallory", 11, 1, NVR, trust="untrusted")
    )
    alice_noarch: farm.Result = dataclasses.field(
        default_factory=lambda: farm.Result("alice-1", "alice", 12, 1, NVR, arch="noarch")
    )
    mallory_xss: farm.Result = dataclasses.field(
        default_factory=lambda: farm.Result("mallory-1", "mallory", 21, 2, farm.XSS_NVR)
    )

    def leases(self) -> list[fm.Message]:
        """What the dispatcher tells the collector first: uploads are taken for leases only."""
        results = (self.alice, self.bob, self.mallory, self.alice_noarch, self.mallory_xss)
        return [r.leased() for r in results]

    async def upload(self, conn, config: Config, rpms: dict[str, Path]) -> None:
        """The results the verifier will name for storing, uploaded by their hosts."""
        await self.alice.stage(conn, config, rpms[NVR])
        await self.alice_noarch.stage(conn, config, rpms[NVR])

    def story(self) -> list[fm.Message]:
        """The rest of the day, once the uploads are in."""
        alice, bob, mallory = self.alice, self.bob, self.mallory
        return [
            farm.host_status("alice-1", "alice", arches=["x86_64", "noarch"]),
            farm.host_status("bob-1", "bob", trust="untrusted"),
            farm.host_status("mallory-1", "mallory", trust="untrusted", arches=["aarch64"]),
            farm.queued(1, NVR, tasks=[(11, "x86_64"), (12, "noarch")]),
            farm.queued(2, farm.XSS_NVR, tasks=[(21, "x86_64")]),
            alice.finished(3600),
            mallory.finished(36000),
            # bob's report comes after the verdict that credits it: the order does not matter
            farm.verified(alice, [alice, bob], rule="quorum", odd=[mallory]),
            bob.finished(7200),
            self.alice_noarch.finished(1800),
            farm.verified(self.alice_noarch, [self.alice_noarch], rule="trusted-sampled-out"),
            farm.complete(
                1,
                NVR,
                [
                    (11, "x86_64", ["alice-1", "bob-1"], "quorum"),
                    (12, "noarch", ["alice-1"], "core"),
                ],
            ),
            self.mallory_xss.mismatch(),
            farm.failed(2, farm.XSS_NVR, f"no result of {farm.XSS_NVR} could be accepted"),
            farm.throttle_engaged(),
        ]


async def live_through(runtime: Runtime, day: Farm, rpms: dict[str, Path]) -> list[fm.Message]:
    """Deliver the whole day to the collector; returns every message delivered."""
    leases = day.leases()
    await deliver(runtime, *leases)
    async with runtime.transaction() as ctx:
        await day.upload(ctx.conn, runtime.config, rpms)
    story = day.story()
    await deliver(runtime, *story)
    return [*leases, *story]


def by(rows: list[dict], key: str) -> dict[str, dict]:
    return {r[key]: r for r in rows}


async def test_credit_goes_only_to_agreeing_results(runtime, client, rpms) -> None:
    await live_through(runtime, Farm(), rpms)

    board = await get_json(client, "/api/v1/stats/leaderboard")
    hosts = by(board["hosts"], "host")
    # x86_64: the smaller of alice's and bob's claims (1 h) to each; noarch: alice's 0.5 h.
    assert hosts["alice-1"] | {"rank": 0} == {
        "rank": 0,
        "host": "alice-1",
        "owner": "alice",
        "results": 2,
        "accepted": 2,
        "refused": 0,
        "build_hours": 1.5,
        "credit": 150.0,
        "valid_rate": 1.0,
    }
    assert hosts["alice-1"]["rank"] == 1
    assert hosts["bob-1"]["credit"] == 100.0  # claimed 2 h, granted what alice claimed
    assert hosts["bob-1"]["build_hours"] == 2.0
    # The odd one out and the refused result earn nothing and lower the valid rate.
    assert hosts["mallory-1"] | {"rank": 0} == {
        "rank": 0,
        "host": "mallory-1",
        "owner": "mallory",  # from the registry's host.status: verdicts against it name none
        "results": 2,
        "accepted": 0,
        "refused": 2,
        "build_hours": 10.0,
        "credit": 0.0,
        "valid_rate": 0.0,
    }
    owners = by(board["owners"], "owner")
    assert [o["owner"] for o in board["owners"]] == ["alice", "bob", "mallory"]
    assert owners["alice"]["credit"] == 150.0 and owners["alice"]["hosts"] == 1
    assert owners["mallory"]["valid_rate"] == 0.0

    summary = await get_json(client, "/api/v1/stats/summary")
    assert summary["builds"] == {"open": 0, "complete": 1, "failed": 1}
    assert summary["tasks_judged"] == 2
    assert summary["disagreement_rate"] == 0.5  # task 11 had an odd one out, task 12 none
    assert summary["throttle"]["engaged"] is True
    assert summary["throttle"]["bad_rate"] == 0.4
    assert len(summary["builds_per_hour"]) == 24
    assert summary["builds_per_hour"][-1]["builds"] == 1

    builds = by((await get_json(client, "/api/v1/stats/builds"))["builds"], "build_id")
    assert builds[1]["verdict"] == "complete"
    assert builds[1]["tasks"][0]["agreeing"] == ["alice-1", "bob-1"]
    assert builds[2]["verdict"] == "failed"
    assert builds[2]["nvr"] == farm.XSS_NVR

    packages = by((await get_json(client, "/api/v1/stats/packages"))["packages"], "package")
    hello = packages["hello"]
    assert (hello["builds"], hello["complete"], hello["failed"]) == (1, 1, 0)
    assert (hello["tasks_verified"], hello["tasks_reproduced"]) == (2, 1)
    assert hello["max_task_seconds"] == 36000.0
    assert hello["not_reproducible_arches"] == []

    listing = await get_json(client, "/api/v1/stats/hosts")
    assert listing["by_arch"] == {
        "aarch64": {"untrusted": 1},
        "noarch": {"trusted": 1},
        "x86_64": {"trusted": 1, "untrusted": 1},
    }


async def test_redelivered_and_resent_messages_change_nothing(runtime, client, rpms) -> None:
    day = Farm()
    messages = await live_through(runtime, day, rpms)
    before = [
        await get_json(client, path)
        for path in ("/api/v1/stats/leaderboard", "/api/v1/stats/builds", "/api/v1/stats/packages")
    ]
    await deliver(runtime, *messages)  # redelivered: the same message ids
    await deliver(runtime, *(copy(m) for m in messages if m.topic != "skyline.throttle.engaged"))
    # A late refusal of a result already accepted does not take its credit back.
    await deliver(runtime, day.alice.mismatch())
    after = [
        await get_json(client, path)
        for path in ("/api/v1/stats/leaderboard", "/api/v1/stats/builds", "/api/v1/stats/packages")
    ]
    assert after == before


async def test_a_package_that_does_not_reproduce_is_marked(runtime, client, rpms) -> None:
    a = farm.Result("core-1", "fedora", 31, 3, "gcc-14-1", trust="core")
    await deliver(runtime, a.leased())
    async with runtime.transaction() as ctx:
        await a.stage(ctx.conn, runtime.config, rpms["gcc-14-1"])
    await deliver(
        runtime,
        farm.queued(3, "gcc-14-1", tasks=[(31, "x86_64")]),
        a.finished(60),
        farm.verified(a, [a], rule="not-reproducible", not_reproducible=True),
    )
    packages = by((await get_json(client, "/api/v1/stats/packages"))["packages"], "package")
    assert packages["gcc"]["not_reproducible_arches"] == ["x86_64"]
    assert packages["gcc"]["builds"] == 1 and packages["gcc"]["complete"] == 0
    summary = await get_json(client, "/api/v1/stats/summary")
    assert summary["builds"]["open"] == 1
    assert summary["disagreement_rate"] == 1.0


async def test_a_task_without_agreement_counts_as_a_disagreement(runtime, client) -> None:
    r = farm.Result("bob-1", "bob", 41, 4, NVR)
    await deliver(runtime, r.finished(10), r.mismatch("no_agreement"))
    summary = await get_json(client, "/api/v1/stats/summary")
    assert (summary["tasks_judged"], summary["disagreement_rate"]) == (1, 1.0)


class _Page(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.links: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.links += [v or "" for k, v in attrs if k == "href"]

    def handle_data(self, data: str) -> None:
        self.text.append(data)


async def page(client: TestClient, path: str) -> _Page:
    response = await client.get(path)
    assert response.status == 200, await response.text()
    assert response.content_type == "text/html"
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    parsed = _Page()
    parsed.feed(await response.text())
    return parsed


@pytest.mark.parametrize(
    ("path", "json"),
    [
        ("/dashboard", "/api/v1/stats/summary"),
        ("/dashboard/leaderboard", "/api/v1/stats/leaderboard"),
        ("/dashboard/hosts", "/api/v1/stats/hosts"),
        ("/dashboard/queue", "/api/v1/stats/queue"),
        ("/dashboard/builds", "/api/v1/stats/builds"),
        ("/dashboard/packages", "/api/v1/stats/packages"),
    ],
)
async def test_every_page_shows_its_json_with_untrusted_names_as_text(
    runtime, client, rpms, path, json
) -> None:
    await live_through(runtime, Farm(), rpms)
    parsed = await page(client, path)
    assert json in parsed.links
    await get_json(client, json)  # and that link works
    assert "script" not in parsed.tags
    if path in ("/dashboard", "/dashboard/builds"):
        assert farm.XSS_NVR in "".join(parsed.text)  # shown, as text
    if path == "/dashboard":
        assert "svg" in parsed.tags and "rect" in parsed.tags


async def test_the_queue_is_the_dispatchers_and_its_absence_is_no_error(runtime, client) -> None:
    queue = await get_json(client, "/api/v1/stats/queue")
    assert queue == {"available": True, "tasks": {}, "hosts": []}
    runtime.config = dataclasses.replace(
        runtime.config,
        collector=dataclasses.replace(
            runtime.config.collector, dispatcher_url="http://127.0.0.1:9"
        ),
    )
    queue = await get_json(client, "/api/v1/stats/queue")
    assert queue == {"available": False, "error": "the dispatcher cannot be reached"}
    parsed = await page(client, "/dashboard/queue")
    assert "the dispatcher cannot be reached" in "".join(parsed.text)


@pytest.mark.parametrize("limit", ["0", "501", "-1", "ten", "1e3"])
async def test_a_bad_limit_is_a_400_with_a_json_error(client, limit) -> None:
    body = await get_json(client, f"/api/v1/stats/leaderboard?limit={limit}", status=400)
    assert "limit" in body["error"]
