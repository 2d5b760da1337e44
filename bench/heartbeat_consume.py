"""The registry's batched heartbeat handling at 100,000 hosts, beside the raw limits.

Hosts are enrolled straight into the registry's tables (default 100,000, online, their last
status published at times spread over one `status_refresh`, so refreshes come at their steady
rate), then signed heartbeats are published by a separate process, the way hosts would send
them: each on its host's routing key `skyline.host.heartbeat.<host>`, with `user_id`
`host-<host>`, signed by that host's key, so the registry's sender check and signature check see
exactly what real hosts send. One broker user per host (100,000 users, each with its own
connection) is more than this machine can hold beside the registry, so the publisher is one
load-generator user standing for all those host connections: it has RabbitMQ's `impersonator`
tag (which lets it set any `user_id`), may write only heartbeat routing keys on amq.topic, and
reads nothing. The registry consumes as `skyline-registry`, through its real permissions; the
administrator only creates the users, through the management API. Every service process sets
telemetry up as `Service.main` does (recording spans, no exporter).
Measured in the same run:

1. raw Ed25519: `cryptography`'s verify of one heartbeat-sized message, and `verify_body` (the
   canonical JSON of the body too), per second on one core;
2. raw broker: the publisher's rate filling a queue (pre-marshalled frames, no confirms, timed
   until the broker has queued them all), and raw
   aio-pika draining a queue of the registry's shape (a service's quorum queue, dead-lettered,
   bound to every heartbeat key) of the same messages, consume + ack, same prefetch;
3. skyline drain: the real registry service (`SERVICE.run`: batched consumer, signature and
   replay checks, one transaction per batch, outbox relay) drains N pre-filled heartbeats
   (--profile writes a cProfile of it);
4. skyline sustained: heartbeats offered at --rate (default 3,334/s: 100,000 hosts at one per
   30 s) for --seconds (default 60) to --registries registry processes (the first in this
   process, the others as subprocesses), with the dispatcher running in its own process and
   consuming the statuses; samples the backlog (ready heartbeats) every --sample seconds and
   says whether it grows, beside the rate the generator actually offered; then the registry's
   and the dispatcher's database growth per hour in steady state (see SENT_WINDOW).

A share of heartbeats (--changed, default 5%) change the host's free slots, so statuses are
published through the outbox and the relay as in production.

    .venv/bin/python bench/heartbeat_consume.py [--seconds 60 (0: drain only)] [--hosts 100000]
        [--rate 3334] [--registries 2] [--verify-processes 1] [--profile drain.prof]
        [--bus batch_size=200 ...]  (the registry's [bus] settings)

Starts a private RabbitMQ and PostgreSQL in a temp dir (services/common/localstack.py).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import dataclasses
import datetime
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
from aiormq.abc import ChannelFrame
from bench_broker import (
    Made,
    declare_consumer_queue,
    delete_queues,
    principals_of,
    private_stack,
    unique,
)
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pamqp import commands as spec
from pamqp.body import ContentBody
from pamqp.header import ContentHeader
from skyline_messages import HostHeartbeatV1

from services.common import db, principals, retention, telemetry
from services.common.bus import encode, wire_message
from services.common.config import Config, load_config
from services.common.localstack import free_port
from services.common.signing import canonical_json, public_key_b64, sign_body, verify_body
from services.dispatcher.__main__ import SERVICE as DISPATCHER
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


def host_key(host: int) -> Ed25519PrivateKey:
    """Every host has its own key (as real ones do: the registry parses and caches each),
    derived from its number so the publisher and the enrolment agree without sharing files."""
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"bench-host-%d" % host).digest())


# Growth is measured in steady state: the services here keep sent outbox rows SENT_WINDOW
# seconds (production: bus.sent_retention_hours) and run retention every RETENTION_INTERVAL,
# so the outbox reaches its plateau within the run. Table sizes are taken once that plateau is
# reached and at the end, each time right after retention and a plain VACUUM (what autovacuum
# does in time: deleted rows' room reused), and the difference is extrapolated per hour. The
# outbox's plateau at the production window is its insert rate x bytes per row x that window.
SENT_WINDOW = 15.0
RETENTION_INTERVAL = 5.0


def heartbeat_body(host: int, seq: int, base: datetime.datetime, changed: int) -> dict:
    free = 0 if (seq * 7919) % 100 < changed else 1  # a few change their slots
    signed_at = (base + datetime.timedelta(microseconds=seq)).isoformat()
    return {"host": f"h{host}", "free_slots": free, "running": 0, "signed_at": signed_at}


# The publisher (a separate process, like the hosts) must cost as little CPU as it can on a
# machine it shares with the broker and the registry: it signs and encodes every heartbeat
# first, marshals each into its AMQP frames (basic.publish, content header, body) once, then
# writes them a step's worth at a time (one socket write per 50 ms step) on a channel without
# publisher confirms. What it offers is what it wrote; the bench compares that to what the
# registry handled, so a reader sees whether the generator or the registry is the limit. A
# refused message (a wrong user_id) would close the channel: checked at the end.


def frames(wire, user: str, channel_number: int) -> bytes:
    """One heartbeat's AMQP frames, as aio-pika would write them."""
    properties = wire_message(wire, user).properties
    return ChannelFrame.marshall(
        channel_number=channel_number,
        frames=[
            spec.Basic.Publish(exchange="amq.topic", routing_key=wire.routing_key),
            ContentHeader(properties=properties, body_size=len(wire.body)),
            ContentBody(wire.body),
        ],
    ).payload


