"""A crash or restart of any service, the broker or a builder loses no build and stores none twice.

Each test breaks one part of the running system (SIGKILL for services and builders, a stop and
start for RabbitMQ) while a scratch build is on its way, then checks that the build completes,
exactly once: one build for the request, one `build.stored` and one `build.complete`, and each
file once in the task's Koji scratch folder and in the collector's records.

The `system` fixture is shared by the whole session, so every test puts back whatever it
stopped before it ends (`restore`, in a `finally`).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import asyncpg
import pytest
from fedora_messaging import message as fm
from skyline_messages import (
    BuildCompleteV1,
    BuildFailedV1,
    BuildRequestV1,
    BuildStoredV1,
    HostHeartbeatV1,
    TaskFinishedV1,
    TaskLeasedV1,
    TaskVerifiedV1,
)

from services.cli.localsystem import SERVICES, LocalSystem
from services.common.config import load_config
from services.common.rpmfiles import make_srpm, sha256_file
from tests.e2e.test_walking_skeleton import build_id_of, publish, request_body, request_message

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "skyline-hello"
SLOW_BUILD_SECONDS = 4  # how long the slow package's %build sleeps
SETTLE_SECONDS = 2  # after completion: long enough for a duplicate announcement to show up


# -- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def slow_srpm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example package with a %build that sleeps, so that a test can act while it builds."""
    src = tmp_path_factory.mktemp("slow-spec")
    for path in EXAMPLE.iterdir():
        if path.is_file():
            shutil.copy(path, src)
    spec = (EXAMPLE / "skyline-hello.spec").read_text()
    slow = spec.replace("Name:           skyline-hello", "Name:           skyline-slow", 1)
    slow = slow.replace("%build\n", f"%build\nsleep {SLOW_BUILD_SECONDS}\n", 1)
    assert slow.count("skyline-slow") == 1 and f"sleep {SLOW_BUILD_SECONDS}" in slow
    (src / "skyline-slow.spec").write_text(slow)
    return make_srpm(src / "skyline-slow.spec", tmp_path_factory.mktemp("slow-srpm"))


# -- processes ------------------------------------------------------------------------------


def pid_of(system: LocalSystem, name: str) -> int | None:
    """The pid of a running service or builder of `system`, None if it is not running."""
    try:
        pid = int((system.pids / f"{name}.pid").read_text())
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, ValueError, IndexError):
        return None
    return None if state in ("Z", "X") else pid


def log_of(system: LocalSystem, name: str) -> bytes:
    path = system.logs / f"{name}.log"
    return path.read_bytes() if path.exists() else b""


def ready_count(system: LocalSystem, name: str) -> int:
    # Services log "<name> ready", builders "builder <host> ready with N slot(s)".
    return log_of(system, name).count(f"{name} ready".encode())


def start_and_wait(system: LocalSystem, name: str, timeout: float = 60) -> None:
    """(Re)start a stopped service or builder and wait until it consumes its queue again."""
    if pid_of(system, name):
        return
    before = ready_count(system, name)
    builder = name in system.builder_names()
    if builder:
        system.start_builder(name)
    else:
        system.start_service(name)
    deadline = time.monotonic() + timeout
    while ready_count(system, name) <= before or (builder and not system.host_online(name)):
        tail = log_of(system, name).decode(errors="replace")[-3000:]
        if not pid_of(system, name):
            raise AssertionError(f"{name} exited after a restart; its log ends with:\n{tail}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} not ready {timeout:.0f} s after a restart:\n{tail}")
        time.sleep(0.2)


def restore(system: LocalSystem) -> None:
    """Whatever a test stopped runs again: the broker, every service and every builder."""
    if not system.rabbitmq.is_running():
        system.rabbitmq.start()
    for name in [*SERVICES, *system.builder_names()]:
        start_and_wait(system, name)


async def kill(system: LocalSystem, name: str) -> None:
    assert pid_of(system, name), f"{name} is not running"
    await asyncio.to_thread(system.kill_process, name)


async def restart_process(system: LocalSystem, name: str) -> None:
    await asyncio.to_thread(start_and_wait, system, name)


def build_processes(system: LocalSystem, srpm: Path) -> dict[str, int]:
    """Builders whose build process (rpmbuild or mock, a child of the agent) builds `srpm`."""
    agents = {pid: host for host in system.builder_names() if (pid := pid_of(system, host))}
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if ppid in agents and srpm.name.encode() in cmdline:
            found[agents[ppid]] = int(stat.parent.name)
    return found


async def wait_until(what: str, predicate: Callable[[], object], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.1)


