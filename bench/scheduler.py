"""The dispatcher's scheduler against raw limits measured in the same run, same machine.

Setup: a real `skyline-dispatcher` process (or --dispatchers N side by side) on a private
RabbitMQ and PostgreSQL, its database filled with 10,000 online hosts (x86_64, some also
i686, some aarch64 and s390x; all busy at first) and 100,000 queued tasks of 100 owners.

(1) Lease throughput: the registry publishes heartbeats of hosts whose slots became free
(`--slots` free each); the dispatcher takes them in batches (services/common/batch.py, its
[bus] batch_size), upserts each batch's hosts in one statement, the hosts pull their best
tasks (priority class, fair share across owners), leases them in one statement, and its
outbox relay publishes task.leased. Timed from the first heartbeat published to the last
task.leased in the monitor's queue, bound to them all: the relay published it and the broker
confirmed it (the queue's depth, read every 50 ms with a passive declare; the leases stay
there until the run ends). `--consume-leases` times instead to the last one received and
acked by a consumer here, as the bench always did before (now a raw aiormq consumer that
decodes nothing). Either way the raw broker round trip below, the ratio's denominator, is a
full publish -> consume -> ack, on a quorum queue as the services' (the monitor's queue is a
classic exclusive one, as before). The bench plays the registry and 10,000 remote builders,
which in a farm are other machines: its heartbeats are encoded (and validated) before the
clock starts and published as a relay does (Bus.publish_encoded, BATCH at once), and
counting by depth spares this machine a Python consumer of every lease. What it still costs,
and what the dispatcher, RabbitMQ (beam.smp) and PostgreSQL (every backend) cost, is printed
as CPU time (user + system, /proc: bench/proc_cpu.py) per lease over the timed run: on 2
cores the sum, not any one process, limits the rate (figures, and what limited them:
README's bench table). Beside it, in the same run, at the same batching:
  - raw broker round trip: publish (confirms, [bus] relay_batch at once, through
    Bus.publish_encoded as the relay) -> consume (the dispatcher's prefetch, the services'
    AMQP client: services/common/amqp_transport.py) -> ack, one message per lease; and the
    same with aio-pika's own client and Exchange.publish (a send per message), as measured
    before the services had theirs;
  - raw PostgreSQL lease rate: `SELECT ... FOR UPDATE SKIP LOCKED LIMIT k` + UPDATE of a
    100,000-row queued-tasks table, k = batch_size x --slots (a batch's leases) on
    batch_concurrency connections, each lease batch its own transaction; and, for
    comparison, a transaction per status (k = --slots, [bus] prefetch connections).

(2) Idle latency: 10,000 hosts with free slots and nothing queued; a packager publishes one
request at a time; timed from its publish to the task.leased received. Beside it: the raw
broker round trip of one message, and one raw SKIP LOCKED lease transaction.

    .venv/bin/python bench/scheduler.py [--heartbeats 4000] [--slots 4] [--requests 300]
        [--dispatchers 1] [--consume-leases]

Always starts a private RabbitMQ and PostgreSQL in a temp dir (services/common/localstack.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path

import aio_pika
import aiormq
import asyncpg
import proc_cpu
from bench_broker import (
    Made,
    declare_consumer_queue,
    delete_queues,
    principals_of,
    private_stack,
    unique,
)
from skyline_messages import BuildRequestV1, HostStatusV1, TaskLeasedV1

from services.common import db, principals
from services.common.amqp_transport import CoalescingConnection
from services.common.bus import Bus, encode, wire_message
from services.common.config import BusConfig
from services.common.localstack import PostgreSQL, RabbitMQ, free_port

ROOT = Path(__file__).resolve().parent.parent
HOSTS = 10_000
TASKS = 100_000
OWNERS = 100
BUS = BusConfig()
# The dispatcher's batching, which the raw baselines use too: its outbox relay publishes
# RELAY_BATCH messages with confirms pipelined; its consumer takes host.status in batches of
# STATUS_BATCH, STATUS_CONCURRENCY transactions at once, with a prefetch of PREFETCH.
RELAY_BATCH = BUS.relay_batch
STATUS_BATCH = BUS.batch_size
STATUS_CONCURRENCY = BUS.batch_concurrency
PREFETCH = max(BUS.prefetch, STATUS_BATCH * (STATUS_CONCURRENCY + 1))
BATCH = RELAY_BATCH  # the registry's heartbeats are published this many at once too
_clock = iter(range(10**9))
START = datetime.datetime.now(datetime.UTC)


def host_name(i: int) -> str:
    return f"h{i:05d}"


def host_arches(i: int) -> list[str]:
    if i % 50 == 0:
        return ["noarch", "s390x"]
    if i % 10 == 0:
        return ["noarch", "aarch64"]
    return ["noarch", "x86_64", "i686"] if i % 3 == 0 else ["noarch", "x86_64"]


def heartbeat(i: int, free: int) -> HostStatusV1:
    seen = START + datetime.timedelta(seconds=next(_clock))
    return HostStatusV1(
        body={
            "host": host_name(i),
            "owner": f"owner{i % 500}",
            "state": "online",
            "trust": "core" if i % 4 == 0 else "trusted",
            "arches": host_arches(i),
            "releases": ["f40", "f41"],
            "free_slots": free,
            "running": 0,
            "max_slots": max(1, free),
            "seen_at": seen.isoformat(),
        }
    )


def build_request(owner: str) -> BuildRequestV1:
    body = {
        "srpm_url": f"http://127.0.0.1:1/sources/p{uuid.uuid4().hex[:8]}-1.0-1.src.rpm",
        "srpm_sha256": "a" * 64,
        "arches": ["x86_64"],
        "owner": owner,
    }
    return BuildRequestV1(body=body, topic=BuildRequestV1.topic_for(owner))


# The farm, written straight into the dispatcher's tables (not timed).


async def fill(database_url: str, tasks: int, free: int) -> None:
    """`HOSTS` online hosts with `free` slots each, `tasks` queued tasks of OWNERS owners."""
    conn = await asyncpg.connect(database_url, server_settings={"search_path": "dispatcher"})
    try:
        await conn.execute(
            "TRUNCATE leases, tasks, build_deps, builds, hosts, owner_usage, processed_messages,"
            " outbox"
        )
        rows = []
        for i in range(HOSTS):
            arches = host_arches(i)
            rows.append(
                (
                    host_name(i),
                    f"owner{i % 500}",
                    "core" if i % 4 == 0 else "trusted",
                    arches,
                    ["f40", "f41"],
                    free,
                    free,
                    arches,
                )
            )
        await conn.executemany(
            "INSERT INTO hosts (host, owner, state, trust, arches, releases, free_slots,"
            " running, max_slots, seen_at, build_arches)"
            " VALUES ($1, $2, 'online', $3, $4, $5, $6, 0, $7, now() - interval '1 day', $8)",
            rows,
        )
        if tasks:
            # Mostly x86_64 and noarch, some i686, aarch64 and s390x; a few mass rebuilds.
            await conn.execute(
                "INSERT INTO builds (id, request_id, owner, nvr, srpm_url, srpm_sha256, scratch,"
                " priority) SELECT n, 'bench-' || n, 'owner' || (n % $2), 'p' || n || '-1.0-1',"
                " 'http://127.0.0.1:1/p' || n || '-1.0-1.src.rpm', repeat('a', 64), false,"
                " CASE WHEN n % 10 = 0 THEN 10 ELSE 100 END FROM generate_series(1, $1) n",
                tasks,
                OWNERS,
            )
            await conn.execute(
                "INSERT INTO tasks (build_id, arch, priority, owner, class, scratch)"
                " SELECT b.id, CASE WHEN b.id % 20 = 0 THEN 'i686' WHEN b.id % 25 = 0"
                " THEN 'aarch64' WHEN b.id % 97 = 0 THEN 's390x' WHEN b.id % 2 = 0"
                " THEN 'noarch' ELSE 'x86_64' END, b.priority, b.owner,"
                " CASE WHEN b.priority >= 100 THEN 1 ELSE 2 END, false FROM builds b"
            )
            await conn.execute("SELECT setval('builds_id_seq', $1)", tasks)
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def dispatchers(amqp_url: str, database_url: str, count: int) -> AsyncIterator[list[int]]:
    """`count` real skyline-dispatcher processes, configured through the environment."""
    procs = []
    for _ in range(count):
        env = {
            **os.environ,
            "SKYLINE_AMQP_URL": amqp_url,
            "SKYLINE_DATABASE_URL": database_url,
            "SKYLINE_LOG_LEVEL": "WARNING",
            "SKYLINE_DISPATCHER_LISTEN": f"127.0.0.1:{free_port()}",
            "SKYLINE_DISPATCHER_MAX_ACTIVE_BUILDS_PER_OWNER": "1000000",
        }
        argv = [sys.executable, "-m", "services.dispatcher"]
        procs.append(subprocess.Popen(argv, cwd=ROOT, env=env))  # noqa: ASYNC220 (started once)
    try:
        yield [proc.pid for proc in procs]
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(60)


class Leases:
    """The monitor's queue, bound to every task.leased: each lease the dispatcher's relay
    published (and the broker confirmed to it) is routed there.

    `consume`: each is delivered to a consumer here and acked (as a builder acks its lease),
    and counted as it arrives; with `by_nvr`, timed by its build's nvr too. A raw aiormq
    consumer on the services' client (CoalescingConnection) that decodes nothing unless
    timed. Else the queue is not consumed while counting: its depth, read with a passive
    declare every POLL seconds, is the count (the leases stay in the queue, proving each was
    published, until it is deleted with the connection). The bench stands in for the
    registry and for 10,000 remote builders, whose CPU is not the dispatcher's machine's:
    consuming 16,000 leases in Python here cost about a fifth of the run's CPU."""

    POLL = 0.05  # s: at 1,000 leases/s a 16 s run, timed to within 0.3%

    def __init__(self, *, consume: bool = True, by_nvr: bool = False) -> None:
        self.consume = consume
        self.by_nvr = by_nvr
        self.count = 0
        self.arrived: dict[str, float] = {}  # by nvr (latency: one request at a time)
        self.event = asyncio.Event()
        self.want = 0

    async def start(self, url: str) -> aio_pika.abc.AbstractConnection:
        connection = await aio_pika.connect(url, connection_class=CoalescingConnection)
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=1000)
        self.name = f"{principals.MONITOR_USER}:bench-sched-{uuid.uuid4().hex[:8]}"
        queue = await channel.declare_queue(self.name, exclusive=True)
        await queue.bind("amq.topic", routing_key=f"{TaskLeasedV1.topic}.#")
        self.channel = await channel.get_underlay_channel()
        if self.consume:
            await self.channel.basic_consume(self.name, self.on_message)
        return connection

    async def on_message(self, message: aiormq.abc.DeliveredMessage) -> None:
        self.count += 1
        if self.by_nvr:
            self.arrived[json.loads(message.body)["nvr"]] = time.perf_counter()
        # Not waited for: the acks of one loop pass leave in one send (amqp_transport.py).
        await self.channel.basic_ack(message.delivery_tag or 0, wait=False)
        if self.count >= self.want:
            self.event.set()

    async def wait_for(self, total: int, timeout: float = 600) -> None:
        self.want = total
        async with asyncio.timeout(timeout):
            while not self.consume and self.count < total:
                await asyncio.sleep(self.POLL)
                declared = await self.channel.queue_declare(self.name, passive=True)
                self.count = int(declared.message_count or 0)
            if self.count < total:
                self.event.clear()
                await self.event.wait()


