"""The registry's batched heartbeat handling against raw aio-pika consume+ack, same broker.

Hosts are enrolled straight into the registry's tables (default 100,000, online, their last
status already published), then signed heartbeats are published by a separate process, the way
hosts would send them: each on its host's routing key `skyline.host.heartbeat.<host>`, with
`user_id` `host-<host>`, signed by that host's key, so the registry's sender check and
signature check see exactly what real hosts send. One broker user per host (100,000 users, each
with its own connection) is more than this machine can hold beside the registry, so the
publisher is one load-generator user standing for all those host connections: it has RabbitMQ's
`impersonator` tag (which lets it set any `user_id`), may write only heartbeat routing keys on
amq.topic, and reads nothing. The registry consumes as `skyline-registry`, through its real
permissions; the administrator only creates the users, through the management API.
Three figures, measured in the same run:

1. raw aio-pika: drain a queue of the registry's shape (a service's quorum queue, dead-lettered,
   bound to every heartbeat key) pre-filled with N heartbeats, consume + ack, same prefetch;
2. skyline drain: the real registry service (`SERVICE.run`: batched consumer, signature and
   replay checks, one transaction per batch, outbox relay) drains N pre-filled heartbeats;
3. skyline sustained: heartbeats offered at --rate (default 3,334/s: 100,000 hosts at one per
   30 s) for --seconds; prints the rate handled and the backlog at each sample, so a growing
   backlog shows.

A share of heartbeats (--changed, default 5%) change the host's free slots, so statuses are
published through the outbox and the relay as in production.

    .venv/bin/python bench/heartbeat_consume.py [--seconds 10] [--hosts 100000] [--rate 3334]

Starts a private RabbitMQ and PostgreSQL in a temp dir (services/common/localstack.py).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import dataclasses
import datetime
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aio_pika
import asyncpg
from bench_broker import Made, declare_consumer_queue, delete_queues, principals_of, unique
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)
from skyline_messages import HostHeartbeatV1

from services.common import db, principals
from services.common.bus import encode, wire_message
from services.common.config import load_config
from services.common.localstack import PostgreSQL, RabbitMQ, free_port
from services.common.signing import public_key_b64, sign_body
from services.registry.__main__ import SERVICE

# The load generator: stands for every host's connection (see the docstring).
LOAD_GENERATOR = "bench-hosts"
LOAD_GENERATOR_PERMISSIONS = principals.Permissions(
    configure=principals.NOTHING,
    write=r"^amq\.topic$",
    read=principals.NOTHING,
    topic_write=r"^skyline\.host\.heartbeat\..*$",
    topic_read=principals.NOTHING,
)


# The publisher (a separate process, like the hosts): signs and encodes every heartbeat first,
# then publishes them as fast as it can (--fill) or at --rate, with confirms pipelined.


async def publish(args: argparse.Namespace, pem: bytes) -> None:
    key = load_pem_private_key(pem, password=None)
    base = datetime.datetime.fromisoformat(args.base)
    wires = []
    for seq in range(args.count):
        host = seq % args.hosts
        free = 0 if (seq * 7919) % 100 < args.changed else 1  # a few change their slots
        signed_at = (base + datetime.timedelta(microseconds=seq)).isoformat()
        name = f"h{host}"
        body = {"host": name, "free_slots": free, "running": 0, "signed_at": signed_at}
        msg = HostHeartbeatV1(body=sign_body(body, key), topic=HostHeartbeatV1.topic_for(name))
        wires.append((encode(msg), principals.host_user(name)))
    connection = await aio_pika.connect(args.amqp_url)
    channel = await connection.channel(publisher_confirms=True)
    exchange = await channel.get_exchange("amq.topic", ensure=False)
    print("ready", flush=True)
    sys.stdin.readline()  # go
    step = 0.05
    per_step = max(1, int(args.rate * step)) if args.rate else 500
    start = time.perf_counter()
    for n, first in enumerate(range(0, len(wires), per_step)):
        chunk = wires[first : first + per_step]
        await asyncio.gather(
            *(exchange.publish(wire_message(w, u), routing_key=w.routing_key) for w, u in chunk)
        )
        if args.rate:
            await asyncio.sleep(max(0.0, start + (n + 1) * step - time.perf_counter()))
    print(f"published {len(wires)} in {time.perf_counter() - start:.1f} s", flush=True)
    await connection.close()


class Publisher:
    def __init__(self, amqp_url: str, key: Path, hosts: int, changed: int) -> None:
        self.amqp_url, self.key, self.hosts, self.changed = amqp_url, key, hosts, changed
        self.phase = 0

    async def start(self, count: int, rate: float = 0) -> asyncio.Future:
        """Prepare `count` heartbeats in a subprocess; returns a function that sends them."""
        # Each phase signs later than the previous one, so no heartbeat is a replay.
        self.phase += 1
        base = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=60 - self.phase)
        proc = await asyncio.create_subprocess_exec(
            *(sys.executable, __file__, "--publisher", "--amqp-url", self.amqp_url),
            *("--key", str(self.key), "--hosts", str(self.hosts), "--count", str(count)),
            *("--rate", str(rate), "--base", base.isoformat()),
            *("--changed", str(self.changed)),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert proc.stdout is not None and proc.stdin is not None
        line = await proc.stdout.readline()
        assert line.strip() == b"ready", line

        async def go() -> str:
            proc.stdin.write(b"go\n")
            await proc.stdin.drain()
            report = (await proc.stdout.read()).decode().strip()
            await proc.wait()
            return report

        return go


async def enrol(database_url: str, hosts: int, public_key: str) -> None:
    """Enrol hosts straight into the registry's schema, online, their status published."""
    pool = await db.create_pool(database_url, "registry")
    await db.migrate(pool, "registry", SERVICE.migrations)
    names = [f"h{i}" for i in range(hosts)]
    published = [
        json.dumps(
            {
                "host": name,
                "owner": "bench",
                "state": "online",
                "trust": "untrusted",
                "arches": ["noarch", "x86_64"],
                "releases": ["f40"],
                "free_slots": 1,
            }
        )
        for name in names
    ]
    await pool.execute(
        "INSERT INTO hosts (host, owner, public_key, arches, releases, state, free_slots,"
        " last_heartbeat, status_published, status_published_at)"
        " SELECT h, 'bench', $2, '{noarch,x86_64}', '{f40}', 'online', 1, now(), p::jsonb, now()"
        " FROM unnest($1::text[], $3::text[]) AS v(h, p)",
        names,
        public_key,
        published,
    )
    await pool.execute("VACUUM ANALYZE hosts")
    await pool.close()