def orphans(system: LocalSystem, srpm: Path) -> list[int]:
    """Processes still building `srpm` for this system, whether or not their agent lives."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            argv = cmdline.read_bytes()
            if srpm.name.encode() in argv and str(system.state).encode() in argv:
                found.append(int(cmdline.parent.name))
    return found


async def wait_building(system: LocalSystem, host: str, srpm: Path) -> None:
    """Until `host` runs the build of `srpm`: it has fetched the SRPM and uploaded nothing yet."""
    await wait_until(
        f"{host} to build {srpm.name}", lambda: host in build_processes(system, srpm), 30
    )


# -- what the bus, the dispatcher and the collector say ---------------------------------------


def distinct(tap: Any, cls: type[fm.Message], **match: object) -> list[fm.Message]:
    """Matching messages, one per message id.

    The outbox relay may publish a message again after a crash between the broker's confirm
    and its bookkeeping, with the same id (consumers skip it): that is one message, not two.
    """
    return list({m.id: m for m in tap.of(cls, **match)}.values())


async def completed(tap: Any, build_id: int, timeout: float) -> None:
    """Wait for the build's end, and fail at once if it failed."""
    end = await tap.wait(
        fm.Message,
        timeout=timeout,
        where=lambda m: isinstance(m, (BuildCompleteV1, BuildFailedV1)),
        build_id=build_id,
    )
    assert isinstance(end, BuildCompleteV1), f"build {build_id} failed: {end.body['reason']}"


async def start_build(system: LocalSystem, srpm: Path) -> tuple[BuildRequestV1, int]:
    request = request_message(system, await request_body(system, srpm, scratch=True))
    await publish(system, request)
    return request, await build_id_of(system, request)


async def assert_built_once(
    system: LocalSystem, tap: Any, request: BuildRequestV1, build_id: int
) -> BuildStoredV1:
    """One build of `request`, complete; each file of its one task stored exactly once."""
    await asyncio.sleep(SETTLE_SECONDS)
    async with aiohttp.ClientSession() as http:
        url = f"{system.url('dispatcher')}/api/v1/builds"
        async with http.get(url, params={"request_id": request.id}) as response:
            builds = (await response.json())["builds"]
    assert [b["build_id"] for b in builds] == [build_id], "one build row per request"
    assert builds[0]["state"] == "complete", builds[0]
    [task] = builds[0]["tasks"]
    assert task["state"] == "stored", task

    assert not tap.of(BuildFailedV1, build_id=build_id)
    complete = distinct(tap, BuildCompleteV1, build_id=build_id)
    stored = distinct(tap, BuildStoredV1, build_id=build_id)
    assert len(complete) == 1, [m.body for m in complete]
    assert len(stored) == 1, [m.body for m in stored]
    files = stored[0].body["files"]
    names = sorted(f["name"] for f in files)
    assert sorted(f["name"] for f in complete[0].body["files"]) == names
    assert len(set(names)) == len(names)
    assert any(n.endswith(".rpm") for n in names) and "build.log" in names

    # Koji storage: the task's scratch folder holds each file once, and nothing else (no
    # second copy, no temporary file of an interrupted placement).
    task_dir = system.koji_topdir / "scratch" / system.owner / f"task_{task['task_id']}"
    assert sorted(p.name for p in task_dir.iterdir()) == names
    for f in files:
        path = system.koji_topdir / f["path"]
        assert path.parent == task_dir
        assert sha256_file(path) == f["sha256"]

    # The collector's own record: every lease of the task together stored each file once.
    conn = await asyncpg.connect(system.postgres.url)
    try:
        rows = await conn.fetch(
            "SELECT f.name, f.path FROM collector.stored_files f"
            " JOIN collector.leases l USING (lease_id) WHERE l.task_id = $1",
            task["task_id"],
        )
    finally:
        await conn.close()
    assert sorted(r["name"] for r in rows) == names
    assert sorted(r["path"] for r in rows) == sorted(f["path"] for f in files)
    return stored[0]


# -- the scenarios --------------------------------------------------------------------------