async def until_consumed(registry: Bus, database_url: str) -> None:
    """The dispatcher consumes once it started: probe with a heartbeat until one lands."""
    conn = await asyncpg.connect(database_url, server_settings={"search_path": "dispatcher"})
    try:
        for _ in range(600):
            await registry.publish(heartbeat(HOSTS - 1, 0))
            # Filled a day ago: the probe's status is newer (host.status records no message ids).
            with contextlib.suppress(asyncpg.UndefinedTableError):
                if await conn.fetchval(
                    "SELECT seen_at > now() - interval '1 hour' FROM hosts WHERE host = $1",
                    host_name(HOSTS - 1),
                ):
                    return
            await asyncio.sleep(0.2)
        raise RuntimeError("the dispatcher never consumed")
    finally:
        await conn.close()


# Raw limits


async def raw_round_trip(made: Made, count: int, *, services: bool) -> tuple[float, list[float]]:
    """Messages/s publish (RELAY_BATCH at once, confirms) -> consume (prefetch PREFETCH) ->
    ack, and one-message round trips (s). `services`: with the services' client, as the relay
    publishes (Bus.publish_encoded; the writes of one loop pass in one send,
    services/common/amqp_transport.py); else with aio-pika's own (Exchange.publish)."""
    service, owner = unique("benchsched"), unique("benchsched")
    owner_url, service_url = await made.owner(owner), await made.service(service)
    queue_name = principals.service_queue(service)
    connection_class = CoalescingConnection if services else aio_pika.Connection
    consumer = await aio_pika.connect(service_url, connection_class=connection_class)
    channel = await consumer.channel()
    await channel.set_qos(prefetch_count=PREFETCH)
    wire = encode(build_request(owner))
    queue = await declare_consumer_queue(channel, queue_name, [wire.routing_key])
    bus = Bus(owner_url, name="bench-raw")
    await bus.connect()
    publisher = await aio_pika.connect(owner_url)
    exchange = await (await publisher.channel(publisher_confirms=True)).get_exchange(
        "amq.topic", ensure=False
    )

    async def publish(n: int) -> None:
        if services:
            errors = [e for e in await bus.publish_encoded([wire] * n) if e is not None]
            if errors:
                raise errors[0]
        else:
            await asyncio.gather(
                *(
                    exchange.publish(wire_message(wire, owner), routing_key=wire.routing_key)
                    for _ in range(n)
                )
            )

    received = 0
    done = asyncio.Event()
    want = count

    async def on_message(incoming: aio_pika.abc.AbstractIncomingMessage) -> None:
        nonlocal received
        await incoming.ack()
        received += 1
        if received >= want:
            done.set()

    await queue.consume(on_message)
    start = time.perf_counter()
    for first in range(0, count, RELAY_BATCH):
        await publish(min(RELAY_BATCH, count - first))
    await done.wait()
    rate = count / (time.perf_counter() - start)
    singles = []
    for _ in range(200):
        want, done = received + 1, asyncio.Event()
        t0 = time.perf_counter()
        await publish(1)
        await done.wait()
        singles.append(time.perf_counter() - t0)
    await bus.close()
    await publisher.close()
    await consumer.close()
    await delete_queues(service_url, queue_name, f"{queue_name}.dead")
    return rate, singles


