"""Service start-up and the context a handler runs in: the only start-up code of any service.

A service is declared, not written: a name, a map of message class -> handler, HTTP routes,
periodic jobs and a migrations folder. `Service.main()` does the rest in a fixed order:
config -> logging -> telemetry -> database pool + migrations -> bus -> consumers + HTTP ->
wait for SIGTERM/SIGINT -> stop consuming, let in-flight work finish, close.

Every message is handled in one database transaction that also records its message id (so a
redelivered copy is skipped) and the messages the handler publishes (the outbox); the bus acks
only after that transaction committed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web
from fedora_messaging import message as fm

from . import db, outbox, retention, telemetry
from .batch import Batcher, BatchHandler
from .bus import Bus
from .config import BusConfig, Config, load_config, masked
from .errors import Reject, describe, is_unavailable
from .http import make_app, serve

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Runtime:
    """What a running service shares with its handlers, routes and jobs."""

    name: str
    config: Config
    pool: asyncpg.Pool
    bus: Bus
    relay: outbox.Relay
    http: aiohttp.ClientSession
    state: dict[str, Any] = dataclasses.field(default_factory=dict)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Context]:
        """A transaction whose outbox messages are published once it commits."""
        with telemetry.db_span("transaction", self.name):
            async with self.pool.acquire() as conn, conn.transaction():
                yield Context(conn=conn, runtime=self)
        self.relay.wake()


@dataclasses.dataclass
class Context:
    conn: asyncpg.Connection
    runtime: Runtime

    @property
    def config(self) -> Config:
        return self.runtime.config

    async def publish(self, msg: fm.Message) -> None:
        """Send `msg` if, and only if, the current transaction commits."""
        await outbox.add(self.conn, msg)

    async def publish_many(self, msgs: Sequence[fm.Message]) -> None:
        """Like `publish`, for several messages in one statement (batched handlers)."""
        await outbox.add_many(self.conn, msgs)


Handler = Callable[[Any, Context], Awaitable[None]]
Job = Callable[[Runtime], Awaitable[None]]
RUNTIME = web.AppKey("runtime", Runtime)


@dataclasses.dataclass
class Periodic:
    """A job run every `interval(config)` seconds (errors are logged, the loop goes on)."""

    name: str
    interval: Callable[[Config], float]
    job: Job


@dataclasses.dataclass
class Service:
    name: str
    handlers: Mapping[type[fm.Message], Handler] = dataclasses.field(default_factory=dict)
    # High-volume classes whose deliveries are handled many to a transaction (services/common/
    # batch.py); these take precedence over `handlers` for the same class on the bus.
    batched: Mapping[type[fm.Message], BatchHandler] = dataclasses.field(default_factory=dict)
    routes: Sequence[web.AbstractRouteDef] = ()
    listen: Callable[[Config], str] | None = None
    periodic: Sequence[Periodic] = ()
    migrations: Path | None = None
    on_start: Job | None = None
    # Tables of its own that grow with traffic, pruned by the retention job (retention.py).
    history: Sequence[retention.History] = ()
    # The [bus] batch settings of its batched consumer, when it has its own (default [bus]).
    batching: Callable[[Config], BusConfig] | None = None

    @property
    def queue(self) -> str:
        return f"skyline.{self.name}"

    def main(self, argv: Sequence[str] | None = None) -> None:
        parser = argparse.ArgumentParser(prog=f"skyline-{self.name}")
        parser.add_argument("--conf", help="TOML configuration file (default: $SKYLINE_CONF)")
        args = parser.parse_args(argv)
        config = load_config(args.conf)
        setup_logging(config.log_level)
        telemetry.setup(f"skyline-{self.name}", config.otlp_endpoint)
        asyncio.run(self.run(config))

    async def run(self, config: Config, stop: asyncio.Event | None = None) -> None:
        stop = stop or _stop_on_signals()
        broker_url = config.broker_url()
        log.info("starting %s (broker %s)", self.name, masked(broker_url))
        pool = await db.create_pool(config.database_url, self.name)
        bus = Bus(broker_url, exchange=config.exchange, name=f"skyline-{self.name}")
        tasks: list[asyncio.Task[None]] = []
        runner: web.AppRunner | None = None
        try:
            applied = await db.migrate(pool, self.name, self.migrations)
            if applied:
                log.info("applied migrations: %s", ", ".join(applied))
            await bus.connect()
            async with aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=60),
                trace_configs=[telemetry.client_trace_config()],
            ) as http:
                relay = outbox.Relay(
                    pool,
                    bus,
                    batch=config.bus.relay_batch,
                    concurrency=config.bus.relay_concurrency,
                )
                runtime = Runtime(self.name, config, pool, bus, relay, http)
                if self.on_start:
                    await self.on_start(runtime)
                tasks.append(asyncio.create_task(relay.run(config.bus.relay_interval)))
                periodic = [*self.periodic, self.retention_job(), QUEUE_DEPTH]
                tasks += [asyncio.create_task(_every(p, runtime)) for p in periodic]
                if self.listen:
                    app = make_app(self.routes)
                    app[RUNTIME] = runtime
                    runner = await serve(app, self.listen(config))
                if self.handlers or self.batched:
                    batchers = self._batchers(runtime)
                    await bus.subscribe(
                        self.queue,
                        self.routing_keys(),
                        self._on_message(runtime, batchers),
                        prefetch=self._prefetch(config),
                        delivery_limit=config.bus.delivery_limit,
                        batched=list(self.batched),
                        # Straight into the batch, no waiting task per delivery (bus.py).
                        collect={cls: batcher.add for cls, batcher in batchers.items()},
                    )
                log.info("%s ready", self.name)
                await stop.wait()
                log.info("stopping %s", self.name)
                await bus.stop_consuming()  # in-flight handlers may still publish and ack
                for batcher in runtime.state.get("batchers", ()):
                    await batcher.drain()
                if runner is not None:
                    await runner.cleanup()
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            await bus.close()
            await pool.close()

    def retention_job(self) -> Periodic:
        async def prune(runtime: Runtime) -> None:
            await retention.run(runtime, self.history)

        return Periodic("retention", lambda config: config.bus.retention_interval, prune)

    def routing_keys(self) -> list[str]:
        # A class may name a wider binding than its topic (leases go to `<topic>.<host>`).
        classes = {*self.handlers, *self.batched}
        return sorted({getattr(cls, "binding", cls.topic) for cls in classes})

    def _batchers(self, runtime: Runtime) -> dict[type[fm.Message], Batcher]:
        """A Batcher per batched class, drained when the service stops."""
        settings = self._batching(runtime.config)
        batchers = {
            cls: Batcher(
                runtime,
                handler,
                size=settings.batch_size,
                wait=settings.batch_wait,
                concurrency=settings.batch_concurrency,
            )
            for cls, handler in self.batched.items()
        }
        runtime.state["batchers"] = list(batchers.values())  # drained when the service stops
        return batchers

    def _on_message(
        self, runtime: Runtime, batchers: Mapping[type[fm.Message], Batcher]
    ) -> Callable[[fm.Message], Awaitable[None]]:
        """The bus callback: batched classes to their Batcher, the rest to `handle` (batched
        deliveries come here only when their batch failed for want of a peer: bus.py)."""

        def on_message(msg: fm.Message) -> Awaitable[None]:
            batcher = batchers.get(type(msg))
            return batcher.submit(msg) if batcher else self.handle(runtime, msg)

        return on_message

    def _prefetch(self, config: Config) -> int:
        # A batched consumer needs a batch filling while others commit.
        if not self.batched:
            return config.bus.prefetch
        settings = self._batching(config)
        return max(settings.prefetch, settings.batch_size * (settings.batch_concurrency + 1))

    def _batching(self, config: Config) -> BusConfig:
        return self.batching(config) if self.batching else config.bus

    async def handle(self, runtime: Runtime, msg: fm.Message) -> None:
        handler = self.handlers.get(type(msg))
        if handler is None:
            raise Reject(f"no handler for schema {type(msg).__name__} on topic {msg.topic}")
        if not msg.id:
            raise Reject("message has no message_id, so it cannot be processed exactly once")
        async with runtime.transaction() as ctx:
            first_time = await ctx.conn.fetchval(
                "INSERT INTO processed_messages (message_id) VALUES ($1)"
                " ON CONFLICT DO NOTHING RETURNING true",
                msg.id,
            )
            if not first_time:
                log.info("skipping already processed message %s (%s)", msg.id, msg.topic)
                return
            await handler(msg, ctx)


async def _record_queue_depth(runtime: Runtime) -> None:
    for queue, depth in (await runtime.bus.queue_depths()).items():
        telemetry.METRICS.queue_depth.set(depth, {"queue": queue})


QUEUE_DEPTH = Periodic(
    "queue-depth", lambda config: telemetry.QUEUE_DEPTH_INTERVAL, _record_queue_depth
)


async def _every(periodic: Periodic, runtime: Runtime) -> None:
    while True:
        await asyncio.sleep(periodic.interval(runtime.config))
        try:
            await periodic.job(runtime)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if is_unavailable(exc):  # the database or a peer is down: the next run retries
                log.warning("periodic job %s skipped: %s", periodic.name, describe(exc))
            else:
                log.exception("periodic job %s failed", periodic.name)


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # aio-pika and aiormq log every reconnect attempt at INFO; keep our logs readable.
    logging.getLogger("aiormq").setLevel(logging.WARNING)
    logging.getLogger("aio_pika").setLevel(logging.WARNING)
