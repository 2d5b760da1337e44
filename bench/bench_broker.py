"""Broker principals for the benchmarks, made as tests/conftest.py's `Broker` makes them.

The benchmarks talk to the broker as principals (a packager, a service, the monitor), through
the real permissions and the consumers' sender check; the administrator only creates their
users through the management API. Also a raw queue of the same shape as `Bus.subscribe`'s
(quorum, dead-lettered), so the raw aio-pika baselines pay what Skyline's consumers pay. And
the private RabbitMQ and PostgreSQL a benchmark starts for its run (private_stack).
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path

import aio_pika

from services.common import principals
from services.common.broker_admin import Principals, queue_arguments
from services.common.localstack import PostgreSQL, RabbitMQ

DELIVERY_LIMIT = 5  # Bus.subscribe's default


def unique(prefix: str) -> str:
    """A fresh principal name (lower case: valid for a service, a host or an owner)."""
    return f"{prefix}{uuid.uuid4().hex[:8]}"


class Made(Principals):
    """Principals the benchmark makes, deleted again on close."""

    def __init__(self, admin_amqp_url: str, api_url: str) -> None:
        base = Principals.from_admin_url(admin_amqp_url, api_url)
        super().__init__(base.admin, base.amqp_url)
        self.made: list[str] = []

    async def user(self, name: str, perms: principals.Permissions, tags: str = "") -> str:
        url = await super().user(name, perms, tags)
        self.made.append(name)
        return url

    async def close(self) -> None:
        for name in self.made:
            await self.admin.delete_user(name)
        self.made.clear()


@contextlib.asynccontextmanager
async def principals_of(admin_amqp_url: str, api_url: str) -> AsyncIterator[Made]:
    made = Made(admin_amqp_url, api_url)
    try:
        yield made
    finally:
        await made.close()


async def declare_consumer_queue(
    channel: aio_pika.abc.AbstractChannel, name: str, routing_keys: Iterable[str]
) -> aio_pika.abc.AbstractQueue:
    """What `Bus.subscribe` declares: the queue, its dead-letter queue, and the bindings."""
    dlx = await channel.declare_exchange(
        principals.DEAD_LETTER_EXCHANGE, aio_pika.ExchangeType.DIRECT, durable=True
    )
    dead = await channel.declare_queue(
        f"{name}.dead", durable=True, arguments={"x-queue-type": "quorum"}
    )
    await dead.bind(dlx, routing_key=name)
    queue = await channel.declare_queue(
        name, durable=True, arguments=queue_arguments(name, DELIVERY_LIMIT)
    )
    exchange = await channel.get_exchange("amq.topic", ensure=False)
    for key in routing_keys:
        await queue.bind(exchange, routing_key=key)
    return queue


async def delete_queues(url: str, *names: str) -> None:
    """Delete queues as the principal at `url` (a service may delete its own)."""
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        for name in names:
            await channel.queue_delete(name)
    finally:
        await connection.close()


def add_broker_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--amqp-url", help="an administrator's AMQP URL (sets users up only)")
    parser.add_argument("--broker-api-url", help="its management API, e.g. http://host:15672")


@contextlib.contextmanager
def private_stack(state: Path | None = None) -> Iterator[tuple[RabbitMQ, PostgreSQL]]:
    """A private RabbitMQ and PostgreSQL on loopback for one benchmark run, in `state` (a new
    temp dir, removed afterwards, when none is given); each stopped however the run ends."""
    own = state is None
    state = Path(tempfile.mkdtemp(prefix="skyline-bench-")) if state is None else state
    broker, postgres = RabbitMQ(state), PostgreSQL(state)
    broker.start()
    try:
        postgres.start()
        try:
            yield broker, postgres
        finally:
            postgres.stop()
    finally:
        broker.stop()
        if own:
            shutil.rmtree(state, ignore_errors=True)