async def raw_skip_locked(
    database_url: str, leases: int, conns: int, k: int
) -> tuple[float, list[float]]:
    """Leases/s of bare SKIP LOCKED lease transactions (`conns` connections, k rows each),
    and single-lease transaction times (s) on an idle connection."""
    schema = f"bench_raw_{uuid.uuid4().hex[:8]}"
    pool = await db.create_pool(database_url, schema, max_size=conns)
    await pool.execute(
        "CREATE TABLE q (id bigserial PRIMARY KEY, state text NOT NULL, host text,"
        " priority int NOT NULL)"
    )
    await pool.execute(
        "INSERT INTO q (state, priority) SELECT 'queued', n % 7 FROM generate_series(1, $1) n",
        TASKS,
    )
    await pool.execute("CREATE INDEX q_queued ON q (priority DESC, id) WHERE state = 'queued'")
    await pool.execute("ANALYZE q")
    done = 0

    async def lease_one(conn: asyncpg.Connection, host: str, rows: int) -> int:
        async with conn.transaction():
            ids = await conn.fetch(
                "SELECT id FROM q WHERE state = 'queued' ORDER BY priority DESC, id LIMIT $1"
                " FOR UPDATE SKIP LOCKED",
                rows,
            )
            await conn.execute(
                "UPDATE q SET state = 'leased', host = $2 WHERE id = ANY($1::bigint[])",
                [r["id"] for r in ids],
                host,
            )
        return len(ids)

    async def worker() -> None:
        nonlocal done
        async with pool.acquire() as conn:
            while done < leases:
                done += await lease_one(conn, "h", k)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(conns)))
    rate = done / (time.perf_counter() - start)
    singles = []
    async with pool.acquire() as conn:
        for _ in range(200):
            t0 = time.perf_counter()
            await lease_one(conn, "h", 1)
            singles.append(time.perf_counter() - t0)
    await pool.execute(f"DROP SCHEMA {schema} CASCADE")
    await pool.close()
    return rate, singles


