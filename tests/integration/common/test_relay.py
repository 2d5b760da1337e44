"""The outbox relay against a real broker: crashes, several relays, order per aggregate."""

from __future__ import annotations

import asyncio
import collections
import signal
import sys
import textwrap
import uuid

import aio_pika
import pytest
from skyline_messages import HostStatusV1

from services.common import db, outbox
from services.common.bus import Bus

pytestmark = pytest.mark.integration

SCHEMA = "relaytest"


def status(host: str, n: int) -> HostStatusV1:
    return HostStatusV1(
        body={
            "host": host,
            "owner": "alice",
            "state": "online",
            "trust": "untrusted",
            "arches": ["noarch"],
            "releases": ["f40"],
            "free_slots": n % 1000,
            "seen_at": "2026-01-01T00:00:00+00:00",
        },
    )


class Consumer:
    """A plain aio-pika consumer on `topic`: every delivery's message id, in arrival order."""

    def __init__(self, amqp_url: str, topic: str) -> None:
        self.amqp_url, self.topic = amqp_url, topic
        self.ids: list[str] = []
        self.hosts: list[tuple[str, str]] = []

    async def __aenter__(self) -> Consumer:
        self.connection = await aio_pika.connect(self.amqp_url)
        channel = await self.connection.channel()
        await channel.set_qos(prefetch_count=500)
        # As the read-only monitor: its queues are named "skyline-monitor:...".
        queue = await channel.declare_queue(
            f"skyline-monitor:test-{uuid.uuid4().hex}", exclusive=True
        )
        await queue.bind("amq.topic", routing_key=self.topic)

        async def on_message(incoming: aio_pika.abc.AbstractIncomingMessage) -> None:
            self.ids.append(incoming.message_id or "")
            await incoming.ack()

        await queue.consume(on_message)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.connection.close()

    async def wait_unique(self, count: int, timeout: float = 60) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while len(set(self.ids)) < count:
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{len(set(self.ids))} of {count} message ids arrived")
            await asyncio.sleep(0.05)


@pytest.fixture
async def pool(database_url):
    pool = await db.create_pool(database_url, SCHEMA)
    await db.migrate(pool, SCHEMA, None)
    yield pool
    await pool.close()


async def write(pool, msgs) -> None:
    for first in range(0, len(msgs), 500):
        async with pool.acquire() as conn, conn.transaction():
            await outbox.add_many(conn, msgs[first : first + 500])


async def unsent(pool) -> int:
    return await pool.fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NULL")


# A relay process that dies (SIGKILL) after its third round published half its batch and got
# the confirms: those messages are out, their rows are not marked sent.
DYING_RELAY = textwrap.dedent(
    """
    import asyncio, os, signal, sys
    from services.common import db, outbox
    from services.common.bus import Bus

    class DyingBus(Bus):
        rounds = 0

        async def publish_encoded(self, wires):
            DyingBus.rounds += 1
            if DyingBus.rounds == 3:
                await super().publish_encoded(wires[: len(wires) // 2])
                os.kill(os.getpid(), signal.SIGKILL)
            return await super().publish_encoded(wires)

    async def main(database_url, amqp_url):
        pool = await db.create_pool(database_url, "relaytest")
        bus = DyingBus(amqp_url)
        await bus.connect()
        while True:
            await outbox.Relay(pool, bus, batch=100, concurrency=4).flush()

    asyncio.run(main(*sys.argv[1:]))
    """
)


async def test_relay_killed_mid_batch_neither_loses_nor_double_publishes(
    broker, database_url, pool
) -> None:
    msgs = [status(f"h{i % 50}", i) for i in range(3000)]
    await write(pool, msgs)
    registry = await broker.service("registry")  # the relay publishes as the outbox's owner
    async with Consumer(await broker.monitor(), HostStatusV1.topic) as consumer:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", DYING_RELAY, database_url, registry
        )
        assert await asyncio.wait_for(proc.wait(), 60) == -signal.SIGKILL
        assert await unsent(pool) > 0  # it died before the end
        bus = Bus(registry)
        await bus.connect()
        try:
            await outbox.Relay(pool, bus).flush()
        finally:
            await bus.close()
        await consumer.wait_unique(len(msgs))
        assert await unsent(pool) == 0
        counts = collections.Counter(consumer.ids)
        assert set(counts) == {m.id for m in msgs}  # nothing lost, nothing foreign
        resent = sum(n - 1 for n in counts.values())
        # The half batch it published but never marked went out again, with the same ids (a
        # consumer's processed_messages drops the copies); no more than it had in flight.
        assert 1 <= resent <= 4 * 100


async def test_two_relays_on_one_outbox_publish_each_row_once_in_order_per_host(
    broker, pool
) -> None:
    msgs = [status(f"h{i % 7}", i) for i in range(2000)]
    registry = await broker.service("registry")
    buses = [Bus(registry, name=f"relay-{n}") for n in range(2)]
    async with Consumer(await broker.monitor(), HostStatusV1.topic) as consumer:
        for bus in buses:
            await bus.connect()
        try:
            relays = [outbox.Relay(pool, bus, batch=50, concurrency=3) for bus in buses]

            async def writer() -> None:  # rows keep arriving while both relays run
                for first in range(0, len(msgs), 100):
                    await write(pool, msgs[first : first + 100])
                    await asyncio.sleep(0)

            await asyncio.gather(writer(), *(r.flush() for r in relays))
            await asyncio.gather(*(r.flush() for r in relays))
            await consumer.wait_unique(len(msgs))
        finally:
            for bus in buses:
                await bus.close()
    assert sorted(consumer.ids) == sorted(m.id for m in msgs)  # each exactly once
    host_of = {m.id: m.body["host"] for m in msgs}
    for host in {m.body["host"] for m in msgs}:
        written = [m.id for m in msgs if m.body["host"] == host]
        assert [i for i in consumer.ids if host_of[i] == host] == written
