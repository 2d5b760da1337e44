"""Two dispatcher services side by side (SERVICE.run twice in this test process, each with its
own database pool, broker connection, consumer and outbox relay) on one PostgreSQL and one
RabbitMQ queue: requests and heartbeats published by their real principals are shared
between them, and no task is leased twice nor any host filled beyond its slots."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
from collections.abc import AsyncIterator

import asyncpg
import pytest

from services.common.bus import Bus
from services.common.config import Config
from services.common.localstack import free_port
from services.common.testing import until
from services.dispatcher.__main__ import SERVICE
from tests.integration.dispatcher.test_dispatcher_service import request, status

pytestmark = pytest.mark.integration

HOSTS, SLOTS, BUILDS = 12, 3, 60


@contextlib.asynccontextmanager
async def dispatchers(config: Config, count: int) -> AsyncIterator[None]:
    stop = asyncio.Event()
    runs = []
    for _ in range(count):
        listen = f"127.0.0.1:{free_port()}"
        each = dataclasses.replace(
            config, dispatcher=dataclasses.replace(config.dispatcher, listen=listen)
        )
        runs.append(asyncio.create_task(SERVICE.run(each, stop)))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*runs), 60)


async def test_two_dispatchers_never_lease_a_task_twice_nor_overfill_a_host(
    config: Config, broker
) -> None:
    config = dataclasses.replace(config, amqp_url=await broker.service("dispatcher"))
    registry = Bus(await broker.service("registry"), name="test-registry")
    packager = Bus(await broker.owner("alice"), name="test-alice")
    await registry.connect()
    await packager.connect()
    db = await asyncpg.connect(config.database_url, server_settings={"search_path": "dispatcher"})
    try:
        async with dispatchers(config, 2):
            # The queue is bound once a dispatcher consumes: until then, a status goes nowhere.
            async def heard() -> bool:
                await registry.publish(status("probe", free_slots=0))
                with contextlib.suppress(asyncpg.UndefinedTableError):
                    return bool(await db.fetchval("SELECT count(*) FROM hosts"))
                return False

            await until(heard, "a dispatcher consumes")
            for _ in range(BUILDS):
                await packager.publish(request(arches=["noarch", "x86_64"]))
            await until(
                lambda: _count(db, "SELECT count(*) FROM tasks", 2 * BUILDS),
                "every request is queued",
            )
            # Every host says, again and again and all at once, that all its slots are free:
            # both dispatchers pull for them concurrently.
            for _ in range(3):
                last = [
                    status(f"core-{i}", free_slots=SLOTS, max_slots=SLOTS) for i in range(HOSTS)
                ]
                await asyncio.gather(*(registry.publish(msg) for msg in last))
            await until(
                lambda: _count(db, "SELECT count(*) FROM leases", HOSTS * SLOTS),
                "every slot is leased",
            )
            # Let the later heartbeats be handled too: nothing more may be leased. The last
            # round's statuses are newer than all before: once each is stored, an earlier one
            # still in flight is stale and changes nothing (no processed-message rows).
            newest = min(datetime.datetime.fromisoformat(m.body["seen_at"]) for m in last)
            await until(
                lambda: _count(
                    db,
                    f"SELECT count(*) FROM hosts WHERE seen_at >= '{newest.isoformat()}'",
                    HOSTS,
                ),
                "every host's last status is handled",
            )
        per_task = await db.fetch("SELECT task_id, count(*) AS n FROM leases GROUP BY task_id")
        assert len(per_task) == HOSTS * SLOTS and {r["n"] for r in per_task} == {1}
        per_host = await db.fetch(
            "SELECT host, count(*) AS n FROM leases WHERE state = 'open' GROUP BY host"
        )
        assert {r["host"]: r["n"] for r in per_host} == {f"core-{i}": SLOTS for i in range(HOSTS)}
        assert (
            await db.fetchval("SELECT count(*) FROM tasks WHERE state = 'leased'") == HOSTS * SLOTS
        )
        assert await db.fetchval("SELECT max(open_leases) FROM hosts") == SLOTS
    finally:
        await db.close()
        await registry.close()
        await packager.close()


async def _count(db: asyncpg.Connection, sql: str, want: int, *, at_least: bool = False) -> bool:
    n = await db.fetchval(sql)
    return n >= want if at_least else n == want
