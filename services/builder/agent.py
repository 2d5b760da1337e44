"""The volunteer's builder agent: enrol, heartbeat, take leases, build, upload, attest.

Life of a lease (design.md, Builders): it is written to a local journal and acked at once, then
built in the background. A build can take hours, and an unacked delivery would run into
RabbitMQ's consumer timeout, which closes the channel. If the agent dies, the dispatcher's lease
expiry requeues the work; if the agent comes back while the lease is still valid, it resumes
the lease from the journal. The journal also keeps each signed `task.finished` with its message
id, so a redelivered lease or a restart re-sends that very message (consumers skip it if they
already have it) instead of building again.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import json
import logging
import os
import re
import shutil
import signal
import socket
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import aiohttp
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fedora_messaging import message as fm
from skyline_messages import HostHeartbeatV1, TaskFinishedV1, TaskLeasedV1, TaskStartedV1

from services.common import telemetry
from services.common.bus import Bus, OnMessage
from services.common.config import Config
from services.common.errors import ConfigError, Reject
from services.common.rpmfiles import result_set_digest, sha256_file
from services.common.signing import load_or_create_key, now_iso, public_key_b64, sign_body

from . import client, rpmbuild

log = logging.getLogger(__name__)

TASK_KEYS = ("task_id", "build_id", "lease_id", "host", "arch")
ERROR_LOG_NAME = "agent-error.log"  # what went wrong on the agent's side, next to build.log
MAX_SRPM_BYTES = 4 * 1024**3  # the collector's default upload limit; no real SRPM comes close
JOURNAL_KEEP_SECONDS = 7 * 86400  # far beyond any lease, so a redelivery still finds its entry
DEFAULT_GRACE = 600.0
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=300)
# Same rules as the schemas' HOST and USER: the host name ends up in queue and routing keys.
HOST_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
OWNER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class BusLike(Protocol):
    """The part of services.common.bus.Bus the agent uses (tests pass a fake)."""

    async def connect(self) -> None: ...
    async def close(self) -> None: ...
    async def publish(self, msg: fm.Message) -> None: ...
    async def subscribe(
        self, queue_name: str, routing_keys: Iterable[str], on_message: OnMessage, *, prefetch: int
    ) -> None: ...


class Journal:
    """One JSON file per lease under <workdir>/journal, replaced atomically on every change.

    An entry is {"lease": <lease body>, "state": "accepted" | "finished" | "expired",
    "finished": {"id": <message id>, "body": <signed body>}, "published": bool}.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, lease_id: str) -> Path:
        # The schema already checks this; the journal must never write outside its folder.
        if not UUID_RE.fullmatch(lease_id):
            raise ValueError(f"not a lease id: {lease_id!r}")
        return self.root / f"{lease_id}.json"

    def load(self, lease_id: str) -> dict[str, Any] | None:
        return self._read(self.path(lease_id))

    def save(self, lease_id: str, entry: Mapping[str, Any]) -> None:
        path = self.path(lease_id)
        tmp = path.with_suffix(".tmp")
        self.root.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w") as f:
            json.dump(entry, f, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())  # the entry must survive a power cut that follows the ack
        os.replace(tmp, path)

    def entries(self) -> Iterator[tuple[str, dict[str, Any]]]:
        for path in sorted(self.root.glob("*.json")):
            entry = self._read(path)
            if entry is not None:
                yield path.stem, entry

    def prune(self, older_than: float) -> int:
        """Drop settled entries (sent attestations, expired leases) not touched for a while."""
        cutoff = datetime.datetime.now().timestamp() - older_than
        dropped = 0
        for lease_id, entry in self.entries():
            settled = entry.get("state") == "expired" or (
                entry.get("state") == "finished" and entry.get("published")
            )
            path = self.path(lease_id)
            if settled and path.stat().st_mtime < cutoff:
                path.unlink(missing_ok=True)
                dropped += 1
        return dropped

    @staticmethod
    def _read(path: Path) -> dict[str, Any] | None:
        try:
            entry = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except ValueError:
            log.error("journal entry %s is unreadable; ignoring it", path)
            return None
        return entry if isinstance(entry, dict) else None


