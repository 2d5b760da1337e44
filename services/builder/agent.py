"""The volunteer's builder agent: enrol, take leases, heartbeat, stop.

Life of a lease (design.md, Builders): it is written to a local journal and acked at once, then
built in the background (runner.py). A build can take hours, and an unacked delivery would run
into RabbitMQ's consumer timeout, which closes the channel. If the agent dies, the dispatcher's
lease expiry requeues the work; if the agent comes back while the lease is still valid, it
resumes the lease from the journal. The journal also keeps each signed `task.finished` with its
message id, so a redelivered lease or a restart re-sends that very message (consumers skip it
if they already have it) instead of building again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

import aiohttp
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fedora_messaging import message as fm
from skyline_messages import HostHeartbeatV1, TaskLeasedV1, TaskRevokedV1

from services.common import principals, telemetry
from services.common.bus import Bus, OnMessage
from services.common.config import Config
from services.common.errors import ConfigError, Reject
from services.common.signing import load_or_create_key, now_iso, public_key_b64

from . import client, rpmbuild, sandbox
from .host import HOST_RE, OWNER_RE, default_host_name, machine_resources
from .journal import KEEP_SECONDS, Journal
from .publisher import Publisher
from .runner import Runner, kill_build_processes, lease_expired

log = logging.getLogger(__name__)

DEFAULT_GRACE = 600.0
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=300)


class BusLike(Protocol):
    """The part of services.common.bus.Bus the agent uses (tests pass a fake)."""

    async def connect(self) -> None: ...
    async def stop_consuming(self) -> None: ...
    async def close(self) -> None: ...
    async def publish(self, msg: fm.Message) -> None: ...
    def use_credentials(self, user: str, password: str) -> None: ...
    async def subscribe(
        self,
        queue_name: str,
        routing_keys: Iterable[str],
        on_message: OnMessage,
        *,
        prefetch: int,
        declare: bool,
    ) -> None: ...


class Agent:
    """One builder host: a lease consumer, a heartbeat, and a task per lease."""

    def __init__(
        self, config: Config, *, bus: BusLike | None = None, grace: float = DEFAULT_GRACE
    ) -> None:
        settings = config.builder
        self.config = config
        self.settings = settings
        self.host = settings.host or default_host_name()
        if not HOST_RE.fullmatch(self.host):
            raise ConfigError(
                f"host name {self.host!r} must be lower-case letters, digits and dashes "
                "(at most 63): set [builder] host or --host"
            )
        if not OWNER_RE.fullmatch(settings.owner):
            raise ConfigError(
                "set [builder] owner (or --owner) to your account name, e.g. your FAS user name"
            )
        if settings.slots < 1:
            raise ConfigError("[builder] slots must be at least 1")
        build_path = Path(settings.build_path)
        if not build_path.is_absolute():
            # It is baked into the RPMs, so it must be the same absolute path on every host.
            raise ConfigError(f"[builder] build_path must be absolute, not {settings.build_path}")
        if problem := rpmbuild.build_path_problem(build_path):
            raise ConfigError(problem)
        self.workdir = config.path(settings.workdir)
        self.key_file = (
            config.path(settings.key_file) if settings.key_file else self.workdir / "host.key"
        )
        self.journal = Journal(self.workdir / "journal")
        # The key, the journal and the volunteer's home are none of a build's business.
        hide = [self.workdir, self.key_file.parent, Path.home()]
        hide += [config.path(p) for p in settings.sandbox_hide]
        self.sandbox = sandbox.resolve(settings, hide=hide)
        self.bus: BusLike = bus or Bus(
            config.broker_url(), exchange=config.exchange, name=f"skyline-builder-{self.host}"
        )
        self.publisher = Publisher(self.bus, self.journal, self._signing_key)
        self.runner = Runner(
            settings,
            build_path=build_path,
            workdir=self.workdir,
            journal=self.journal,
            publisher=self.publisher,
            session=self._session,
            signing_key=self._signing_key,
            sandbox=self.sandbox,
        )
        self.grace = grace
        self.queue = principals.host_queue(self.host)
        self._key: Ed25519PrivateKey | None = None
        self._http: aiohttp.ClientSession | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._slots = asyncio.Semaphore(settings.slots)
        self._wake = asyncio.Event()  # free slots changed: heartbeat now, not in 10 s
        self._abort = asyncio.Event()
        self._stopping = False

    # -- life cycle ---------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until `stop` is set, then let running builds finish for up to `grace` s."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._key = load_or_create_key(self.key_file)
        async with aiohttp.ClientSession(
            timeout=HTTP_TIMEOUT, trace_configs=[telemetry.client_trace_config()]
        ) as http:
            self._http = http
            reply = await client.enrol(
                http,
                self.settings.registry_url,
                self.profile(),
                token=self.settings.enrol_token,
                key_file=self.key_file,
                signing_key=self._signing_key(),
            )
            log.info("enrolled %s as %s", self.host, reply.get("trust", "enrolled"))
            self._log_sandbox()
            credentials = reply.get("broker")
            registry_made_queue = isinstance(credentials, dict)
            if isinstance(credentials, dict):
                # This host's own broker user: it may publish only its own topics and read
                # only its lease queue, which the registry made for it.
                self.bus.use_credentials(str(credentials["user"]), str(credentials["password"]))
            heartbeat: asyncio.Task[None] | None = None
            try:
                if not await self._connect(stop):
                    return
                dropped = self.journal.prune(KEEP_SECONDS)
                if dropped:
                    log.info("pruned %d old journal entries", dropped)
                await self._recover()
                await self.bus.subscribe(
                    self.queue,
                    [TaskLeasedV1.topic_for(self.host), TaskRevokedV1.topic_for(self.host)],
                    self.on_message,
                    prefetch=self.settings.slots,
                    declare=not registry_made_queue,
                )
                heartbeat = asyncio.create_task(self._heartbeat_loop())
                log.info("builder %s ready with %d slot(s)", self.host, self.settings.slots)
                await stop.wait()
                log.info("stopping: taking no new leases")
                self._stopping = True
                self._wake.set()  # tell the dispatcher at once: no free slots
                # Undelivered leases stay queued for the next run; the bus still publishes,
                # so running builds can report back while we wait for them.
                await self.bus.stop_consuming()
                await self._drain()
            finally:
                self._stopping = True
                await self._interrupt_tasks()
                if heartbeat is not None:
                    heartbeat.cancel()
                    await asyncio.gather(heartbeat, return_exceptions=True)
                await self.bus.close()
                self._http = None

    def abort(self) -> None:
        """Stop waiting for running builds (a second Ctrl-C)."""
        self._abort.set()

    def profile(self) -> client.HostProfile:
        cpus, memory_mb, disk_gb = machine_resources(self.workdir)
        return client.HostProfile(
            host=self.host,
            owner=self.settings.owner,
            public_key=public_key_b64(self._signing_key()),
            arches=list(self.settings.arches),
            releases=list(self.settings.releases),
            cpus=cpus,
            memory_mb=memory_mb,
            disk_gb=disk_gb,
            sandbox=self.sandbox.kind,
        )

    @property
    def free_slots(self) -> int:
        return 0 if self._stopping else max(0, self.settings.slots - len(self._tasks))

    async def _connect(self, stop: asyncio.Event) -> bool:
        """Connect to the broker, retrying until it answers or we are told to stop."""
        delays = client.backoff(1.0, 30.0)
        while True:
            try:
                await self.bus.connect()
                return True
            except Exception as exc:  # aio-pika raises several unrelated types here
                delay = next(delays)
                log.warning("cannot connect to the broker (%s); retrying in %.1f s", exc, delay)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await stop.wait()
                return False

    async def _recover(self) -> None:
        """Re-send attestations that never got out, resume leases a previous run accepted."""
        for lease_id, entry in self.journal.entries():
            state = entry.get("state")
            if state == "finished" and not entry.get("published"):
                await self.publisher.publish_finished(lease_id, entry)
            elif state == "accepted" and lease_id not in self._tasks:
                lease = TaskLeasedV1(body=entry["lease"])
                if lease_expired(lease):
                    log.info("lease %s expired while the agent was down; dropped", lease_id)
                    await self.runner.expire(lease_id, entry)
                else:
                    log.info("resuming lease %s (%s)", lease_id, lease.nvr)
                    with telemetry.attached(entry.get("traceparent")):  # the lease's trace
                        self._start(lease)

    async def _drain(self) -> None:
        tasks = list(self._tasks.values())
        if not tasks:
            return
        log.info(
            "waiting up to %g s for %d running task(s); signal again to interrupt",
            self.grace,
            len(tasks),
        )
        finished = asyncio.create_task(asyncio.wait(tasks))  # cancelling it spares the tasks
        aborted = asyncio.create_task(self._abort.wait())
        await asyncio.wait(
            {finished, aborted}, timeout=self.grace, return_when=asyncio.FIRST_COMPLETED
        )
        finished.cancel()
        aborted.cancel()

    async def _interrupt_tasks(self) -> None:
        tasks = [t for t in self._tasks.values() if not t.done()]
        if not tasks:
            return
        log.warning("interrupting %d task(s); they resume at the next start", len(tasks))
        for task in tasks:
            task.cancel()
        # Cancelling the await does not stop a build running in its thread: end it too, or
        # asyncio.run() would wait in its executor shutdown for the build to finish.
        kill_build_processes()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- leases -------------------------------------------------------------------------------

    async def on_message(self, msg: fm.Message) -> None:
        """Accept a lease: journal it and start it; return at once so the delivery is acked.
        A revocation stops its lease's build."""
        if isinstance(msg, TaskRevokedV1):
            self.on_revoked(msg)
            return
        if not isinstance(msg, TaskLeasedV1):
            raise Reject(f"{type(msg).__name__} does not belong on a builder's lease queue")
        lease = msg
        lease_id = lease.lease_id
        if lease.host != self.host:
            log.warning(
                "ignoring lease %s for host %s (this is %s)", lease_id, lease.host, self.host
            )
            return
        entry = self.journal.load(lease_id)
        if entry is not None and entry.get("state") == "finished":
            log.info("lease %s was already built; re-sending its attestation", lease_id)
            await self.publisher.publish_finished(lease_id, entry)
            return
        if entry is not None and entry.get("state") == "expired":
            log.info("lease %s already expired here; ignored", lease_id)
            return
        if lease_id in self._tasks:
            log.info("lease %s is already running here; duplicate ignored", lease_id)
            return
        if entry is None:
            self.journal.save(
                lease_id,
                {
                    "lease": dict(lease.body),
                    "state": "accepted",
                    "at": now_iso(),
                    "traceparent": telemetry.current_traceparent(),
                },
            )
        if self._stopping:
            # Only a delivery that raced stop_consuming() gets here: a task started now could
            # outlive the bus and the HTTP session, so leave it to the next run.
            log.info("lease %s recorded; it starts with the next run if still valid", lease_id)
            return
        self._start(lease)

    def on_revoked(self, msg: TaskRevokedV1) -> None:
        """The dispatcher took a lease back (the bus checked it came from the dispatcher)."""
        if msg.host != self.host:
            log.warning("ignoring revocation of lease %s for host %s", msg.lease_id, msg.host)
            return
        if not self.revoke(msg.lease_id):
            # Finished already (its result is judged as usual) or never got here.
            log.info("revocation of lease %s (%s): not running here", msg.lease_id, msg.reason)

    def revoke(self, lease_id: str) -> bool:
        """Stop a running (or waiting) lease's build; False if no such lease runs here.

        The build is killed within seconds and reported as a failed task ("revoked"). The
        message that triggers this (e.g. `task.revoked.<host>` on the host's queue) is the
        dispatcher's to define; this is the agent's side of it.
        """
        if lease_id not in self._tasks:
            return False
        log.info("lease %s revoked: stopping its build", lease_id)
        self.runner.revoke(lease_id)
        return True

    def _start(self, lease: TaskLeasedV1) -> None:
        lease_id = lease.lease_id
        self._tasks[lease_id] = asyncio.create_task(self._run_task(lease), name=f"lease-{lease_id}")
        self._wake.set()

    async def _run_task(self, lease: TaskLeasedV1) -> None:
        lease_id = lease.lease_id
        try:
            async with self._slots:  # more leases than slots wait here (they count as busy)
                await self.runner.run(lease)
        except asyncio.CancelledError:
            log.warning("task for lease %s interrupted", lease_id)
            raise
        finally:
            self._tasks.pop(lease_id, None)
            self._wake.set()

    async def _heartbeat_loop(self) -> None:
        while True:
            self._wake.clear()
            running = len(self._tasks)
            await self.publisher.publish_signed(
                HostHeartbeatV1,
                {
                    "host": self.host,
                    "free_slots": self.free_slots,
                    "running": running,
                    "sandbox": self.sandbox.kind,
                },
            )
            await self.publisher.retry_unpublished()
            # Not wait_for(): on 3.11 it swallows a cancel that races with the event being set.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.heartbeat_seconds):
                    await self._wake.wait()

    # -- helpers ------------------------------------------------------------------------------

    def _log_sandbox(self) -> None:
        box = self.sandbox
        if box.kind == "none":
            log.warning(
                "builds run WITHOUT a sandbox (allow_unsandboxed = true): %s; any spec file "
                "can read what the build user can and reach the network",
                box.reason,
            )
        else:
            log.info("builds run in a %s sandbox", box.kind)
        if box.identity is not None:
            log.info("the agent runs as root: builds run as user %s", box.identity.name)

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None:
            raise RuntimeError("the agent is not running")
        return self._http

    def _signing_key(self) -> Ed25519PrivateKey:
        if self._key is None:
            self._key = load_or_create_key(self.key_file)
        return self._key
