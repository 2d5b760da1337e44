"""Skyline's bus against raw aio-pika on the same broker: publish+consume+ack throughput.

Both sides talk as principals, through the real permissions: a packager publishes build
requests on its own routing key (`skyline.build.request.<owner>`, `user_id` set, which the
broker checks), and a service consumes its queue `skyline.<service>` (durable quorum,
dead-lettered, bound to that key) with manual acks. Both publish persistent messages with
publisher confirms in batches of concurrent publishes. Skyline's side adds fedora-messaging
encoding, JSON Schema validation on both ends and the sender check. Each side has its own
packager and service, so nothing one leaves behind reaches the other. Prints messages/s for
each and the ratio (Skyline / raw).

    .venv/bin/python bench/bus_roundtrip.py [--messages 5000]
        [--amqp-url ADMIN_URL --broker-api-url URL]

Without --amqp-url it starts a private RabbitMQ in a temp dir (services/common/localstack.py).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from pathlib import Path

import aio_pika
from bench_broker import (
    Made,
    add_broker_arguments,
    declare_consumer_queue,
    delete_queues,
    principals_of,
    unique,
)
from fedora_messaging import message as fm
from skyline_messages import BuildRequestV1

from services.common import principals
from services.common.bus import Bus, encode, wire_message
from services.common.localstack import RabbitMQ

BATCH = 100


def request(owner: str) -> BuildRequestV1:
    body = {
        "srpm_url": "http://127.0.0.1:1/sources/skyline-hello-1.0-1.src.rpm",
        "srpm_sha256": "a" * 64,
        "arches": ["noarch", "x86_64"],
        "owner": owner,
    }
    return BuildRequestV1(body=body, topic=BuildRequestV1.topic_for(owner))


async def raw(made: Made, count: int) -> float:
    owner, service = unique("benchraw"), unique("benchraw")
    owner_url, service_url = await made.owner(owner), await made.service(service)
    queue_name = principals.service_queue(service)
    consumer = await aio_pika.connect(service_url)
    channel = await consumer.channel()
    await channel.set_qos(prefetch_count=BATCH * 2)
    wire = encode(request(owner))  # the same bytes on the same routing key, encoded once
    queue = await declare_consumer_queue(channel, queue_name, [wire.routing_key])
    publisher = await aio_pika.connect(owner_url)
    exchange = await (await publisher.channel(publisher_confirms=True)).get_exchange(
        "amq.topic", ensure=False
    )
    done = asyncio.Event()
    received = 0

    async def on_message(incoming: aio_pika.abc.AbstractIncomingMessage) -> None:
        nonlocal received
        await incoming.ack()
        received += 1
        if received == count:
            done.set()

    await queue.consume(on_message)
    start = time.perf_counter()
    for first in range(0, count, BATCH):
        await asyncio.gather(
            *(
                exchange.publish(wire_message(wire, owner), routing_key=wire.routing_key)
                for _ in range(min(BATCH, count - first))
            )
        )
    await done.wait()
    elapsed = time.perf_counter() - start
    await publisher.close()
    await consumer.close()
    await delete_queues(service_url, queue_name, f"{queue_name}.dead")
    return count / elapsed


async def skyline(made: Made, count: int) -> float:
    owner, service = unique("benchbus"), unique("benchbus")
    packager = Bus(await made.owner(owner), name="bench-packager")
    service_url = await made.service(service)
    consumer = Bus(service_url, name="bench-service")
    await packager.connect()
    await consumer.connect()
    done = asyncio.Event()
    received = 0

    async def on_message(msg: fm.Message) -> None:
        nonlocal received
        received += 1
        if received == count:
            done.set()

    queue_name = principals.service_queue(service)
    await consumer.subscribe(
        queue_name, [BuildRequestV1.topic_for(owner)], on_message, prefetch=BATCH * 2
    )
    start = time.perf_counter()
    for first in range(0, count, BATCH):
        await asyncio.gather(
            *(packager.publish(request(owner)) for _ in range(min(BATCH, count - first)))
        )
    await done.wait()
    elapsed = time.perf_counter() - start
    await packager.close()
    await consumer.close()
    connection = await aio_pika.connect(service_url)
    channel = await connection.channel()
    dead = await channel.declare_queue(f"{queue_name}.dead", passive=True)
    refused = dead.declaration_result.message_count or 0
    await connection.close()
    await delete_queues(service_url, queue_name, f"{queue_name}.dead")
    assert refused == 0, f"{refused} messages dead-lettered: the sender check refused them"
    return count / elapsed


async def run(admin_url: str, api_url: str, count: int) -> None:
    async with principals_of(admin_url, api_url) as made:
        raw_rate = await raw(made, count)
        skyline_rate = await skyline(made, count)
    print(
        f"raw aio-pika      {raw_rate:9.0f} msg/s  (publish+confirm+consume+ack, batch {BATCH},"
        f" {count} msgs, packager -> service)"
    )
    print(f"skyline Bus       {skyline_rate:9.0f} msg/s")
    print(f"ratio skyline/raw {skyline_rate / raw_rate:9.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5000)
    add_broker_arguments(parser)
    args = parser.parse_args()
    if args.amqp_url:
        if not args.broker_api_url:
            parser.error("--amqp-url needs --broker-api-url: principals are made through it")
        asyncio.run(run(args.amqp_url, args.broker_api_url, args.messages))
        return
    state = Path(tempfile.mkdtemp(prefix="skyline-bench-"))
    broker = RabbitMQ(state)
    broker.start()
    try:
        asyncio.run(run(broker.url, broker.management_url, args.messages))
    finally:
        broker.stop()
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