def attestation(
    lease: Mapping[str, Any],
    *,
    status: str,
    srpm_sha256: str,
    rpms: list[dict[str, Any]],
    logs: list[dict[str, Any]],
    env_manifest: Mapping[str, str],
    duration: float,
) -> dict[str, Any]:
    """The unsigned body of `task.finished`: what was built, from what, with what."""
    return {
        **{k: lease[k] for k in TASK_KEYS},
        "nvr": lease["nvr"],
        "status": status,
        "srpm_sha256": srpm_sha256,
        "files": [*rpms, *logs],
        # Over the RPMs only: logs carry timestamps, so two honest hosts never agree on them.
        "result_digest": result_set_digest((f["name"], f["sha256"]) for f in rpms),
        "env_manifest": dict(env_manifest),
        "env_digest": rpmbuild.manifest_digest(env_manifest),
        "duration": round(max(duration, 0.0), 3),
    }


def lease_expired(lease: Mapping[str, Any]) -> bool:
    try:
        expires = datetime.datetime.fromisoformat(lease["lease_expires"])
    except ValueError:
        # Not ours to judge: the dispatcher enforces its own leases.
        log.warning(
            "lease %s: unreadable lease_expires %r", lease["lease_id"], lease["lease_expires"]
        )
        return False
    if expires.tzinfo is None:
        expires = expires.replace(tzinfo=datetime.UTC)
    return expires <= datetime.datetime.now(datetime.UTC)


def default_host_name() -> str:
    """This machine's short name, made fit for a routing key."""
    short = socket.gethostname().split(".")[0].lower()
    return re.sub(r"[^a-z0-9-]", "-", short).lstrip("-")[:63] or "builder"


def machine_resources(workdir: Path) -> tuple[int, int, int]:
    """(cpus, memory MiB, free disk GiB at workdir) for the enrolment profile."""
    try:
        cpus = len(os.sched_getaffinity(0))  # respects container and taskset limits
    except AttributeError:
        cpus = os.cpu_count() or 1
    try:
        memory_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    except (ValueError, OSError):
        memory_mb = 0
    return cpus, memory_mb, shutil.disk_usage(workdir).free // 2**30