# The dispatcher


async def throughput(
    made: Made,
    database_url: str,
    heartbeats: int,
    slots: int,
    count: int,
    servers: Mapping[str, Callable[[], float]],
    consume: bool,
) -> tuple[float, int, dict[str, float]]:
    """Leases/s the dispatcher gives hosts whose slots became free, and the CPU seconds each
    process used meanwhile (the dispatchers, the `servers`' readers, this bench)."""
    await fill(database_url, TASKS, 0)
    registry = Bus(await made.service("registry"), name="bench-registry")
    await registry.connect()
    leases = Leases(consume=consume)
    connection = await leases.start(await made.monitor())
    try:
        async with dispatchers(await made.service("dispatcher"), database_url, count) as pids:
            await until_consumed(registry, database_url)
            meter = proc_cpu.Meter(
                {
                    "dispatcher": lambda: sum(map(proc_cpu.seconds, pids)),
                    **servers,
                    "bench": lambda: proc_cpu.seconds(os.getpid()),
                }
            )
            # Hosts that build x86_64 (most of the queue): each heartbeat leases `slots`. The
            # registry's heartbeats, encoded (and validated) before the clock starts: the
            # registry is not under test. Published as its relay would, BATCH at once.
            hosts = [i for i in range(HOSTS - 1) if "x86_64" in host_arches(i)][:heartbeats]
            wires = [encode(heartbeat(i, slots)) for i in hosts]
            meter.start()
            start = time.perf_counter()
            for first in range(0, len(wires), BATCH):
                errors = await registry.publish_encoded(wires[first : first + BATCH])
                if any(errors):
                    raise next(e for e in errors if e is not None)
            await leases.wait_for(len(hosts) * slots)
            elapsed = time.perf_counter() - start
            used = meter.stop()
    finally:
        await connection.close()
        await registry.close()
    return leases.count / elapsed, leases.count, used