async def publish(args: argparse.Namespace) -> None:
    base = datetime.datetime.fromisoformat(args.base)
    keys = [host_key(h) for h in range(min(args.hosts, args.count))]
    connection = await aio_pika.connect(args.amqp_url)
    channel = await connection.channel(publisher_confirms=False)
    raw = await channel.get_underlay_channel()
    payloads = []
    for seq in range(args.count):
        host = seq % args.hosts
        body = heartbeat_body(host, seq, base, args.changed)
        name = body["host"]
        signed = sign_body(body, keys[host])
        msg = HostHeartbeatV1(body=signed, topic=HostHeartbeatV1.topic_for(name))
        payloads.append(frames(encode(msg), principals.host_user(name), raw.number))
    print("ready", flush=True)
    sys.stdin.readline()  # go
    step = 0.05
    per_step = max(1, int(args.rate * step)) if args.rate else 500
    start = last = time.perf_counter()
    for n, first in enumerate(range(0, len(payloads), per_step)):
        chunk = payloads[first : first + per_step]
        written = asyncio.get_running_loop().create_future()
        await raw.write_queue.put(ChannelFrame(b"".join(chunk), False, written))
        await written  # on the socket (TCP back-pressure from the broker holds it here)
        now = time.perf_counter()
        if now - last >= 1:
            print(f"sent {first + len(chunk)}", flush=True)
            last = now
        if args.rate:
            await asyncio.sleep(max(0.0, start + (n + 1) * step - time.perf_counter()))
    elapsed = time.perf_counter() - start
    await raw.basic_qos(prefetch_count=1)  # a round trip: everything before it went through
    if channel.is_closed:
        raise SystemExit("the broker closed the publishing channel: a heartbeat was refused")
    print(f"sent {len(payloads)}", flush=True)
    print(f"done {len(payloads)} {elapsed:.3f}", flush=True)
    await connection.close()