@dataclasses.dataclass
class _Progress:
    """How far a task got, so a crash report says what is known."""

    srpm_sha256: str | None = None
    started: float = 0.0


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
        self.build_path = Path(settings.build_path)
        if not self.build_path.is_absolute():
            # It is baked into the RPMs, so it must be the same absolute path on every host.
            raise ConfigError(f"[builder] build_path must be absolute, not {settings.build_path}")
        self.workdir = config.path(settings.workdir)
        self.key_file = (
            config.path(settings.key_file) if settings.key_file else self.workdir / "host.key"
        )
        self.journal = Journal(self.workdir / "journal")
        self.bus: BusLike = bus or Bus(
            config.amqp_url, exchange=config.exchange, name=f"skyline-builder-{self.host}"
        )
        self.grace = grace
        self.queue = f"skyline.builder.{self.host}"
        self._key: Ed25519PrivateKey | None = None
        self._http: aiohttp.ClientSession | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._slots = asyncio.Semaphore(settings.slots)
        self._wake = asyncio.Event()  # free slots changed: heartbeat now, not in 10 s
        self._abort = asyncio.Event()
        self._stopping = False
        self._unpublished: set[str] = set()

    # -- life cycle ---------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until `stop` is set, then let running builds finish for up to `grace` s."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._key = load_or_create_key(self.key_file)
        async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as http:
            self._http = http
            reply = await client.enrol(
                http,
                self.settings.registry_url,
                self.profile(),
                token=self.settings.enrol_token,
                key_file=self.key_file,
            )
            log.info("enrolled %s as %s", self.host, reply.get("trust", "enrolled"))
            heartbeat: asyncio.Task[None] | None = None
            try:
                if not await self._connect(stop):
                    return
                dropped = self.journal.prune(JOURNAL_KEEP_SECONDS)
                if dropped:
                    log.info("pruned %d old journal entries", dropped)
                await self._recover()
                await self.bus.subscribe(
                    self.queue,
                    [TaskLeasedV1.topic_for(self.host)],
                    self.on_message,
                    prefetch=self.settings.slots,
                )
                heartbeat = asyncio.create_task(self._heartbeat_loop())
                log.info("builder %s ready with %d slot(s)", self.host, self.settings.slots)
                await stop.wait()
                log.info("stopping: taking no new leases")
                self._stopping = True
                self._wake.set()  # tell the dispatcher at once: no free slots
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
                await self._publish_finished(lease_id, entry)
            elif state == "accepted" and lease_id not in self._tasks:
                if lease_expired(entry["lease"]):
                    log.info("lease %s expired while the agent was down; dropped", lease_id)
                    await self._expire(lease_id, entry)
                else:
                    log.info("resuming lease %s (%s)", lease_id, entry["lease"]["nvr"])
                    self._start(entry["lease"])

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
        """Accept a lease: journal it and start it; return at once so the delivery is acked."""
        if not isinstance(msg, TaskLeasedV1):
            raise Reject(f"{type(msg).__name__} does not belong on a builder's lease queue")
        lease = msg.body
        lease_id = lease["lease_id"]
        if lease["host"] != self.host:
            log.warning(
                "ignoring lease %s for host %s (this is %s)", lease_id, lease["host"], self.host
            )
            return
        entry = self.journal.load(lease_id)
        if entry is not None and entry.get("state") == "finished":
            log.info("lease %s was already built; re-sending its attestation", lease_id)
            await self._publish_finished(lease_id, entry)
            return
        if entry is not None and entry.get("state") == "expired":
            log.info("lease %s already expired here; ignored", lease_id)
            return
        if lease_id in self._tasks:
            log.info("lease %s is already running here; duplicate ignored", lease_id)
            return
        if entry is None:
            self.journal.save(lease_id, {"lease": lease, "state": "accepted", "at": now_iso()})
        if self._stopping:
            log.info("lease %s recorded; it starts with the next run if still valid", lease_id)
            return
        self._start(lease)

    def _start(self, lease: dict[str, Any]) -> None:
        lease_id = lease["lease_id"]
        self._tasks[lease_id] = asyncio.create_task(self._run_task(lease), name=f"lease-{lease_id}")
        self._wake.set()

    async def _run_task(self, lease: dict[str, Any]) -> None:
        lease_id = lease["lease_id"]
        progress = _Progress()
        try:
            async with self._slots:  # more leases than slots wait here (they count as busy)
                if lease_expired(lease):
                    # The dispatcher has requeued it elsewhere; building it would be wasted.
                    log.warning("lease %s expired before it could start; dropped", lease_id)
                    await self._expire(lease_id, self.journal.load(lease_id) or {"lease": lease})
                    return
                with telemetry.span(
                    "skyline.builder.task", lease_id=lease_id, nvr=lease["nvr"], arch=lease["arch"]
                ):
                    body = await self._execute(lease, progress)
                    await self._finish(lease, body)
        except asyncio.CancelledError:
            log.warning("task for lease %s interrupted", lease_id)
            raise
        except Exception as exc:
            log.exception(
                "task for lease %s (%s, %s) failed", lease_id, lease["nvr"], lease["arch"]
            )
            await self._report_crash(lease, progress, exc)
        finally:
            self._tasks.pop(lease_id, None)
            self._wake.set()

    async def _execute(self, lease: dict[str, Any], progress: _Progress) -> dict[str, Any]:
        """Fetch, check, build and upload; return the unsigned attestation."""
        lease_id = lease["lease_id"]
        progress.started = asyncio.get_running_loop().time()
        await self._publish_signed(TaskStartedV1, {k: lease[k] for k in TASK_KEYS})
        task_dir = self._task_dir(lease_id)
        results = task_dir / "results"
        await asyncio.to_thread(shutil.rmtree, results, ignore_errors=True)
        results.mkdir(parents=True)
        srpm = task_dir / f"{lease['nvr']}.src.rpm"
        got = await client.fetch_srpm(
            self._session(), lease["srpm_url"], srpm, lease["srpm_sha256"], MAX_SRPM_BYTES
        )
        progress.srpm_sha256 = got
        env = await asyncio.to_thread(rpmbuild.environment_manifest)
        if got != lease["srpm_sha256"]:
            log.error(
                "lease %s: SRPM sha256 %s, expected %s; not building",
                lease_id,
                got,
                lease["srpm_sha256"],
            )
            note = results / rpmbuild.LOG_NAME
            note.write_text(
                f"skyline: the SRPM fetched from {lease['srpm_url']} has sha256 {got},\n"
                f"skyline: but the lease says {lease['srpm_sha256']}.\n"
                "skyline: not building it: these are not the sources that were requested.\n"
            )
            return attestation(
                lease,
                status="failed",
                srpm_sha256=got,
                rpms=[],
                logs=[await self._upload(lease_id, note)],
                env_manifest=env,
                duration=0.0,
            )
        outcome = await asyncio.to_thread(
            rpmbuild.build,
            srpm,
            arch=lease["arch"],
            results_dir=results,
            build_path=self.build_path,
            timeout=self.settings.build_timeout,
            backend=self.settings.backend,
        )
        log.info(
            "lease %s: build %s in %.0f s (rc=%d)",
            lease_id,
            "succeeded" if outcome.succeeded else "FAILED",
            outcome.duration,
            outcome.returncode,
        )
        # A failed build's leftovers are not results: attest the log only, over the empty set.
        rpms = [await self._upload(lease_id, p) for p in outcome.rpms] if outcome.succeeded else []
        return attestation(
            lease,
            status="succeeded" if outcome.succeeded else "failed",
            srpm_sha256=got,
            rpms=rpms,
            logs=[await self._upload(lease_id, outcome.log)],
            env_manifest=env,
            duration=outcome.duration,
        )

    async def _report_crash(
        self, lease: dict[str, Any], progress: _Progress, exc: Exception
    ) -> None:
        """Turn an agent-side error into a failed task, so the dispatcher need not wait."""
        lease_id = lease["lease_id"]
        try:
            results = self._task_dir(lease_id) / "results"
            note = results / ERROR_LOG_NAME
            await asyncio.to_thread(
                _append, note, f"skyline: the builder agent failed: {type(exc).__name__}: {exc}\n"
            )
            # The note gets its own name: the collector refuses new bytes under a name it has
            # staged already, and the build log may be up there (e.g. the RPMs' upload failed).
            logs: list[dict[str, Any]] = []
            for path in (results / rpmbuild.LOG_NAME, note):
                try:
                    if await asyncio.to_thread(path.is_file):
                        logs.append(await self._upload(lease_id, path))
                except Exception as upload_exc:
                    log.warning(
                        "lease %s: could not upload %s: %s", lease_id, path.name, upload_exc
                    )
            env = await asyncio.to_thread(rpmbuild.environment_manifest)
            elapsed = (
                asyncio.get_running_loop().time() - progress.started if progress.started else 0
            )
            body = attestation(
                lease,
                status="failed",
                # Nothing fetched means nothing else to claim: echo what was asked for.
                srpm_sha256=progress.srpm_sha256 or lease["srpm_sha256"],
                rpms=[],
                logs=logs,
                env_manifest=env,
                duration=elapsed,
            )
            await self._finish(lease, body)
        except Exception:
            log.exception(
                "could not report the failure of lease %s; the dispatcher requeues it when the "
                "lease expires",
                lease_id,
            )

    async def _finish(self, lease: dict[str, Any], body: dict[str, Any]) -> None:
        """Sign, journal, then publish the attestation; nothing after the journal may raise."""
        lease_id = lease["lease_id"]
        msg = TaskFinishedV1(body=sign_body(body, self._signing_key()))
        msg.validate()  # a body the broker would refuse must fail here, not loop in the journal
        entry = {
            "lease": lease,
            "state": "finished",
            "finished": {"id": msg.id, "body": msg.body},
            "published": False,
            "at": now_iso(),
        }
        self.journal.save(lease_id, entry)
        log.info("lease %s %s", lease_id, body["status"])
        await self._publish_finished(lease_id, entry)
        await asyncio.to_thread(shutil.rmtree, self._task_dir(lease_id), ignore_errors=True)

    async def _expire(self, lease_id: str, entry: dict[str, Any]) -> None:
        self.journal.save(lease_id, {**entry, "state": "expired", "at": now_iso()})
        await asyncio.to_thread(shutil.rmtree, self._task_dir(lease_id), ignore_errors=True)

    async def _upload(self, lease_id: str, path: Path) -> dict[str, Any]:
        sha256, size = await asyncio.to_thread(_digest_and_size, path)
        await client.upload(self._session(), self.settings.collector_url, lease_id, path, sha256)
        return {"name": path.name, "size": size, "sha256": sha256}

    # -- publishing ---------------------------------------------------------------------------

    async def _publish_finished(self, lease_id: str, entry: dict[str, Any]) -> None:
        """Send (or re-send, with the same message id) a journaled attestation; never raises."""
        recorded = entry["finished"]
        msg = TaskFinishedV1(body=recorded["body"])
        msg.id = recorded["id"]
        try:
            await self.bus.publish(msg)
        except Exception as exc:
            log.warning("attestation of lease %s not sent yet (%s); will retry", lease_id, exc)
            self._unpublished.add(lease_id)
            return
        self._unpublished.discard(lease_id)
        if not entry.get("published"):
            try:
                self.journal.save(lease_id, {**entry, "published": True})
            except OSError as exc:  # at worst it is sent once more after a restart
                log.warning("journal update for lease %s failed: %s", lease_id, exc)

    async def _publish_signed(self, cls: type[fm.Message], body: dict[str, Any]) -> None:
        """Publish a signed informational message; the task goes on if the broker is away."""
        try:
            await self.bus.publish(cls(body=sign_body(body, self._signing_key())))
        except Exception as exc:
            log.warning("could not publish %s: %s", cls.__name__, exc)

    async def _heartbeat_loop(self) -> None:
        while True:
            self._wake.clear()
            running = len(self._tasks)
            await self._publish_signed(
                HostHeartbeatV1,
                {"host": self.host, "free_slots": self.free_slots, "running": running},
            )
            for lease_id in sorted(self._unpublished):
                entry = self.journal.load(lease_id)
                if entry is not None and entry.get("state") == "finished":
                    await self._publish_finished(lease_id, entry)
                else:
                    self._unpublished.discard(lease_id)
            # Not wait_for(): on 3.11 it swallows a cancel that races with the event being set.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.heartbeat_seconds):
                    await self._wake.wait()

    # -- helpers ------------------------------------------------------------------------------

    def _task_dir(self, lease_id: str) -> Path:
        return self.workdir / "tasks" / self.journal.path(lease_id).stem

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None:
            raise RuntimeError("the agent is not running")
        return self._http

    def _signing_key(self) -> Ed25519PrivateKey:
        if self._key is None:
            self._key = load_or_create_key(self.key_file)
        return self._key


def _digest_and_size(path: Path) -> tuple[str, int]:
    return sha256_file(path), path.stat().st_size


def _append(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(text)


def kill_build_processes() -> None:
    """SIGKILL the process groups of this process's builds.

    rpmbuild.build() starts each build in its own session and gives no handle to stop it, so
    find our children that lead their own process group. Linux-only (/proc), like the builds.
    """
    me = os.getpid()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            pid, ppid, pgid = int(stat.parent.name), int(fields[1]), int(fields[2])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == me and pgid == pid:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
