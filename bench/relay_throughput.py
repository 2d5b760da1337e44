"""The outbox relay against raw aio-pika publish-with-confirms at batch 100, same broker.

Raw: batches of 100 concurrent persistent publishes, each batch's confirms awaited before the
next. Skyline: the same messages written to an outbox table first (not timed), then
`outbox.Relay.flush()` claims, publishes (confirms pipelined) and marks them sent, with
`relay_concurrency` 1 (exactly raw's batching plus the database, the default) and 4.
Prints messages/s for each and the ratio (Skyline / raw).

    .venv/bin/python bench/relay_throughput.py [--messages N] [--amqp-url U --database-url U]

Without URLs it starts a private RabbitMQ and PostgreSQL in a temp dir
(services/common/localstack.py).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import aio_pika
from skyline_messages import BuildRequestV1

from services.common import db, outbox
from services.common.bus import Bus, encode, wire_message
from services.common.config import BusConfig
from services.common.localstack import PostgreSQL, RabbitMQ

BODY = {
    "srpm_url": "http://127.0.0.1:1/sources/skyline-hello-1.0-1.src.rpm",
    "srpm_sha256": "a" * 64,
    "arches": ["noarch", "x86_64"],
    "owner": "alice",
}
BATCH = 100


async def sink(url: str, topic: str) -> tuple[aio_pika.abc.AbstractConnection, str]:
    """A durable quorum queue bound to `topic`, so every publish is routed and persisted."""
    connection = await aio_pika.connect(url)
    channel = await connection.channel()
    name = f"bench-relay-{uuid.uuid4().hex}"
    queue = await channel.declare_queue(name, durable=True, arguments={"x-queue-type": "quorum"})
    await queue.bind("amq.topic", routing_key=topic)
    return connection, name


async def raw(url: str, topic: str, count: int) -> float:
    connection = await aio_pika.connect(url)
    channel = await connection.channel(publisher_confirms=True)
    exchange = await channel.get_exchange("amq.topic", ensure=False)
    wires = [encode(BuildRequestV1(body=BODY, topic=topic)) for _ in range(count)]
    start = time.perf_counter()
    for first in range(0, count, BATCH):
        await asyncio.gather(
            *(
                exchange.publish(wire_message(w), routing_key=w.routing_key)
                for w in wires[first : first + BATCH]
            )
        )
    elapsed = time.perf_counter() - start
    await connection.close()
    return count / elapsed


async def skyline(url: str, database_url: str, topic: str, count: int, concurrency: int) -> float:
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    pool = await db.create_pool(database_url, schema)
    await db.migrate(pool, schema, None)
    for first in range(0, count, 1000):
        msgs = [BuildRequestV1(body=BODY, topic=topic) for _ in range(min(1000, count - first))]
        async with pool.acquire() as conn, conn.transaction():
            await outbox.add_many(conn, msgs)
    bus = Bus(url, name="bench-relay")
    await bus.connect()
    relay = outbox.Relay(pool, bus, batch=BATCH, concurrency=concurrency)
    start = time.perf_counter()
    sent = await relay.flush()
    elapsed = time.perf_counter() - start
    assert sent == count, f"relay sent {sent} of {count}"
    await bus.close()
    await pool.execute(f"DROP SCHEMA {schema} CASCADE")
    await pool.close()
    return count / elapsed


async def run(url: str, database_url: str, count: int) -> None:
    topic = f"bench.relay.{uuid.uuid4().hex}"
    connection, queue = await sink(url, topic)
    default = BusConfig().relay_concurrency
    raw_rate = await raw(url, topic, count)
    one = await skyline(url, database_url, topic, count, 1)
    many = await skyline(url, database_url, topic, count, 4)
    channel = await connection.channel()
    await channel.queue_delete(queue)
    await connection.close()
    print(f"raw aio-pika publish+confirm, batch {BATCH}   {raw_rate:9.0f} msg/s  ({count} msgs)")
    for concurrency, rate in ((1, one), (4, many)):
        label = f"skyline relay, concurrency {concurrency}" + (
            " (default)" if concurrency == default else ""
        )
        print(f"{label:40s} {rate:9.0f} msg/s  ratio {rate / raw_rate:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--amqp-url")
    parser.add_argument("--database-url")
    args = parser.parse_args()
    if args.amqp_url and args.database_url:
        asyncio.run(run(args.amqp_url, args.database_url, args.messages))
        return
    state = Path(tempfile.mkdtemp(prefix="skyline-bench-"))
    broker, postgres = RabbitMQ(state), PostgreSQL(state)
    broker.start()
    try:
        postgres.start()
        try:
            asyncio.run(run(broker.url, postgres.url, args.messages))
        finally:
            postgres.stop()
    finally:
        broker.stop()
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