class Publisher:
    def __init__(self, amqp_url: str, hosts: int, changed: int) -> None:
        self.amqp_url, self.hosts, self.changed = amqp_url, hosts, changed
        self.phase = 0
        self.sent = 0  # confirmed so far in the current phase

    async def start(self, count: int, rate: float = 0):
        """Prepare `count` heartbeats in a subprocess; returns a function that sends them and
        returns (count, seconds)."""
        # Each phase signs later than the previous one, so no heartbeat is a replay.
        self.phase += 1
        self.sent = 0
        base = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=60 - self.phase)
        proc = await asyncio.create_subprocess_exec(
            *(sys.executable, __file__, "--publisher", "--amqp-url", self.amqp_url),
            *("--hosts", str(self.hosts), "--count", str(count)),
            *("--rate", str(rate), "--base", base.isoformat()),
            *("--changed", str(self.changed)),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert proc.stdout is not None and proc.stdin is not None
        line = await proc.stdout.readline()
        assert line.strip() == b"ready", line

        async def go() -> tuple[int, float]:
            assert proc.stdout is not None and proc.stdin is not None
            proc.stdin.write(b"go\n")
            await proc.stdin.drain()
            result = (0, 0.0)
            async for raw in proc.stdout:
                word, *rest = raw.decode().split()
                if word == "sent":
                    self.sent = int(rest[0])
                elif word == "done":
                    result = (int(rest[0]), float(rest[1]))
            await proc.wait()
            return result

        return go


async def enrol(database_url: str, hosts: int, refresh: float) -> None:
    """Enrol hosts straight into the registry's schema, online, their status published at
    times spread over one refresh period (as in a registry that has run for a while)."""
    pool = await db.create_pool(database_url, "registry")
    await db.migrate(pool, "registry", SERVICE.migrations)
    names = [f"h{i}" for i in range(hosts)]
    keys = [public_key_b64(host_key(i)) for i in range(hosts)]
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
                "running": 0,
                "max_slots": 1,
            }
        )
        for name in names
    ]
    await pool.execute(
        "INSERT INTO hosts (host, owner, public_key, arches, releases, state, free_slots,"
        " last_heartbeat, status_published, status_published_at)"
        " SELECT h, 'bench', k, '{noarch,x86_64}', '{f40}', 'online', 1, now(), p::jsonb,"
        " now() - random() * make_interval(secs => $4)"
        " FROM unnest($1::text[], $2::text[], $3::text[]) AS v(h, k, p)",
        names,
        keys,
        published,
        refresh,
    )
    await pool.execute("VACUUM ANALYZE hosts")
    await pool.close()


async def spread_refreshes(pool: asyncpg.Pool, refresh: float) -> None:
    """Statuses last published at times spread over one refresh period, as in a registry
    that has run for a while: refreshes then come at their steady rate (hosts / refresh)."""
    await pool.execute(
        "UPDATE registry.hosts"
        " SET status_published_at = now() - random() * make_interval(secs => $1)",
        refresh,
    )
    await pool.execute("VACUUM ANALYZE registry.hosts")


def verify_rates(count: int = 5000) -> tuple[float, float]:
    """(raw Ed25519 verifies/s of heartbeat-sized messages, `verify_body` calls/s), one core."""
    key = host_key(0)
    base = datetime.datetime.now(datetime.UTC)
    bodies = [sign_body(heartbeat_body(i, i, base, 5), key) for i in range(count)]
    messages = [canonical_json(b) for b in bodies]
    signatures = [key.sign(m) for m in messages]
    public = key.public_key()
    start = time.perf_counter()
    for signature, message in zip(signatures, messages, strict=True):
        public.verify(signature, message)
    raw = count / (time.perf_counter() - start)
    public_b64 = public_key_b64(key)
    start = time.perf_counter()
    for body in bodies:
        verify_body(body, public_b64)
    return raw, count / (time.perf_counter() - start)


async def acked(made: Made, queue: str) -> int:
    """Deliveries of `queue` acked so far, by the management API (its statistics lag up to
    5 s). The publisher writes without confirms, so what it wrote minus the queue's depth
    would count messages still on their way into the queue as handled."""
    info = await made.admin._call("GET", f"queues/{made.admin._v()}/{queue}")
    return int((info.get("message_stats") or {}).get("ack", 0))


async def ready_depth(channel: aio_pika.abc.AbstractChannel, name: str) -> int:
    queue = await channel.declare_queue(name, passive=True)
    return queue.declaration_result.message_count or 0


async def raw_drain(made: Made, publisher: Publisher, count: int, prefetch: int):
    """As a service of its own, before the registry's queue exists (so it alone gets them).
    Returns (publish rate filling the queue, consume+ack rate draining it)."""
    service = unique("benchraw")
    url = await made.service(service)
    connection = await aio_pika.connect(url)
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=prefetch)
    name = principals.service_queue(service)
    queue = await declare_consumer_queue(channel, name, [HostHeartbeatV1.binding])
    go = await publisher.start(count)
    start = time.perf_counter()
    sent, _ = await go()

    async def all_queued() -> bool:
        return await ready_depth(channel, name) >= count

    await poll(all_queued, 0.05)
    seconds = time.perf_counter() - start  # written and queued (persisted) by the broker
    done = asyncio.Event()
    received = 0

    async def on_message(incoming: aio_pika.abc.AbstractIncomingMessage) -> None:
        nonlocal received
        await incoming.ack()
        received += 1
        if received == count:
            done.set()

    start, cpu = time.perf_counter(), time.process_time()
    await queue.consume(on_message)
    await done.wait()
    elapsed = time.perf_counter() - start
    raw_cpu = (time.process_time() - cpu) / count
    await connection.close()
    await delete_queues(url, name, f"{name}.dead")
    return sent / seconds, count / elapsed, raw_cpu