async def latency(made: Made, database_url: str, requests: int, count: int) -> list[float]:
    """Request -> task.leased on an idle farm: 10,000 hosts with free slots, nothing queued."""
    await fill(database_url, 0, 4)
    owner = unique("benchowner")
    packager = Bus(await made.owner(owner), name="bench-packager")
    registry = Bus(await made.service("registry"), name="bench-registry")
    await packager.connect()
    await registry.connect()
    leases = Leases(by_nvr=True)
    connection = await leases.start(await made.monitor())
    times = []
    try:
        async with dispatchers(await made.service("dispatcher"), database_url, count):
            await until_consumed(registry, database_url)
            for n in range(requests + 20):
                msg = build_request(owner)
                nvr = msg.srpm_name.removesuffix(".src.rpm")
                t0 = time.perf_counter()
                await packager.publish(msg)
                await leases.wait_for(leases.count + 1, timeout=30)
                if n >= 20:  # the first ones warm the dispatcher's connections up
                    times.append(leases.arrived[nvr] - t0)
    finally:
        await connection.close()
        await packager.close()
        await registry.close()
    return times


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))] * 1000


async def run(broker: RabbitMQ, postgres: PostgreSQL, args: argparse.Namespace) -> None:
    admin_url, api_url, database_url = broker.url, broker.management_url, postgres.url
    servers = {
        "RabbitMQ": lambda: proc_cpu.seconds(proc_cpu.pid_file(broker.pidfile)),
        "PostgreSQL": lambda: proc_cpu.tree_seconds(
            proc_cpu.pid_file(postgres.data / "postmaster.pid")
        ),
    }
    async with principals_of(admin_url, api_url) as made:
        # The schema, as the dispatcher makes it (its migrations), before anything is filled.
        pool = await db.create_pool(database_url, "dispatcher")
        await db.migrate(pool, "dispatcher", ROOT / "services" / "dispatcher" / "migrations")
        await pool.close()
        leases_total = args.heartbeats * args.slots
        broker_rate, broker_singles = await raw_round_trip(made, leases_total, services=True)
        plain_rate, _ = await raw_round_trip(made, leases_total, services=False)
        # As the dispatcher leases: a transaction per batch of statuses, each `slots` rows...
        per_batch = STATUS_BATCH * args.slots
        pg_rate, pg_singles = await raw_skip_locked(
            database_url, leases_total, STATUS_CONCURRENCY, per_batch
        )
        # ...and as it would with a transaction per status (its handlers' prefetch at once).
        pg_single_rate, _ = await raw_skip_locked(
            database_url, min(leases_total, 2000), BUS.prefetch, args.slots
        )
        rate, leased, used = await throughput(
            made,
            database_url,
            args.heartbeats,
            args.slots,
            args.dispatchers,
            servers,
            args.consume_leases,
        )
        times = await latency(made, database_url, args.requests, args.dispatchers)
    who = f"{args.dispatchers} dispatcher process(es)"
    print(f"farm: {HOSTS} online hosts, {TASKS} queued tasks of {OWNERS} owners; {who}")
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(
        f"(1) lease throughput; the dispatcher takes host.status in batches of {STATUS_BATCH}"
        f" ({STATUS_CONCURRENCY} transactions at once, prefetch {PREFETCH}) and its relay"
        f" publishes {RELAY_BATCH} at once"
    )
    print(
        f"  raw broker round trip, publish {RELAY_BATCH} at once, prefetch {PREFETCH}"
        f"      {broker_rate:8.0f} msg/s"
    )
    print(
        f"    (the same with aio-pika's own publish, a send per message:"
        f"     {plain_rate:8.0f} msg/s)"
    )
    print(
        f"  raw PostgreSQL SKIP LOCKED, {STATUS_CONCURRENCY} conns x {per_batch} rows/transaction"
        f"   {pg_rate:8.0f} leases/s"
    )
    print(
        f"  raw PostgreSQL SKIP LOCKED, {BUS.prefetch} conns x {args.slots} rows/transaction"
        f"    {pg_single_rate:8.0f} leases/s  (a transaction per status, for comparison)"
    )
    counted = "received by a consumer" if args.consume_leases else "in the queue"
    print(
        f"  dispatcher: {args.heartbeats} heartbeats x {args.slots} free slots"
        f"              {rate:8.0f} leases/s ({leased} leased, counted {counted})"
    )
    print(
        f"  ratio to the broker round trip {rate / broker_rate:.2f},"
        f" to PostgreSQL at the same batching {rate / pg_rate:.2f}"
    )
    per_lease = ", ".join(f"{name} {cpu / leased * 1000:.2f}" for name, cpu in used.items())
    print(f"  CPU ms per lease (user + system): {per_lease}")
    print("(2) request -> lease latency, idle farm")
    print(
        f"  raw broker round trip, 1 message      p50 {pct(broker_singles, 50):6.1f} ms"
        f"  p99 {pct(broker_singles, 99):6.1f} ms"
    )
    print(
        f"  raw SKIP LOCKED lease transaction     p50 {pct(pg_singles, 50):6.1f} ms"
        f"  p99 {pct(pg_singles, 99):6.1f} ms"
    )
    print(
        f"  dispatcher request -> task.leased     p50 {pct(times, 50):6.1f} ms"
        f"  p99 {pct(times, 99):6.1f} ms  ({len(times)} requests, mean"
        f" {statistics.mean(times) * 1000:.1f} ms)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heartbeats", type=int, default=4000)
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--dispatchers", type=int, default=1)
    parser.add_argument(
        "--consume-leases",
        action="store_true",
        help="count the leases of (1) as a consumer receives them (default: queue depth)",
    )
    args = parser.parse_args()
    with private_stack() as (broker, postgres):
        asyncio.run(run(broker, postgres, args))


if __name__ == "__main__":
    main()
