"""Batched handling on a real broker: one transaction per batch, acks after commit."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from skyline_messages import BuildRequestV1

from services.common import retention
from services.common.batch import Batcher, idempotent
from services.common.bus import Bus
from services.common.testing import service_runtime

pytestmark = pytest.mark.integration

BODY = {
    "srpm_url": "http://127.0.0.1:1/skyline-hello-1.0-1.src.rpm",
    "srpm_sha256": "c" * 64,
    "arches": ["noarch"],
    "owner": "alice",
}


async def wait_for(predicate, timeout: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.05)


async def test_a_batch_whose_transaction_fails_is_redelivered_whole(config, broker) -> None:
    async with service_runtime(config, "batchtest") as runtime:
        await runtime.pool.execute("CREATE TABLE handled (message_id text PRIMARY KEY)")
        calls: list[list[str]] = []

        async def handler(msgs, ctx) -> None:
            calls.append([m.id for m in msgs])
            await ctx.conn.executemany("INSERT INTO handled VALUES ($1)", [(m.id,) for m in msgs])
            if len(calls) == 1:
                raise RuntimeError("the database went away mid-batch")

        # A long wait: the ten deliveries are sure to make one batch.
        batcher = Batcher(runtime, handler, size=10, wait=5.0)
        name = f"t{uuid.uuid4().hex[:12]}"  # a consumer service of its own, and a packager
        owner = f"o{uuid.uuid4().hex[:12]}"
        bus = Bus(await broker.service(name))
        packager = Bus(await broker.owner(owner))
        await bus.connect()
        await packager.connect()
        try:
            topic = BuildRequestV1.topic_for(owner)
            await bus.subscribe(f"skyline.{name}", [topic], batcher.submit, prefetch=50)
            msgs = [BuildRequestV1(body={**BODY, "owner": owner}, topic=topic) for _ in range(10)]
            ids = {m.id for m in msgs}
            await asyncio.gather(*(packager.publish(m) for m in msgs))

            async def all_handled() -> bool:
                return await runtime.pool.fetchval("SELECT count(*) FROM handled") == 10

            await wait_for(all_handled)
        finally:
            await bus.close()
            await packager.close()
        assert set(calls[0]) == ids  # the first try had them all, and committed none of them
        retried = [i for call in calls[1:] for i in call]
        assert sorted(retried) == sorted(ids)  # every one came back, once
        assert all(len(call) == 1 for call in calls[1:])  # each alone: no poison spreads
        processed = await runtime.pool.fetchval("SELECT count(*) FROM processed_messages")
        assert processed == 10


async def test_duplicates_are_skipped_within_and_across_batches(config) -> None:
    async with service_runtime(config, "batchtest") as runtime:
        seen: list[str] = []

        async def handler(msgs, ctx) -> None:
            seen.extend(m.id for m in msgs)

        batcher = Batcher(runtime, handler, size=3, wait=0.01)
        a, b = BuildRequestV1(body=BODY), BuildRequestV1(body=BODY)
        await asyncio.gather(batcher.submit(a), batcher.submit(a), batcher.submit(b))
        await batcher.submit(b)  # a redelivery after the commit
        assert sorted(seen) == sorted([a.id, b.id])


async def test_an_idempotent_handler_records_no_ids_and_retention_keeps_the_rest(config) -> None:
    """Ids inside the retention window still make redeliveries skipped after a prune; an
    idempotent handler (it recognises what it applied itself) adds no ids at all."""
    async with service_runtime(config, "batchtest") as runtime:
        seen: list[str] = []

        async def handler(msgs, ctx) -> None:
            seen.extend(m.id for m in msgs)

        @idempotent
        async def by_itself(msgs, ctx) -> None:
            seen.extend(m.id for m in msgs)

        batcher = Batcher(runtime, handler, size=2, wait=0.01)
        old, recent = BuildRequestV1(body=BODY), BuildRequestV1(body=BODY)
        await asyncio.gather(batcher.submit(old), batcher.submit(recent))
        await runtime.pool.execute(
            "UPDATE processed_messages SET processed_at = now() - interval '8 days'"
            " WHERE message_id = $1",
            old.id,
        )
        assert await retention.prune(runtime.pool, config.bus) == (1, 0)
        await batcher.submit(recent)  # redelivered inside the window: skipped
        assert sorted(seen) == sorted([old.id, recent.id])

        plain = Batcher(runtime, by_itself, size=1, wait=0.01)
        third = BuildRequestV1(body=BODY)
        await plain.submit(third)
        await plain.submit(third)  # the handler's own check would skip it
        assert seen[-2:] == [third.id, third.id]
        ids = await runtime.pool.fetch("SELECT message_id FROM processed_messages")
        assert [r["message_id"] for r in ids] == [recent.id]


async def test_a_freed_slot_lets_a_partial_batch_fill_until_it_waited(config) -> None:
    """A slot that frees does not start the one delivery waiting (a transaction for one):
    the batch goes when full or when its oldest delivery waited `wait`."""
    async with service_runtime(config, "batchtest") as runtime:
        calls: list[list[str]] = []
        release = asyncio.Event()

        async def handler(msgs, ctx) -> None:
            calls.append([m.id for m in msgs])
            if len(calls) == 1:
                await release.wait()

        batcher = Batcher(runtime, handler, size=3, wait=3.0, concurrency=1)
        first = [BuildRequestV1(body=BODY) for _ in range(3)]
        running = [asyncio.create_task(batcher.submit(m)) for m in first]

        async def first_batch_started() -> bool:
            return len(calls) == 1

        await wait_for(first_batch_started)
        late, later = BuildRequestV1(body=BODY), BuildRequestV1(body=BODY)
        waiting = asyncio.create_task(batcher.submit(late))
        await asyncio.sleep(0)  # `late` waits for the busy slot
        release.set()
        await asyncio.gather(*running)  # the slot is free; `late` has not waited 3 s yet
        await asyncio.gather(waiting, batcher.submit(later))
        assert calls == [[m.id for m in first], [late.id, later.id]]