async def queue_depth(channel: aio_pika.abc.AbstractChannel, name: str) -> int:
    queue = await channel.declare_queue(name, passive=True)
    return queue.declaration_result.message_count or 0


async def raw_drain(made: Made, publisher: Publisher, count: int, prefetch: int) -> float:
    """As a service of its own, before the registry's queue exists (so it alone gets them)."""
    service = unique("benchraw")
    url = await made.service(service)
    connection = await aio_pika.connect(url)
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=prefetch)
    name = principals.service_queue(service)
    queue = await declare_consumer_queue(channel, name, [HostHeartbeatV1.binding])
    go = await publisher.start(count)
    await go()
    done = asyncio.Event()
    received = 0

    async def on_message(incoming: aio_pika.abc.AbstractIncomingMessage) -> None:
        nonlocal received
        await incoming.ack()
        received += 1
        if received == count:
            done.set()

    start = time.perf_counter()
    await queue.consume(on_message)
    await done.wait()
    elapsed = time.perf_counter() - start
    await connection.close()
    await delete_queues(url, name, f"{name}.dead")
    return count / elapsed


class Registry:
    """The real registry service in this process."""

    def __init__(self, config) -> None:
        self.config = config
        self.stop = asyncio.Event()
        self.task: asyncio.Task | None = None

    async def start(self, connection: aio_pika.abc.AbstractConnection) -> None:
        """Start the service; returns once its queue has a consumer."""
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(SERVICE.run(self.config, self.stop))

        async def consuming() -> bool:
            async with connection.channel() as channel:  # a missing queue closes it
                try:
                    queue = await channel.declare_queue(SERVICE.queue, passive=True)
                except aio_pika.exceptions.ChannelNotFoundEntity:
                    return False
                return bool(queue.declaration_result.consumer_count)

        await poll(consuming, 0.02)

    async def halt(self) -> None:
        self.stop.set()
        assert self.task is not None
        await self.task


