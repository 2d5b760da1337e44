"""The outbox relay against raw aio-pika publish-with-confirms at batch 100, same broker.

What the relay carries most is the registry's host statuses, so both sides publish
HostStatusV1 on `skyline.host.status` as its owner, `skyline-registry` (`user_id` set, which
the broker checks), through the real permissions. Raw: batches of 100 concurrent persistent
publishes, each batch's confirms awaited before the next. Skyline: the same messages written
to an outbox table first (not timed), then `outbox.Relay.flush()` claims, publishes (confirms
pipelined) and marks them sent, with `relay_concurrency` 1 (exactly raw's batching plus the
database, the default) and 4. The sink is the monitor's durable quorum queue
(`skyline-monitor:...`), so every publish is routed and persisted; after the timed runs the
monitor drains it through the consumers' decoding and sender check (`bus.decode`), which must
accept every message. Prints messages/s for each and the ratio (Skyline / raw).

    .venv/bin/python bench/relay_throughput.py [--messages N]
        [--amqp-url ADMIN_URL --broker-api-url URL --database-url URL]

Without URLs it starts a private RabbitMQ and PostgreSQL in a temp dir
(services/common/localstack.py).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import time
import uuid

import aio_pika
from bench_broker import Made, add_broker_arguments, principals_of, private_stack
from skyline_messages import HostStatusV1

from services.common import db, outbox, principals
from services.common.bus import Bus, Undeliverable, decode, encode, wire_message
from services.common.config import BusConfig

BATCH = 100
HOSTS = 1000  # statuses are about this many hosts (the outbox orders them per host)
PUBLISHER = principals.service_user("registry")


def statuses(count: int) -> list[HostStatusV1]:
    seen = datetime.datetime.now(datetime.UTC).isoformat()
    return [
        HostStatusV1(
            body={
                "host": f"h{n % HOSTS}",
                "owner": "alice",
                "state": "online",
                "trust": "untrusted",
                "arches": ["noarch", "x86_64"],
                "releases": ["f40"],
                "free_slots": n % 4,
                "seen_at": seen,
            }
        )
        for n in range(count)
    ]


async def sink(url: str) -> tuple[aio_pika.abc.AbstractConnection, str]:
    """The monitor's durable quorum queue bound to the statuses."""
    connection = await aio_pika.connect(url)
    channel = await connection.channel()
    name = f"{principals.MONITOR_USER}:bench-relay-{uuid.uuid4().hex}"
    queue = await channel.declare_queue(name, durable=True, arguments={"x-queue-type": "quorum"})
    await queue.bind("amq.topic", routing_key=HostStatusV1.topic)
    return connection, name


async def check_sink(connection: aio_pika.abc.AbstractConnection, name: str, count: int) -> int:
    """Drain the sink as a consumer would; returns how many the sender check refused."""
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=1000)
    queue = await channel.declare_queue(name, passive=True)
    done = asyncio.Event()
    seen = refused = 0

    async def on_message(incoming: aio_pika.abc.AbstractIncomingMessage) -> None:
        nonlocal seen, refused
        try:
            decode(incoming)
        except Undeliverable:
            refused += 1
        await incoming.ack()
        seen += 1
        if seen == count:
            done.set()

    tag = await queue.consume(on_message)
    await asyncio.wait_for(done.wait(), 300)
    await queue.cancel(tag)
    await queue.delete(if_unused=False, if_empty=False)
    return refused


async def raw(url: str, count: int) -> float:
    connection = await aio_pika.connect(url)
    channel = await connection.channel(publisher_confirms=True)
    exchange = await channel.get_exchange("amq.topic", ensure=False)
    wires = [encode(m) for m in statuses(count)]
    start = time.perf_counter()
    for first in range(0, count, BATCH):
        await asyncio.gather(
            *(
                exchange.publish(wire_message(w, PUBLISHER), routing_key=w.routing_key)
                for w in wires[first : first + BATCH]
            )
        )
    elapsed = time.perf_counter() - start
    await connection.close()
    return count / elapsed


async def skyline(url: str, database_url: str, count: int, concurrency: int) -> float:
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    pool = await db.create_pool(database_url, schema)
    await db.migrate(pool, schema, None)
    msgs = statuses(count)
    for first in range(0, count, 1000):
        async with pool.acquire() as conn, conn.transaction():
            await outbox.add_many(conn, msgs[first : first + 1000])
    bus = Bus(url, name="bench-relay")  # the registry's user: the relay publishes as it
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


async def measure(made: Made, database_url: str, count: int) -> None:
    registry = await made.service("registry")
    connection, queue = await sink(await made.monitor())
    default = BusConfig().relay_concurrency
    raw_rate = await raw(registry, count)
    one = await skyline(registry, database_url, count, 1)
    many = await skyline(registry, database_url, count, 4)
    refused = await check_sink(connection, queue, 3 * count)
    await connection.close()
    assert refused == 0, f"the sender check refused {refused} of {3 * count} messages"
    print(
        f"raw aio-pika publish+confirm, batch {BATCH}   {raw_rate:9.0f} msg/s"
        f"  ({count} msgs as {PUBLISHER})"
    )
    for concurrency, rate in ((1, one), (4, many)):
        label = f"skyline relay, concurrency {concurrency}" + (
            " (default)" if concurrency == default else ""
        )
        print(f"{label:40s} {rate:9.0f} msg/s  ratio {rate / raw_rate:.2f}")
    print(f"the monitor's sink got all {3 * count}; the sender check accepted every one")


async def run(admin_url: str, api_url: str, database_url: str, count: int) -> None:
    async with principals_of(admin_url, api_url) as made:
        await measure(made, database_url, count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20000)
    add_broker_arguments(parser)
    parser.add_argument("--database-url")
    args = parser.parse_args()
    if args.amqp_url and args.database_url:
        if not args.broker_api_url:
            parser.error("--amqp-url needs --broker-api-url: principals are made through it")
        asyncio.run(run(args.amqp_url, args.broker_api_url, args.database_url, args.messages))
        return
    with private_stack() as (broker, postgres):
        asyncio.run(run(broker.url, broker.management_url, postgres.url, args.messages))


if __name__ == "__main__":
    main()