class Registry:
    """The real registry service in this process."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.stop = asyncio.Event()
        self.task: asyncio.Task | None = None

    async def start(self) -> None:
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(SERVICE.run(self.config, self.stop))

    async def halt(self) -> None:
        self.stop.set()
        assert self.task is not None
        await self.task


async def consumers(connection: aio_pika.abc.AbstractConnection, queue: str) -> int:
    async with connection.channel() as channel:  # a missing queue closes it
        try:
            declared = await channel.declare_queue(queue, passive=True)
        except aio_pika.exceptions.ChannelNotFoundEntity:
            return 0
        return int(declared.declaration_result.consumer_count or 0)


async def poll(predicate, interval: float, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("the bench stalled")
        await asyncio.sleep(interval)


def bus_overrides(pairs: list[str]) -> dict[str, Any]:
    """`--bus batch_size=200` and the like: [bus] settings, typed as their defaults."""
    defaults = load_config(env={}).bus
    out: dict[str, Any] = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        out[key] = type(getattr(defaults, key))(value)
    return out


def service_config(
    base: Config,
    amqp_url: str,
    database_url: str,
    verify_processes: int = 0,
    bus: dict[str, Any] | None = None,
) -> Config:
    return dataclasses.replace(
        base,
        amqp_url=amqp_url,
        database_url=database_url,
        log_level="WARNING",
        bus=dataclasses.replace(
            base.bus,
            retention_interval=RETENTION_INTERVAL,
            sent_retention_hours=SENT_WINDOW / 3600,
            **(bus or {}),
        ),
        # The synthetic hosts only heartbeat while the bench publishes: the offline sweep must
        # not take them all offline between phases.
        registry=dataclasses.replace(
            base.registry,
            listen=f"127.0.0.1:{free_port()}",
            heartbeat_timeout=3600,
            **({"verify_processes": verify_processes} if verify_processes else {}),
        ),
        dispatcher=dataclasses.replace(base.dispatcher, listen=f"127.0.0.1:{free_port()}"),
    )


async def run_service(args: argparse.Namespace) -> None:
    """A service process of the sustained phase (until SIGTERM)."""
    service = SERVICE if args.service == "registry" else DISPATCHER
    telemetry.setup(f"skyline-{service.name}")
    config = service_config(
        load_config(env={}),
        args.amqp_url,
        args.database_url,
        args.verify_processes,
        bus_overrides(args.bus) if args.service == "registry" else None,
    )
    await service.run(config)


async def spawn(
    name: str, amqp_url: str, database_url: str, verify_processes: int, bus: Sequence[str] = ()
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *(sys.executable, __file__, "--service", name),
        *("--amqp-url", amqp_url, "--database-url", database_url),
        *("--verify-processes", str(verify_processes)),
        *(a for pair in bus for a in ("--bus", pair)),
    )


async def settled_sizes(pool: asyncpg.Pool, config: Config) -> dict[str, int]:
    """Table sizes right after retention and a plain VACUUM of every table (see SENT_WINDOW)."""
    async with pool.acquire() as conn:
        for schema in ("registry", "dispatcher"):
            await conn.execute(f"SET search_path = {schema}")
            await retention.prune(conn, config.bus)  # type: ignore[arg-type]  # one connection
        await conn.execute("RESET search_path")
        for name in await table_sizes(pool):
            await conn.execute(f"VACUUM {name}")
    return await table_sizes(pool)


async def outbox_ids(pool: asyncpg.Pool) -> int:
    return await pool.fetchval("SELECT coalesce(max(id), 0) FROM registry.outbox")


async def table_sizes(pool: asyncpg.Pool) -> dict[str, int]:
    """Bytes of every table of the registry and the dispatcher (with indexes and TOAST)."""
    rows = await pool.fetch(
        "SELECT schemaname || '.' || relname AS name,"
        " pg_total_relation_size(relid) AS bytes FROM pg_stat_user_tables"
        " WHERE schemaname IN ('registry', 'dispatcher')"
    )
    return {r["name"]: r["bytes"] for r in rows}


async def run(
    args: argparse.Namespace, admin_url: str, api_url: str, database_url: str, state: Path
) -> None:
    async with principals_of(admin_url, api_url) as made:
        await measure(args, made, database_url, state)


async def measure(args: argparse.Namespace, made: Made, database_url: str, state: Path) -> None:
    amqp_url = await made.service("registry")
    dispatcher_url = await made.service("dispatcher")
    load_generator = await made.user(
        LOAD_GENERATOR, LOAD_GENERATOR_PERMISSIONS, tags="impersonator"
    )
    base = load_config(env={})
    await enrol(database_url, args.hosts, base.registry.status_refresh)
    config = service_config(
        base, amqp_url, database_url, args.verify_processes, bus_overrides(args.bus)
    )
    telemetry.setup("skyline-registry")  # as Service.main does: spans are recorded
    prefetch = SERVICE._prefetch(config)
    publisher = Publisher(load_generator, args.hosts, args.changed)
    drain = args.drain

    raw_verify, raw_verify_body = verify_rates()
    print(
        f"raw Ed25519 verify, one core:                  {raw_verify:8.0f} /s"
        f"  (verify_body with canonical JSON {raw_verify_body:.0f}/s)",
        flush=True,
    )
    raw_publish, raw_rate, raw_cpu = await raw_drain(made, publisher, drain, prefetch)
    print(
        f"raw broker: publish (pre-marshalled frames, no confirms) until queued"
        f" {raw_publish:.0f} msg/s;"
        f" aio-pika drain, consume+ack, prefetch {prefetch}: {raw_rate:8.0f} msg/s"
        f" ({raw_cpu * 1e6:.0f} us CPU a message)",
        flush=True,
    )

    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    connection = await aio_pika.connect(amqp_url)  # the registry's user: it reads its queue
    channel = await connection.channel()
    registry = Registry(config)
    await registry.start()  # declares the queue

    async def registries_consume(n: int):
        async def check() -> bool:
            return await consumers(connection, SERVICE.queue) >= n

        return check

    await poll(await registries_consume(1), 0.02)
    await registry.halt()
    go = await publisher.start(drain)
    await go()

    async def all_queued() -> bool:
        return await ready_depth(channel, SERVICE.queue) >= drain

    await poll(all_queued, 0.05)
    await spread_refreshes(pool, config.registry.status_refresh)
    profile = cProfile.Profile() if args.profile else None
    if profile:
        profile.enable()
    start, cpu = time.perf_counter(), time.process_time()
    await registry.start()

    async def drained_all() -> bool:
        return await ready_depth(channel, SERVICE.queue) == 0

    await poll(drained_all, 0.05)
    # The last prefetched deliveries are being handled: wait until the registry acked them.
    await registry.halt()
    drained = drain / (time.perf_counter() - start)
    # CPU time of this process (the registry, and the bench's polling) per heartbeat: less
    # sensitive than rates to what else the machine runs.
    registry_cpu = (time.process_time() - cpu) / drain
    if profile:
        profile.disable()
        profile.dump_stats(args.profile)
    print(
        f"skyline registry drain, one process, batch {config.bus.batch_size}: {drained:8.0f} msg/s"
        f"  ratio {drained / raw_rate:.2f} of raw drain; {registry_cpu * 1e6:.0f} us CPU a"
        f" heartbeat ({registry_cpu / raw_cpu:.1f}x raw drain's)",
        flush=True,
    )

    if args.seconds <= 0:  # --seconds 0: the drain phase only (comparing CPU per heartbeat)
        await connection.close()
        await pool.close()
        return
    # Sustained, with the dispatcher consuming the statuses and retention running.
    count = int(args.rate * args.seconds)
    go = await publisher.start(count, args.rate)
    others = [
        await spawn("registry", amqp_url, database_url, args.verify_processes, args.bus)
        for _ in range(args.registries - 1)
    ]
    dispatcher = await spawn("dispatcher", dispatcher_url, database_url, 0)
    await registry.start()
    await poll(await registries_consume(args.registries), 0.1)
    await poll(lambda: consumers(connection, DISPATCHER.queue), 0.1)
    await spread_refreshes(pool, config.registry.status_refresh)
    acked_before = await acked(made, SERVICE.queue)
    sending = asyncio.create_task(go())
    start = time.perf_counter()
    samples: list[tuple[float, int, int]] = []
    # Once sent rows older than SENT_WINDOW have been deleted at least once.
    warm_at = min(SENT_WINDOW + 2 * RETENTION_INTERVAL, args.seconds / 2)
    warm: tuple[float, dict[str, int], int] | None = None
    while not sending.done():
        await asyncio.sleep(args.sample)
        elapsed = time.perf_counter() - start
        if warm is None and elapsed >= warm_at:
            warm = (elapsed, await settled_sizes(pool, config), await outbox_ids(pool))
        depth = await ready_depth(channel, SERVICE.queue)
        handled = await acked(made, SERVICE.queue) - acked_before
        samples.append((elapsed, handled, depth))
        print(
            f"  t={elapsed:5.1f}s sent {publisher.sent:7d} handled ~{handled:7d}"
            f" ({handled / elapsed:5.0f}/s) backlog {depth}",
            flush=True,
        )
    offered, seconds = await sending
    window = time.perf_counter() - start
    depth_end = await ready_depth(channel, SERVICE.queue)
    handled_end = await acked(made, SERVICE.queue) - acked_before
    sizes_after = await settled_sizes(pool, config)
    inserted = await outbox_ids(pool)
    drain_start = time.perf_counter()
    try:
        await poll(drained_all, 0.5, timeout=args.seconds)
        gone = f"gone {time.perf_counter() - drain_start:.0f} s later"
    except TimeoutError:
        gone = f"still {await ready_depth(channel, SERVICE.queue)} after {args.seconds:.0f} s"
    dead = await ready_depth(channel, f"{SERVICE.queue}.dead")
    dispatcher_connection = await aio_pika.connect(dispatcher_url)
    statuses_waiting = await ready_depth(await dispatcher_connection.channel(), DISPATCHER.queue)
    await dispatcher_connection.close()
    rate = handled_end / window
    growth = backlog_growth(samples)
    met = rate >= 0.98 * args.rate and growth <= 0.01 * args.rate
    print(
        f"skyline sustained, {args.registries} registry process(es): offered"
        f" {offered / seconds:.0f}/s for {seconds:.0f} s, handled {rate:.0f}/s"
        f" (ratio {rate / raw_rate:.2f} of raw drain, {rate / raw_verify:.2f} of raw verify);"
        f" backlog at end {depth_end}, growing {growth:.0f}/s over the second half,"
        f" {gone}; {dead} dead-lettered; {statuses_waiting} statuses"
        " waiting for the dispatcher."
        f" Target {args.rate:.0f}/s with no growing backlog: {'met' if met else 'NOT met'}",
        flush=True,
    )
    if warm is None:
        print("no growth figures: the run was too short to reach steady state", flush=True)
    else:
        span = window - warm[0]
        await report_growth(
            pool, warm[1], sizes_after, span, (inserted - warm[2]) / span, base, args
        )
    await registry.halt()
    for proc in [*others, dispatcher]:
        proc.terminate()
        await proc.wait()
    await connection.close()
    await pool.close()


def backlog_growth(samples: list[tuple[float, int, int]]) -> float:
    """Least-squares slope of the backlog (heartbeats/s) over the second half of the samples."""
    half = samples[len(samples) // 2 :]
    if len(half) < 2:
        return 0.0
    mean_t = sum(t for t, _, _ in half) / len(half)
    mean_d = sum(d for _, _, d in half) / len(half)
    var = sum((t - mean_t) ** 2 for t, _, _ in half)
    return sum((t - mean_t) * (d - mean_d) for t, _, d in half) / var if var else 0.0


async def report_growth(
    pool: asyncpg.Pool,
    before: dict[str, int],
    after: dict[str, int],
    span: float,
    outbox_rate: float,
    production: Config,
    args: argparse.Namespace,
) -> None:
    outbox = await pool.fetchrow(
        "SELECT count(*) AS rows, count(*) FILTER (WHERE sent_at IS NULL) AS unsent,"
        " pg_total_relation_size('registry.outbox') AS bytes FROM registry.outbox"
    )
    processed, processed_bytes = await pool.fetchrow(
        "SELECT count(*), pg_total_relation_size('dispatcher.processed_messages')"
        " FROM dispatcher.processed_messages"
    )
    print(
        f"database growth per hour at this load, steady state: sizes after retention + VACUUM"
        f" {span:.0f} s apart, extrapolated (sent outbox rows kept {SENT_WINDOW:.0f} s"
        f" here; registry outbox now {outbox['rows']} rows, {outbox['unsent']} unsent;"
        f" dispatcher processed ids {processed}):"
    )
    for schema in ("registry", "dispatcher"):
        total = 0.0
        for name in sorted(after):
            if not name.startswith(f"{schema}."):
                continue
            grown = (after[name] - before.get(name, 0)) * 3600 / span
            total += grown
            if abs(grown) >= 1 << 20:
                print(f"    {name:40s} {grown / (1 << 20):9.1f} MiB/h")
        print(f"  {schema:42s} {total / (1 << 20):9.1f} MiB/h in all")
    # At the target rate (whatever this machine managed), statuses come from the changed
    # heartbeats and the refreshes: rate x changed share + hosts / status_refresh a second.
    statuses = args.rate * args.changed / 100 + args.hosts / production.registry.status_refresh
    per_row = outbox["bytes"] / max(1, outbox["rows"])
    hours = production.bus.sent_retention_hours
    per_id = processed_bytes / max(1, processed)
    days = production.bus.processed_retention_hours / 24
    print(
        f"  registry outbox: {outbox_rate:.0f} rows/s inserted here, at most ~{per_row:.0f}"
        f" bytes a row with its indexes (its size after VACUUM over its rows: that size keeps"
        f" room for rows deleted before, so an upper bound)."
        f" At {args.rate:.0f} heartbeats/s from {args.hosts} hosts"
        f" ({statuses:.0f} statuses/s) it levels off at"
        f" ~{statuses * per_row * hours * 3600 / (1 << 20):.0f} MiB (production window"
        f" {hours:g} h) and grows no more."
    )
    if processed:
        print(
            f"  the dispatcher's processed ids (~{per_id:.0f} bytes each) grow"
            f" {statuses * per_id * 3600 / (1 << 20):.0f} MiB/h for {days:g} days"
            f" (~{statuses * per_id * days * 86400 / (1 << 30):.0f} GiB), then level off."
        )
    else:
        # Statuses are applied by their time and message id (no processed-message row each):
        # the dispatcher's tables grow with the hosts first seen during the run, then not.
        print(
            "  the dispatcher keeps no processed id per status: its growth here is the hosts"
            " first seen during the run (one row each), bounded by the number of hosts."
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seconds", type=float, default=60, help="sustained phase (0: the drain phase only)"
    )
    parser.add_argument("--hosts", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=3334)
    parser.add_argument("--drain", type=int, default=20_000)
    parser.add_argument("--registries", type=int, default=1, help="registry processes")
    parser.add_argument("--sample", type=float, default=5, help="seconds between samples")
    parser.add_argument("--changed", type=int, default=5, help="percent changing free slots")
    parser.add_argument("--profile", help="write a cProfile of the drain phase to this file")
    parser.add_argument(
        "--verify-processes",
        type=int,
        default=0,
        help="registry.verify_processes: worker processes checking signatures (default 0)",
    )
    parser.add_argument(
        "--bus",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a [bus] setting of the registry, e.g. batch_size=200 (repeatable)",
    )
    parser.add_argument("--publisher", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--service", help=argparse.SUPPRESS)
    parser.add_argument("--amqp-url", help=argparse.SUPPRESS)
    parser.add_argument("--database-url", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--base", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.publisher:
        asyncio.run(publish(args))
        return
    if args.service:
        asyncio.run(run_service(args))
        return
    state = Path(tempfile.mkdtemp(prefix="skyline-bench-"))
    try:
        with private_stack(state) as (broker, postgres):
            asyncio.run(run(args, broker.url, broker.management_url, postgres.url, state))
    finally:
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