async def poll(predicate, interval: float, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("the bench stalled")
        await asyncio.sleep(interval)


async def processed(pool) -> int:
    return await pool.fetchval("SELECT count(*) FROM registry.processed_messages")


async def run(
    args: argparse.Namespace, admin_url: str, api_url: str, database_url: str, state: Path
) -> None:
    async with principals_of(admin_url, api_url) as made:
        await measure(args, made, database_url, state)


async def measure(args: argparse.Namespace, made: Made, database_url: str, state: Path) -> None:
    amqp_url = await made.service("registry")
    load_generator = await made.user(
        LOAD_GENERATOR, LOAD_GENERATOR_PERMISSIONS, tags="impersonator"
    )
    key = Ed25519PrivateKey.generate()
    key_file = state / "bench.key"
    key_file.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    await enrol(database_url, args.hosts, public_key_b64(key))
    base = load_config(env={})
    config = dataclasses.replace(
        base,
        amqp_url=amqp_url,
        database_url=database_url,
        log_level="WARNING",
        # The synthetic hosts only heartbeat while the bench publishes: the offline sweep must
        # not take them all offline between phases.
        registry=dataclasses.replace(
            base.registry, listen=f"127.0.0.1:{free_port()}", heartbeat_timeout=3600
        ),
    )
    prefetch = SERVICE._prefetch(config)
    publisher = Publisher(load_generator, key_file, args.hosts, args.changed)
    drain = args.drain

    raw_rate = await raw_drain(made, publisher, drain, prefetch)
    print(
        f"raw aio-pika drain, consume+ack, prefetch {prefetch}:  {raw_rate:8.0f} msg/s", flush=True
    )

    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    connection = await aio_pika.connect(amqp_url)  # the registry's user: it reads its queue
    channel = await connection.channel()
    registry = Registry(config)
    await registry.start(connection)  # declares the queue
    await registry.halt()
    go = await publisher.start(drain)
    await go()
    before = await processed(pool)
    profile = cProfile.Profile() if args.profile else None
    if profile:
        profile.enable()
    await registry.start(connection)
    start = time.perf_counter()

    async def drained_all() -> bool:
        return await processed(pool) >= before + drain

    await poll(drained_all, 0.05)
    drained = drain / (time.perf_counter() - start)
    if profile:
        profile.disable()
        profile.dump_stats(args.profile)
    print(
        f"skyline registry drain, batch {config.bus.batch_size}: {drained:8.0f} msg/s"
        f"  ratio {drained / raw_rate:.2f}",
        flush=True,
    )

    count = int(args.rate * args.seconds)
    go = await publisher.start(count, args.rate)
    first = await processed(pool)
    sending = asyncio.create_task(go())
    start = time.perf_counter()
    samples = []
    while not sending.done():
        await asyncio.sleep(5 if args.seconds >= 30 else 1)
        elapsed = time.perf_counter() - start
        depth = await queue_depth(channel, SERVICE.queue)
        done = await processed(pool) - first
        samples.append((elapsed, done, depth))
        print(f"  t={elapsed:5.1f}s handled {done:7d} ({done / elapsed:6.0f}/s) backlog {depth}")
    offered = await sending
    window = time.perf_counter() - start
    handled = await processed(pool) - first
    depth = await queue_depth(channel, SERVICE.queue)
    await connection.close()
    await registry.halt()
    statuses = await pool.fetchval("SELECT count(*) FROM registry.outbox")
    unsent = await pool.fetchval("SELECT count(*) FROM registry.outbox WHERE sent_at IS NULL")
    await pool.close()
    rate = handled / window
    verdict = "met" if rate >= 0.98 * args.rate and depth < args.rate else "NOT met"
    print(
        f"skyline registry sustained: offered {args.rate:.0f}/s for {window:.0f} s, handled "
        f"{rate:.0f}/s, backlog at end {depth} (target {args.rate:.0f}/s {verdict}); "
        f"{statuses} statuses published, {unsent} unsent at stop"
    )
    print(f"the publisher process {offered} (the rate actually offered)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--hosts", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=3334)
    parser.add_argument("--drain", type=int, default=20_000)
    parser.add_argument("--changed", type=int, default=5, help="percent changing free slots")
    parser.add_argument("--profile", help="write a cProfile of the drain phase to this file")
    parser.add_argument("--publisher", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--amqp-url", help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--base", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.publisher:
        asyncio.run(publish(args, Path(args.key).read_bytes()))
        return
    state = Path(tempfile.mkdtemp(prefix="skyline-bench-"))
    broker, postgres = RabbitMQ(state), PostgreSQL(state)
    broker.start()
    try:
        postgres.start()
        try:
            asyncio.run(run(args, broker.url, broker.management_url, postgres.url, state))
        finally:
            postgres.stop()
    finally:
        broker.stop()
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
