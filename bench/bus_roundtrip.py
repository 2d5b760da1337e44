"""Skyline's bus against raw aio-pika on the same broker: publish+consume+ack throughput.

Both sides publish persistent messages with publisher confirms in batches of concurrent
publishes and consume from a durable quorum queue with manual acks; Skyline's side adds
fedora-messaging encoding, JSON Schema validation on both ends, and the dead-letter
topology. Prints messages/s for each and the ratio (Skyline / raw).

    .venv/bin/python bench/bus_roundtrip.py [--messages 5000] [--amqp-url URL]

Without --amqp-url it starts a private RabbitMQ in a temp dir (services/common/localstack.py).
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
from fedora_messaging import message as fm
from skyline_messages import BuildRequestV1

from services.common.bus import Bus
from services.common.localstack import RabbitMQ

BODY = {
    "srpm_url": "http://127.0.0.1:1/sources/skyline-hello-1.0-1.src.rpm",
    "srpm_sha256": "a" * 64,
    "arches": ["noarch", "x86_64"],
    "owner": "alice",
}
BATCH = 100


async def raw(url: str, count: int) -> float:
    connection = await aio_pika.connect(url)
    channel = await connection.channel(publisher_confirms=True)
    await channel.set_qos(prefetch_count=BATCH * 2)
    queue = await channel.declare_queue(
        f"bench-raw-{uuid.uuid4().hex}", durable=True, arguments={"x-queue-type": "quorum"}
    )
    exchange = channel.default_exchange
    done = asyncio.Event()
    received = 0

    async def on_message(incoming: aio_pika.abc.AbstractIncomingMessage) -> None:
        nonlocal received
        await incoming.ack()
        received += 1
        if received == count:
            done.set()

    await queue.consume(on_message)
    payload = BuildRequestV1(body=BODY)._encoded_body
    start = time.perf_counter()
    for first in range(0, count, BATCH):
        await asyncio.gather(
            *(
                exchange.publish(
                    aio_pika.Message(payload, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                    routing_key=queue.name,
                )
                for _ in range(min(BATCH, count - first))
            )
        )
    await done.wait()
    elapsed = time.perf_counter() - start
    await queue.delete(if_unused=False, if_empty=False)
    await connection.close()
    return count / elapsed


async def skyline(url: str, count: int) -> float:
    bus = Bus(url, name="bench")
    await bus.connect()
    done = asyncio.Event()
    received = 0

    async def on_message(msg: fm.Message) -> None:
        nonlocal received
        received += 1
        if received == count:
            done.set()

    topic = f"bench.{uuid.uuid4().hex}"
    queue = f"bench-skyline-{uuid.uuid4().hex}"
    await bus.subscribe(queue, [topic], on_message, prefetch=BATCH * 2)
    start = time.perf_counter()
    for first in range(0, count, BATCH):
        await asyncio.gather(
            *(
                bus.publish(BuildRequestV1(body=BODY, topic=topic))
                for _ in range(min(BATCH, count - first))
            )
        )
    await done.wait()
    elapsed = time.perf_counter() - start
    await bus.close()
    connection = await aio_pika.connect(url)
    channel = await connection.channel()
    for name in (queue, f"{queue}.dead"):
        await channel.queue_delete(name)
    await connection.close()
    return count / elapsed


async def run(url: str, count: int) -> None:
    raw_rate = await raw(url, count)
    skyline_rate = await skyline(url, count)
    print(f"raw aio-pika      {raw_rate:9.0f} msg/s  (publish+confirm+consume+ack, {count} msgs)")
    print(f"skyline Bus       {skyline_rate:9.0f} msg/s")
    print(f"ratio skyline/raw {skyline_rate / raw_rate:9.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--amqp-url")
    args = parser.parse_args()
    if args.amqp_url:
        asyncio.run(run(args.amqp_url, args.messages))
        return
    state = Path(tempfile.mkdtemp(prefix="skyline-bench-"))
    broker = RabbitMQ(state)
    broker.start()
    try:
        asyncio.run(run(broker.url, args.messages))
    finally:
        broker.stop()
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