async def test_dispatcher_crash_loses_no_request_and_no_result(system, example_srpm, tap):
    request = request_message(system, await request_body(system, example_srpm, scratch=True))
    try:
        await kill(system, "dispatcher")
        # Published while the dispatcher is dead: the request waits in its durable queue.
        await publish(system, request)
        await asyncio.sleep(1)
        await restart_process(system, "dispatcher")
        build_id = await build_id_of(system, request)

        # Crash it again once the result is attested: the verdict and `build.stored` now
        # wait in its queue as well.
        await tap.wait(TaskFinishedV1, timeout=60, build_id=build_id)
        await kill(system, "dispatcher")
        await tap.wait(BuildStoredV1, timeout=60, build_id=build_id)
        await restart_process(system, "dispatcher")
        await completed(tap, build_id, timeout=60)
    finally:
        await asyncio.to_thread(restore, system)
    await assert_built_once(system, tap, request, build_id)


async def test_collector_crash_before_uploads_is_survived_by_upload_retries(system, slow_srpm, tap):
    request, build_id = await start_build(system, slow_srpm)
    leased = await tap.wait(TaskLeasedV1, timeout=60, build_id=build_id)
    host = leased.body["host"]
    try:
        # The builder has fetched the SRPM from the collector and builds: crash the collector.
        await wait_building(system, host, slow_srpm)
        await kill(system, "collector")
        # The build ends and the builder uploads at once, to a dead collector: the uploads
        # fail and are retried, and the collector is back a few seconds later.
        await wait_until(
            "the build to end",
            lambda: host not in build_processes(system, slow_srpm),
            SLOW_BUILD_SECONDS + 30,
        )
        await asyncio.sleep(3)
        await restart_process(system, "collector")
        await completed(tap, build_id, timeout=120)
    finally:
        await asyncio.to_thread(restore, system)
    stored = await assert_built_once(system, tap, request, build_id)
    assert stored.body["host"] == host
    assert len(tap.of(TaskLeasedV1, build_id=build_id)) == 1  # no requeue was needed


async def test_verifier_crash_during_build_verifies_once(system, slow_srpm, tap):
    request, build_id = await start_build(system, slow_srpm)
    leased = await tap.wait(TaskLeasedV1, timeout=60, build_id=build_id)
    try:
        await wait_building(system, leased.body["host"], slow_srpm)
        await kill(system, "verifier")
        # The attestation is published while the verifier is dead: it waits in its queue.
        await tap.wait(TaskFinishedV1, timeout=60, build_id=build_id)
        await asyncio.sleep(1)
        assert not tap.of(TaskVerifiedV1, build_id=build_id)
        await restart_process(system, "verifier")
        await completed(tap, build_id, timeout=60)
    finally:
        await asyncio.to_thread(restore, system)
    await assert_built_once(system, tap, request, build_id)
    assert len(distinct(tap, TaskVerifiedV1, build_id=build_id)) == 1


async def test_collector_down_while_verifier_checks_uploads_only_delays_the_build(
    system, slow_srpm, tap
):
    """The verifier asks the collector what was uploaded; while it cannot, it must wait."""
    request, build_id = await start_build(system, slow_srpm)
    leased = await tap.wait(TaskLeasedV1, timeout=60, build_id=build_id)
    try:
        await wait_building(system, leased.body["host"], slow_srpm)
        await kill(system, "verifier")
        finished = await tap.wait(TaskFinishedV1, timeout=60, build_id=build_id)
        await kill(system, "collector")
        # The verifier comes back first and finds the collector down, for longer than the
        # queue's delivery limit (5) would allow if each try were a redelivery.
        log_start = len(log_of(system, "verifier"))
        await restart_process(system, "verifier")
        await asyncio.sleep(8)
        assert b"will retry message skyline.task.finished" in log_of(system, "verifier")[log_start:]
        await restart_process(system, "collector")
        await completed(tap, build_id, timeout=60)
    finally:
        await asyncio.to_thread(restore, system)
    await assert_built_once(system, tap, request, build_id)
    # The honest attestation was verified, not dead-lettered and replaced by a rebuild.
    assert [m.body["lease_id"] for m in distinct(tap, TaskLeasedV1, build_id=build_id)] == [
        leased.body["lease_id"]
    ]
    assert finished.id not in await dead_lettered(system, "skyline.verifier")


async def dead_lettered(system: LocalSystem, queue: str) -> set[str]:
    """Message ids in `queue`'s dead-letter queue (left there: they are not acked)."""
    # Read as the service that owns the queue: nobody else may read it.
    connection = await aio_pika.connect(system.url_of(f"skyline-{queue.split('.')[1]}"))
    try:
        channel = await connection.channel()
        dead = await channel.get_queue(f"{queue}.dead", ensure=False)
        ids = set()
        while (m := await dead.get(fail=False)) is not None:
            ids.add(m.message_id)
        return ids
    finally:
        await connection.close()


