"""The bus's collecting consumer on a real broker: deliveries go straight into a Batcher (no
waiting task per delivery) and are acked after their batch committed."""

from __future__ import annotations

import asyncio
import uuid

import aio_pika
import pytest
from skyline_messages import BuildRequestV1

from services.common.batch import Batcher
from services.common.bus import Bus
from services.common.errors import Reject, Retry
from services.common.testing import service_runtime, until

pytestmark = pytest.mark.integration

BODY = {
    "srpm_url": "http://127.0.0.1:1/skyline-hello-1.0-1.src.rpm",
    "srpm_sha256": "c" * 64,
    "arches": ["noarch"],
    "owner": "alice",
}

POISON_URL = "http://127.0.0.1:1/poison-1.0-1.src.rpm"  # the test handler refuses it


async def queue_counts(amqp_url: str, queue: str) -> tuple[int, int]:
    """(messages in `queue`, in its dead-letter queue), ready or unacked."""
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        counts = []
        for name in (queue, f"{queue}.dead"):
            declared = await channel.declare_queue(name, passive=True)
            counts.append(int(declared.declaration_result.message_count or 0))
        return counts[0], counts[1]
    finally:
        await connection.close()


async def dead_ids(amqp_url: str, queue: str) -> list[str]:
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        dead = await channel.get_queue(f"{queue}.dead", ensure=False)
        found = []
        while (m := await dead.get(no_ack=True, fail=False)) is not None:
            found.append(m.message_id or "")
        return found
    finally:
        await connection.close()


async def requests(broker, count: int, poisoned: int | None = None):
    """A consumer service of its own (its URL and queue), a packager, and `count` requests
    from it (the `poisoned`-th with a poisonous URL)."""
    name = f"t{uuid.uuid4().hex[:12]}"
    owner = f"o{uuid.uuid4().hex[:12]}"
    url = await broker.service(name)
    queue = f"skyline.{name}"
    topic = BuildRequestV1.topic_for(owner)
    msgs = [
        BuildRequestV1(
            body={
                **BODY,
                "owner": owner,
                **({"srpm_url": POISON_URL} if i == poisoned else {}),
            },
            topic=topic,
        )
        for i in range(count)
    ]
    return url, queue, topic, owner, msgs


async def test_a_poison_message_in_a_collected_batch_is_dead_lettered_alone(config, broker) -> None:
    async with service_runtime(config, "batchtest") as runtime:
        await runtime.pool.execute("CREATE TABLE handled (message_id text PRIMARY KEY)")
        calls: list[list[str]] = []

        async def handler(msgs, ctx) -> None:
            calls.append([m.id for m in msgs])
            await ctx.conn.executemany("INSERT INTO handled VALUES ($1)", [(m.id,) for m in msgs])
            if any("poison" in m.body["srpm_url"] for m in msgs):
                raise Reject("poisonous request")

        url, queue, topic, owner, msgs = await requests(broker, 10, poisoned=3)
        batcher = Batcher(runtime, handler, size=10, wait=5.0)  # the ten make one batch
        bus, packager = Bus(url), Bus(await broker.owner(owner))
        await bus.connect()
        await packager.connect()
        try:
            await bus.subscribe(
                queue,
                [topic],
                batcher.submit,
                prefetch=50,
                collect={BuildRequestV1: batcher.add},
            )
            await asyncio.gather(*(packager.publish(m) for m in msgs))

            async def settled() -> bool:
                handled = await runtime.pool.fetchval("SELECT count(*) FROM handled")
                return handled == 9 and await queue_counts(url, queue) == (0, 1)

            await until(settled, "the batch settled", timeout=30)
        finally:
            await bus.close()
            await packager.close()
        poison = msgs[3].id
        assert set(calls[0]) == {m.id for m in msgs}  # first all together, nothing committed
        assert all(len(call) == 1 for call in calls[1:])  # then each alone
        assert sorted(i for call in calls[1:] for i in call) == sorted(m.id for m in msgs)
        assert await dead_ids(url, queue) == [poison]  # only the poison, once
        rows = await runtime.pool.fetch("SELECT message_id FROM handled")
        assert {r["message_id"] for r in rows} == {m.id for m in msgs} - {poison}


async def test_a_collected_batch_that_crashes_before_commit_is_redelivered(config, broker) -> None:
    async with service_runtime(config, "batchtest") as runtime:
        await runtime.pool.execute("CREATE TABLE handled (message_id text PRIMARY KEY)")
        calls: list[list[str]] = []

        async def handler(msgs, ctx) -> None:
            calls.append([m.id for m in msgs])
            await ctx.conn.executemany("INSERT INTO handled VALUES ($1)", [(m.id,) for m in msgs])
            if len(calls) == 1:
                raise RuntimeError("crashed before the commit")

        url, queue, topic, owner, msgs = await requests(broker, 5)
        batcher = Batcher(runtime, handler, size=5, wait=5.0)
        bus, packager = Bus(url), Bus(await broker.owner(owner))
        await bus.connect()
        await packager.connect()
        try:
            await bus.subscribe(
                queue, [topic], batcher.submit, prefetch=50, collect={BuildRequestV1: batcher.add}
            )
            await asyncio.gather(*(packager.publish(m) for m in msgs))

            async def settled() -> bool:
                handled = await runtime.pool.fetchval("SELECT count(*) FROM handled")
                return handled == 5 and await queue_counts(url, queue) == (0, 0)

            await until(settled, "the batch settled", timeout=30)
        finally:
            await bus.close()
            await packager.close()
        assert set(calls[0]) == {m.id for m in msgs}
        assert sorted(i for call in calls[1:] for i in call) == sorted(m.id for m in msgs)
        assert await runtime.pool.fetchval("SELECT count(*) FROM processed_messages") == 5


async def test_a_collected_batch_waiting_for_a_peer_is_held_not_nacked(config, broker) -> None:
    """Retry (a peer is down) holds each delivery and tries it again through the awaitable
    path: committed without a redelivery, nothing dead-lettered."""
    async with service_runtime(config, "batchtest") as runtime:
        calls: list[list[str]] = []

        async def handler(msgs, ctx) -> None:
            calls.append([m.id for m in msgs])
            if len(calls) == 1:
                raise Retry("the peer is down")

        url, queue, topic, owner, msgs = await requests(broker, 3)
        batcher = Batcher(runtime, handler, size=3, wait=5.0)
        bus, packager = Bus(url), Bus(await broker.owner(owner))
        await bus.connect()
        await packager.connect()
        try:
            await bus.subscribe(
                queue,
                [topic],
                batcher.submit,
                prefetch=50,
                delivery_limit=1,  # a nack would count: a second one would dead-letter
                collect={BuildRequestV1: batcher.add},
            )
            await asyncio.gather(*(packager.publish(m) for m in msgs))

            async def settled() -> bool:
                committed = await runtime.pool.fetchval("SELECT count(*) FROM processed_messages")
                return committed == 3 and await queue_counts(url, queue) == (0, 0)

            await until(settled, "the batch settled", timeout=30)
        finally:
            await bus.close()
            await packager.close()
        assert sorted(i for call in calls[1:] for i in call) == sorted(m.id for m in msgs)
        assert await dead_ids(url, queue) == []