async def test_broker_restart_while_idle_then_builds_complete(system, example_srpm, new_tap):
    async def idle() -> bool:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{system.url('dispatcher')}/api/v1/queue") as response:
                tasks = (await response.json())["tasks"]
        return not any(tasks.get(state) for state in ("queued", "leased", "verified"))

    deadline = time.monotonic() + 60
    while not await idle():  # earlier tests' builds may still be finishing
        assert time.monotonic() < deadline, "the system did not become idle"
        await asyncio.sleep(0.5)
    body = await request_body(system, example_srpm, scratch=True)  # over HTTP, not the bus
    try:
        await asyncio.to_thread(system.rabbitmq.stop)
        await asyncio.to_thread(system.rabbitmq.start)
        # Nothing is restarted by hand: every service and builder must reconnect and consume
        # again by itself. Two builds at once, so that both builders are likely to get one.
        async with new_tap() as tap:
            requests = [request_message(system, body), request_message(system, body)]
            for request in requests:
                await publish(system, request)
            build_ids = [await build_id_of(system, r, timeout=90) for r in requests]
            for build_id in build_ids:
                await completed(tap, build_id, timeout=90)
            for request, build_id in zip(requests, build_ids, strict=True):
                await assert_built_once(system, tap, request, build_id)
                # Built under its first lease: a builder that had stopped consuming its lease
                # queue would have sat on the lease until it expired and was requeued.
                assert len(distinct(tap, TaskLeasedV1, build_id=build_id)) == 1
            for host in system.builder_names():  # both publish again (heartbeats)
                assert tap.of(HostHeartbeatV1, host=host), f"no heartbeat from {host}"
        stopped = [n for n in [*SERVICES, *system.builder_names()] if not pid_of(system, n)]
        assert not stopped, f"died with the broker: {stopped}"
    finally:
        await asyncio.to_thread(restore, system)


async def test_builder_crash_lease_expires_and_task_is_requeued(system, slow_srpm, tap):
    request, build_id = await start_build(system, slow_srpm)
    first = await tap.wait(TaskLeasedV1, timeout=60, build_id=build_id)
    host = first.body["host"]
    lease_seconds = load_config(system.config_file).dispatcher.lease_seconds
    try:
        await kill(system, host)
        # The dead host never reports back: its lease expires and the dispatcher's sweep
        # requeues the task, which goes to the other (live) builder.
        second = await tap.wait(
            TaskLeasedV1,
            timeout=lease_seconds + 40,
            where=lambda m: m.body["lease_id"] != first.body["lease_id"],
            build_id=build_id,
        )
        # Back now, the crashed builder finds its old lease expired (in its journal, or
        # redelivered) and must drop it rather than build it again.
        await restart_process(system, host)
        await completed(tap, build_id, timeout=90)
    finally:
        await asyncio.to_thread(restore, system)
    stored = await assert_built_once(system, tap, request, build_id)
    assert stored.body["host"] == second.body["host"]
    assert not tap.of(TaskFinishedV1, lease_id=first.body["lease_id"])


# A SIGKILLed agent does not take its build process with it: rpmbuild runs on in the build
# path that every builder of a machine shares, while the agent's death released the lock on
# it. A build started there meanwhile (here: the restarted agent's) is wrecked when the orphan
# ends, since `rpmbuild --rebuild` then deletes the sources it unpacked: the build fails.
@pytest.mark.parametrize(
    "restart",
    [
        "when-its-orphaned-build-ended",
        # The orphaned rpmbuild holds the build-path lock, so the resumed build waits for it.
        "at-once",
    ],
)
async def test_builder_crash_mid_build_resumes_from_journal(system, slow_srpm, tap, restart):
    request, build_id = await start_build(system, slow_srpm)
    leased = await tap.wait(TaskLeasedV1, timeout=60, build_id=build_id)
    host = leased.body["host"]
    try:
        await wait_building(system, host, slow_srpm)
        await kill(system, host)
        if restart != "at-once":
            await wait_until(
                "the orphaned build to end", lambda: not orphans(system, slow_srpm), 60
            )
        # Restarted while its lease is still valid, it resumes the lease from its journal.
        await restart_process(system, host)
        await completed(tap, build_id, timeout=60)
    finally:
        await wait_until("builds to end", lambda: not orphans(system, slow_srpm), 60)
        await asyncio.to_thread(restore, system)
    stored = await assert_built_once(system, tap, request, build_id)
    assert stored.body["host"] == host
    assert [m.body["lease_id"] for m in distinct(tap, TaskLeasedV1, build_id=build_id)] == [
        leased.body["lease_id"]
    ]
