"""Builder agent without a broker: a fake bus and one local aiohttp server standing in for the
registry, the SRPM source and the collector (tests/builder_fakes.py, held to the real services
by tests/integration/builder/test_builder_fakes_contract.py). The real end-to-end run is the
lead's test."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fedora_messaging import message as fm
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from skyline_messages import (
    HostHeartbeatV1,
    TaskFinishedV1,
    TaskLeasedV1,
    TaskRevokedV1,
    TaskStartedV1,
)

from services.builder import __main__ as builder_main
from services.builder import client, rpmbuild, runner, sandbox
from services.builder.agent import Agent
from services.builder.journal import Journal
from services.common import telemetry
from services.common.config import BuilderConfig, Config
from services.common.errors import ConfigError
from services.common.rpmfiles import result_set_digest
from services.common.signing import load_or_create_key, public_key_b64, sign_body, verify_body
from tests.builder_fakes import SRPM, TOKEN, Services

HOST = "builder-01"
SRPM_SHA = hashlib.sha256(SRPM).hexdigest()
NVR = "skyline-hello-1.0-1"
RPM_NAME = f"{NVR}.noarch.rpm"
ENV = {"rpmbuild": "RPM version 4.18.0", "os": "fedora 41"}
SANDBOX_PROBLEM = sandbox.bwrap_problem()
LEASE_A = "3f2b8c1e-9a4d-4e6f-8b7a-1c2d3e4f5a6b"
LEASE_B = "7d1e2f3a-4b5c-4d6e-8f7a-9b0c1d2e3f4a"
LEASE_C = "0a1b2c3d-4e5f-4a6b-8c7d-8e9f0a1b2c3d"
KEY = Ed25519PrivateKey.generate()  # for client calls made without an agent


# -- stand-ins ---------------------------------------------------------------------------------


class FakeBus:
    """Records what the agent publishes and the handler it subscribes."""

    def __init__(self) -> None:
        self.published: list[fm.Message] = []
        self.subscriptions: list[tuple[str, list[str], int]] = []
        self.handler: Callable[[fm.Message], Any] | None = None
        self.fail_finished = 0  # refuse this many TaskFinishedV1 publishes (broker away)
        self.consuming = False
        self.closed = False
        self.credentials: tuple[str, str] | None = None
        self.declared: list[bool] = []

    def use_credentials(self, user: str, password: str) -> None:
        self.credentials = (user, password)

    async def connect(self) -> None:
        pass

    async def stop_consuming(self) -> None:
        self.consuming = False

    async def close(self) -> None:
        await self.stop_consuming()
        self.closed = True

    async def publish(self, msg: fm.Message) -> None:
        msg.validate()
        if isinstance(msg, TaskFinishedV1) and self.fail_finished:
            self.fail_finished -= 1
            raise ConnectionError("broker away")
        self.published.append(msg)

    async def subscribe(
        self,
        queue_name: str,
        routing_keys: Iterable[str],
        on_message: Any,
        *,
        prefetch: int,
        declare: bool,
    ) -> None:
        self.declared.append(declare)
        self.subscriptions.append((queue_name, list(routing_keys), prefetch))
        self.handler = on_message
        self.consuming = True

    def of(self, cls: type[fm.Message]) -> list[fm.Message]:
        return [m for m in self.published if isinstance(m, cls)]


@pytest.fixture
async def services() -> AsyncIterator[Services]:
    state = Services()
    server = TestServer(state.app())
    await server.start_server()
    state.url = str(server.make_url("")).rstrip("/")
    yield state
    await server.close()


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Replace the real build with a fast fake; each call is recorded."""
    calls: list[dict[str, Any]] = []

    def fake_build(srpm: Path, **kwargs: Any) -> rpmbuild.BuildOutcome:
        calls.append({"srpm": srpm, **kwargs})
        results: Path = kwargs["results_dir"]
        rpm = results / RPM_NAME
        rpm.write_bytes(b"rpm of " + srpm.read_bytes())
        log = results / rpmbuild.LOG_NAME
        log.write_text(f"built at {time.time()}\n")
        return rpmbuild.BuildOutcome(True, [rpm], log, 0, 1.5)

    monkeypatch.setattr(rpmbuild, "build", fake_build)
    monkeypatch.setattr(rpmbuild, "environment_manifest", lambda **_: dict(ENV))
    return calls


def make_config(tmp_path: Path, services: Services, **builder: Any) -> Config:
    settings = {
        "host": HOST,
        "owner": "alice",
        "arches": ["noarch", "x86_64"],
        "releases": ["f41"],
        "slots": 2,
        "workdir": str(tmp_path / "work"),
        "registry_url": services.url,
        "collector_url": services.url,
        "enrol_token": TOKEN,
        "heartbeat_seconds": 0.05,
        "build_path": str(tmp_path / "build"),
        "backend": "rpmbuild",
        "build_timeout": 123.0,
        # Where bwrap cannot sandbox (e.g. a container without user namespaces), the agent
        # would refuse to start; the tests of the sandbox itself skip there instead.
        "allow_unsandboxed": SANDBOX_PROBLEM is not None,
        **builder,
    }
    return Config(builder=BuilderConfig(**settings))


def lease_msg(
    services: Services,
    lease_id: str = LEASE_A,
    *,
    host: str = HOST,
    sha: str = SRPM_SHA,
    expires_in: float = 3600,
) -> TaskLeasedV1:
    expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + expires_in))
    msg = TaskLeasedV1(
        topic=TaskLeasedV1.topic_for(host),
        body={
            "task_id": 11,
            "build_id": 7,
            "lease_id": lease_id,
            "host": host,
            "arch": "noarch",
            "owner": "bob",
            "nvr": NVR,
            "srpm_url": f"{services.url}/srpms/{NVR}.src.rpm",
            "srpm_sha256": sha,
            "release": "f41",
            "lease_expires": expires,
        },
    )
    msg.validate()
    return msg


async def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def running(agent: Agent, bus: FakeBus) -> AsyncIterator[Agent]:
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    await eventually(lambda: bus.handler is not None or task.done())
    if task.done():
        await task  # raise what went wrong
    try:
        yield agent
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


def public_key(agent: Agent) -> str:
    return public_key_b64(load_or_create_key(agent.key_file))


async def deliver(bus: FakeBus, msg: fm.Message) -> None:
    assert bus.handler is not None
    await bus.handler(msg)


# -- the agent ---------------------------------------------------------------------------------


async def test_enrols_subscribes_and_heartbeats(tmp_path: Path, services: Services) -> None:
    bus = FakeBus()
    agent = Agent(make_config(tmp_path, services), bus=bus)
    async with running(agent, bus):
        await eventually(lambda: len(bus.of(HostHeartbeatV1)) >= 2)
        key = public_key(agent)
    profile, auth = services.enrolments[0]
    assert auth == f"Bearer {TOKEN}"
    assert profile["host"] == HOST and profile["owner"] == "alice"
    assert profile["public_key"] == key
    assert profile["arches"] == ["noarch", "x86_64"] and profile["releases"] == ["f41"]
    assert profile["cpus"] >= 1 and profile["memory_mb"] > 0 and profile["disk_gb"] >= 0
    assert profile["sandbox"] == agent.sandbox.kind  # as its heartbeats say
    keys = [f"skyline.task.leased.{HOST}", f"skyline.task.revoked.{HOST}"]
    assert bus.subscriptions == [(f"skyline.builder.{HOST}", keys, 2)]
    # The registry made the host's own broker user and queue: the agent connects as that user
    # and consumes without declaring anything.
    assert bus.credentials == (f"host-{HOST}", "pw1") and bus.declared == [False]
    beat = bus.of(HostHeartbeatV1)[0]
    assert beat.topic == f"skyline.host.heartbeat.{HOST}"
    assert beat.body["free_slots"] == 2 and beat.body["running"] == 0
    verify_body(beat.body, key)
    assert bus.closed
    assert (tmp_path / "work/host.key").stat().st_mode & 0o777 == 0o600


async def test_successful_build_is_uploaded_and_attested(
    tmp_path: Path, services: Services, builds: list[dict[str, Any]]
) -> None:
    bus = FakeBus()
    agent = Agent(make_config(tmp_path, services), bus=bus)
    async with running(agent, bus):
        await deliver(bus, lease_msg(services))
        await eventually(lambda: bool(bus.of(TaskFinishedV1)))
        key = public_key(agent)

    [call] = builds
    assert call["arch"] == "noarch" and call["backend"] == "rpmbuild"
    assert call["timeout"] == 123.0 and call["build_path"] == tmp_path / "build"
    assert call["srpm"].name == f"{NVR}.src.rpm"

    [started] = bus.of(TaskStartedV1)
    verify_body(started.body, key)
    assert started.body["lease_id"] == LEASE_A
    [finished] = bus.of(TaskFinishedV1)
    body = finished.body
    verify_body(body, key)
    rpm_bytes = services.uploads[(LEASE_A, RPM_NAME)]
    log_bytes = services.uploads[(LEASE_A, "build.log")]
    rpm_entry = {"name": RPM_NAME, "size": len(rpm_bytes), "sha256": _sha(rpm_bytes)}
    assert body["files"] == [
        rpm_entry,
        {"name": "build.log", "size": len(log_bytes), "sha256": _sha(log_bytes)},
    ]
    assert body["status"] == "succeeded"
    assert body["srpm_sha256"] == SRPM_SHA
    # The log is attested but left out of the digest: logs are not reproducible.
    assert body["result_digest"] == result_set_digest([(RPM_NAME, _sha(rpm_bytes))])
    assert body["env_manifest"] == ENV
    assert body["env_digest"] == rpmbuild.manifest_digest(ENV)
    assert body["duration"] == 1.5
    assert "failure" not in body  # only a failed task says whose failure it is
    assert (body["task_id"], body["build_id"], body["host"], body["nvr"]) == (11, 7, HOST, NVR)

    entry = Journal(agent.workdir / "journal").load(LEASE_A)
    assert entry is not None
    assert entry["state"] == "finished" and entry["published"] is True
    assert entry["finished"] == {"id": finished.id, "body": body}
    assert not (agent.workdir / "tasks" / LEASE_A).exists()  # the collector has the files


async def test_srpm_mismatch_fails_without_building(
    tmp_path: Path, services: Services, builds: list[dict[str, Any]]
) -> None:
    bus = FakeBus()
    agent = Agent(make_config(tmp_path, services), bus=bus)
    expected = hashlib.sha256(b"the sources that were requested").hexdigest()
    async with running(agent, bus):
        await deliver(bus, lease_msg(services, sha=expected))
        await eventually(lambda: bool(bus.of(TaskFinishedV1)))
        key = public_key(agent)

    assert builds == []
    [finished] = bus.of(TaskFinishedV1)
    body = finished.body
    verify_body(body, key)
    assert body["status"] == "failed"
    assert body["srpm_sha256"] == SRPM_SHA  # what was actually served, not what was asked
    assert body["result_digest"] == result_set_digest([])
    log_text = services.uploads[(LEASE_A, "build.log")].decode()
    assert SRPM_SHA in log_text and expected in log_text and "not building" in log_text
    assert [f["name"] for f in body["files"]] == ["build.log"]


async def test_tampered_attestation_does_not_verify(
    tmp_path: Path, services: Services, builds: list[dict[str, Any]]
) -> None:
    bus = FakeBus()
    agent = Agent(make_config(tmp_path, services), bus=bus)
    async with running(agent, bus):
        await deliver(bus, lease_msg(services))
        await eventually(lambda: bool(bus.of(TaskFinishedV1)))
        key = public_key(agent)
    body = dict(bus.of(TaskFinishedV1)[0].body)
    body["result_digest"] = "0" * 64
    with pytest.raises(Exception, match="signature"):
        verify_body(body, key)


async def test_redelivered_lease_resends_the_recorded_attestation(
    tmp_path: Path, services: Services, builds: list[dict[str, Any]]
) -> None:
    bus = FakeBus()
    agent = Agent(make_config(tmp_path, services), bus=bus)
    async with running(agent, bus):
        await deliver(bus, lease_msg(services))
        await eventually(lambda: bool(bus.of(TaskFinishedV1)))
        await deliver(bus, lease_msg(services))  # e.g. the ack was lost
        first, again = bus.of(TaskFinishedV1)
    assert len(builds) == 1 and len(bus.of(TaskStartedV1)) == 1
    # The same message id, so consumers that already have it skip it.
    assert (again.id, again.body) == (first.id, first.body)


async def test_lost_publish_is_retried(
    tmp_path: Path, services: Services, builds: list[dict[str, Any]]
) -> None:
    bus = FakeBus()
    bus.fail_finished = 2
    agent = Agent(make_config(tmp_path, services), bus=bus)
    async with running(agent, bus):
        await deliver(bus, lease_msg(services))
        await eventually(lambda: bool(bus.of(TaskFinishedV1)))
    assert len(builds) == 1
    entry = Journal(agent.workdir / "journal").load(LEASE_A)
    assert entry is not None and entry["published"] is True


async def test_restart_resends_and_resumes_from_the_journal(
    tmp_path: Path, services: Services, builds: list[dict[str, Any]]
) -> None:
    config = make_config(tmp_path, services)
    journal = Journal(config.path(config.builder.workdir) / "journal")
    key = load_or_create_key(config.path(config.builder.workdir) / "host.key")
    # A: attested but never sent. B: accepted, still valid. C: accepted, expired meanwhile.
    unsent_body = runner.attestation(
        lease_msg(services, LEASE_A),
        status="failed",
        srpm_sha256=SRPM_SHA,
        rpms=[],
        logs=[],
        env_manifest=ENV,
        duration=0,
    )
    sent_body = sign_body(unsent_body, key)
    journal.save(
        LEASE_A,
        {
            "lease": lease_msg(services, LEASE_A).body,
            "state": "finished",
            "finished": {"id": "msg-a", "body": sent_body},
            "published": False,
        },
    )
    journal.save(LEASE_B, {"lease": lease_msg(services, LEASE_B).body, "state": "accepted"})
    expired = lease_msg(services, LEASE_C, expires_in=-60).body
    journal.save(LEASE_C, {"lease": expired, "state": "accepted"})

    bus = FakeBus()
    agent = Agent(config, bus=bus)
    async with running(agent, bus):
        await eventually(lambda: len(bus.of(TaskFinishedV1)) == 2)

    resent, resumed = bus.of(TaskFinishedV1)
    assert (resent.id, resent.body) == ("msg-a", sent_body)
    assert resumed.body["lease_id"] == LEASE_B and resumed.body["status"] == "succeeded"
    assert len(builds) == 1
    c = journal.load(LEASE_C)
    assert c is not None and c["state"] == "expired"
    a = journal.load(LEASE_A)
    assert a is not None and a["published"] is True


async def test_lease_for_another_host_is_ignored(
    tmp_path: Path, services: Services, builds: list[dict[str, Any]]
) -> None:
    bus = FakeBus()
    agent = Agent(make_config(tmp_path, services), bus=bus)
    async with running(agent, bus):
        await deliver(bus, lease_msg(services, host="builder-02"))
        await asyncio.sleep(0.1)
    assert builds == [] and not bus.of(TaskStartedV1)
    assert list(Journal(agent.workdir / "journal").entries()) == []


async def test_agent_error_is_reported_as_failed(
    tmp_path: Path, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_build(srpm: Path, **kwargs: Any) -> rpmbuild.BuildOutcome:
        raise OSError("disk on fire")

    monkeypatch.setattr(rpmbuild, "build", broken_build)
    monkeypatch.setattr(rpmbuild, "environment_manifest", lambda **_: dict(ENV))
    bus = FakeBus()
    agent = Agent(make_config(tmp_path, services), bus=bus)
    async with running(agent, bus):
        await deliver(bus, lease_msg(services))
        await eventually(lambda: bool(bus.of(TaskFinishedV1)))
        key = public_key(agent)
    body = bus.of(TaskFinishedV1)[0].body
    verify_body(body, key)
    assert body["status"] == "failed" and body["srpm_sha256"] == SRPM_SHA
    assert body["result_digest"] == result_set_digest([])
    assert "disk on fire" in services.uploads[(LEASE_A, "agent-error.log")].decode()
    assert body["failure"] == "agent"
    assert [f["name"] for f in body["files"]] == ["agent-error.log"]


def gated_build(release: asyncio.Event, *, succeeded: bool) -> Any:
    """A stand-in for rpmbuild.build that runs (in its thread) until `release` is set."""
    loop = asyncio.get_running_loop()

    def build(srpm: Path, **kwargs: Any) -> rpmbuild.BuildOutcome:
        asyncio.run_coroutine_threadsafe(release.wait(), loop).result(5)
        log = kwargs["results_dir"] / rpmbuild.LOG_NAME
        log.write_text("built\n" if succeeded else "failed\n")
        return rpmbuild.BuildOutcome(succeeded, [], log, 0 if succeeded else 1, 0.1)

    return build


async def test_heartbeat_counts_running_tasks(
    tmp_path: Path, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = asyncio.Event()
    monkeypatch.setattr(rpmbuild, "build", gated_build(release, succeeded=False))
    monkeypatch.setattr(rpmbuild, "environment_manifest", lambda **_: dict(ENV))
    bus = FakeBus()
    agent = Agent(make_config(tmp_path, services), bus=bus)
    async with running(agent, bus):
        await deliver(bus, lease_msg(services))
        await eventually(lambda: any(b.body["running"] == 1 for b in bus.of(HostHeartbeatV1)))
        busy = next(b for b in bus.of(HostHeartbeatV1) if b.body["running"] == 1)
        assert busy.body["free_slots"] == 1
        release.set()
        await eventually(lambda: bool(bus.of(TaskFinishedV1)))
    assert bus.of(TaskFinishedV1)[0].body["status"] == "failed"
    assert [f["name"] for f in bus.of(TaskFinishedV1)[0].body["files"]] == ["build.log"]


def test_config_is_checked(tmp_path: Path) -> None:
    good = Config(
        builder=BuilderConfig(
            host="b1",
            owner="alice",
            workdir=str(tmp_path),
            allow_unsandboxed=SANDBOX_PROBLEM is not None,
        )
    )
    Agent(good, bus=FakeBus())
    for bad in ({"host": "Bad_Name"}, {"owner": ""}, {"build_path": "relative"}, {"slots": 0}):
        config = dataclasses.replace(good, builder=dataclasses.replace(good.builder, **bad))
        with pytest.raises(ConfigError):
            Agent(config, bus=FakeBus())


# -- the HTTP client ---------------------------------------------------------------------------


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


ENROL_KEY = Ed25519PrivateKey.generate()


def profile() -> client.HostProfile:
    key = public_key_b64(ENROL_KEY)
    return client.HostProfile(HOST, "alice", key, ["noarch"], ["f41"], 4, 8192, 100)


async def test_enrol_conflict_tells_the_volunteer_what_to_do(services: Services) -> None:
    services.enrol_status = [409]
    async with aiohttp.ClientSession() as http:
        with pytest.raises(client.EnrolmentError) as err:
            await client.enrol(
                http, services.url, profile(), key_file=Path("/w/host.key"), signing_key=ENROL_KEY
            )
    text = str(err.value)
    assert "already has a host named 'builder-01'" in text
    assert "/w/host.key" in text and "--host" in text and "host name taken" in text


async def test_enrol_retries_a_registry_that_is_starting(services: Services) -> None:
    services.enrol_status = [503, 502]
    async with aiohttp.ClientSession() as http:
        reply = await client.enrol(
            http, services.url, profile(), token=TOKEN, base_delay=0.01, signing_key=ENROL_KEY
        )
    assert reply["trust"] == "untrusted" and len(services.enrolments) == 3


async def test_enrol_gives_up_on_an_unreachable_registry() -> None:
    async with aiohttp.ClientSession() as http:
        with pytest.raises(client.EnrolmentError, match="gave up"):
            await client.enrol(
                http,
                "http://127.0.0.1:9",
                profile(),
                deadline=0.2,
                base_delay=0.02,
                signing_key=ENROL_KEY,
            )


async def _upload(services: Services, path: Path, **kwargs: Any) -> None:
    """client.upload as builder-01 with KEY (enrolled at the stand-in collector)."""
    services.keys[HOST] = public_key_b64(KEY)
    async with aiohttp.ClientSession() as http:
        await client.upload(
            http,
            services.url,
            LEASE_A,
            path,
            _sha(path.read_bytes()),
            host=HOST,
            key=KEY,
            base_delay=0.01,
            **kwargs,
        )


async def test_upload_retries_404_and_503_then_succeeds(services: Services, tmp_path: Path) -> None:
    path = tmp_path / "x+y^z~1.noarch.rpm"  # characters RPM names use, escaped in the URL
    path.write_bytes(b"payload")
    services.upload_status = [404, 503]
    await _upload(services, path)
    assert services.uploads == {(LEASE_A, path.name): b"payload"}
    # Each try is signed (by the stand-in's check) afresh: a retry minutes later must not be
    # refused as stale.
    stamps = [f["signed_at"] for f in services.upload_signatures]
    assert len(stamps) == 3 and len(set(stamps)) == 3
    assert {f["host"] for f in services.upload_signatures} == {HOST}


@pytest.mark.parametrize("status", [401, 403, 422])
async def test_upload_refused_raises_the_servers_reason(
    services: Services, tmp_path: Path, status: int
) -> None:
    path = tmp_path / "build.log"
    path.write_bytes(b"log")
    services.upload_status = [status]
    with pytest.raises(client.UploadError, match=rf"HTTP {status}: nope \({status}\)"):
        await _upload(services, path)
    assert len(services.upload_signatures) == 1  # final: not tried again


async def test_upload_gives_up_after_bounded_tries(services: Services, tmp_path: Path) -> None:
    path = tmp_path / "build.log"
    path.write_bytes(b"log")
    services.upload_status = [500] * 10
    with pytest.raises(client.UploadError, match="after 3 tries"):
        await _upload(services, path, tries=3)


async def test_fetch_checks_scheme_and_size(services: Services, tmp_path: Path) -> None:
    dest = tmp_path / "a.src.rpm"
    async with aiohttp.ClientSession() as http:
        with pytest.raises(client.FetchError, match="only http"):
            await client.fetch_srpm(http, "file:///etc/passwd", dest, SRPM_SHA, 100)
        with pytest.raises(client.FetchError, match="limit"):
            await client.fetch_srpm(http, f"{services.url}/srpms/a", dest, SRPM_SHA, 5)
        assert not dest.exists() and not list(tmp_path.iterdir())
        got = await client.fetch_srpm(http, f"{services.url}/srpms/a", dest, "0" * 64, 10**6)
    assert got == SRPM_SHA and dest.read_bytes() == SRPM


async def test_stop_interrupts_builds_after_the_grace_period(
    tmp_path: Path, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    def endless_build(srpm: Path, **kwargs: Any) -> rpmbuild.BuildOutcome:
        # Like rpmbuild.build: the build runs in its own session, out of reach of our signals.
        subprocess.Popen(["sleep", "60"], start_new_session=True).wait()
        raise AssertionError("the build was killed: its result must not be used")

    monkeypatch.setattr(rpmbuild, "build", endless_build)
    monkeypatch.setattr(rpmbuild, "environment_manifest", lambda **_: dict(ENV))
    bus = FakeBus()
    agent = Agent(make_config(tmp_path, services), bus=bus, grace=0.2)
    started = time.monotonic()
    async with running(agent, bus):
        await deliver(bus, lease_msg(services))
        await eventually(lambda: bool(bus.of(TaskStartedV1)))
        await asyncio.sleep(0.2)  # let the build start
    assert time.monotonic() - started < 5
    assert not bus.of(TaskFinishedV1)
    # Not reported as failed (the package did not fail): the next start resumes it.
    entry = Journal(agent.workdir / "journal").load(LEASE_A)
    assert entry is not None and entry["state"] == "accepted"
    assert bus.of(HostHeartbeatV1)[-1].body["free_slots"] == 0


async def test_stop_stops_consuming_but_lets_running_builds_report(
    tmp_path: Path, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = asyncio.Event()
    monkeypatch.setattr(rpmbuild, "build", gated_build(release, succeeded=True))
    monkeypatch.setattr(rpmbuild, "environment_manifest", lambda **_: dict(ENV))
    bus = FakeBus()
    agent = Agent(make_config(tmp_path, services), bus=bus, grace=5)
    stop = asyncio.Event()
    run = asyncio.create_task(agent.run(stop))
    await eventually(lambda: bus.consuming)
    await deliver(bus, lease_msg(services, LEASE_A))
    await eventually(lambda: bool(bus.of(TaskStartedV1)))
    stop.set()
    await eventually(lambda: not bus.consuming)
    assert not run.done() and not bus.closed  # the build still runs, the bus still publishes
    # A delivery that raced the cancel is journaled for the next run, not started now.
    await deliver(bus, lease_msg(services, LEASE_B))
    release.set()
    await asyncio.wait_for(run, 5)
    assert [m.body["lease_id"] for m in bus.of(TaskFinishedV1)] == [LEASE_A]
    assert [m.body["lease_id"] for m in bus.of(TaskStartedV1)] == [LEASE_A]
    entry = agent.journal.load(LEASE_B)
    assert entry is not None and entry["state"] == "accepted"
    assert bus.closed


def test_command_line_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SKYLINE_CONF", raising=False)
    args = builder_main.parse_args(["--host", "b2", "--owner", "carol", "--workdir", "w"])
    config = builder_main.with_overrides(Config(), args)
    assert (config.builder.host, config.builder.owner) == ("b2", "carol")
    assert config.builder.workdir == str(tmp_path / "w")


async def test_refused_upload_fails_the_task_with_both_logs(
    tmp_path: Path, services: Services, builds: list[dict[str, Any]]
) -> None:
    services.upload_status = [422]  # the RPM, the first upload, is refused
    bus = FakeBus()
    agent = Agent(make_config(tmp_path, services), bus=bus)
    async with running(agent, bus):
        await deliver(bus, lease_msg(services))
        await eventually(lambda: bool(bus.of(TaskFinishedV1)))
    body = bus.of(TaskFinishedV1)[0].body
    assert body["status"] == "failed" and body["result_digest"] == result_set_digest([])
    assert [f["name"] for f in body["files"]] == ["build.log", "agent-error.log"]
    assert "HTTP 422" in services.uploads[(LEASE_A, "agent-error.log")].decode()


# -- the sandbox --------------------------------------------------------------------------------


@pytest.mark.skipif(SANDBOX_PROBLEM is not None, reason=f"no sandbox: {SANDBOX_PROBLEM}")
async def test_builds_are_sandboxed_and_the_heartbeat_says_so(
    tmp_path: Path, services: Services, builds: list[dict[str, Any]]
) -> None:
    bus = FakeBus()
    agent = Agent(make_config(tmp_path, services), bus=bus)
    assert agent.sandbox.kind == "bwrap"
    # The key and journal (the work directory) and the agent's home are hidden from builds.
    assert agent.workdir in agent.sandbox.hide and Path.home().resolve() in agent.sandbox.hide
    async with running(agent, bus):
        await eventually(lambda: bool(bus.of(HostHeartbeatV1)))
        await deliver(bus, lease_msg(services))
        await eventually(lambda: bool(bus.of(TaskFinishedV1)))
    assert bus.of(HostHeartbeatV1)[0].sandbox == "bwrap"
    [call] = builds
    assert call["sandbox"] is agent.sandbox


def test_no_sandbox_refuses_to_start_unless_allowed(tmp_path: Path, caplog: Any) -> None:
    # A PATH without bwrap on it: no sandbox can be made.
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    base = {"host": HOST, "owner": "alice", "workdir": str(tmp_path / "w"), "backend": "rpmbuild"}
    refused = Config(builder=BuilderConfig(**base, tool_path=str(empty)))
    with pytest.raises(
        ConfigError, match=r"refusing to build without a sandbox.*allow_unsandboxed"
    ):
        Agent(refused, bus=FakeBus())
    allowed = Config(builder=BuilderConfig(**base, tool_path=str(empty), allow_unsandboxed=True))
    agent = Agent(allowed, bus=FakeBus())
    assert agent.sandbox.kind == "none" and "not installed" in agent.sandbox.reason
    with caplog.at_level("WARNING"):
        agent._log_sandbox()
    assert "WITHOUT a sandbox" in caplog.text


async def test_unsandboxed_agent_says_so_in_its_heartbeat(
    tmp_path: Path, services: Services
) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    config = make_config(tmp_path, services, tool_path=str(empty), allow_unsandboxed=True)
    bus = FakeBus()
    agent = Agent(config, bus=bus)
    async with running(agent, bus):
        await eventually(lambda: bool(bus.of(HostHeartbeatV1)))
    beat = bus.of(HostHeartbeatV1)[0]
    beat.validate()
    assert beat.sandbox == "none"


LEASE_C = "0a1b2c3d-4e5f-4a6b-8c7d-8e9f0a1b2c3d"


async def test_timed_out_build_is_the_agents_failure(
    tmp_path: Path, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    outcomes = {
        LEASE_A: dict(succeeded=False, returncode=-9, timed_out=True),
        LEASE_B: dict(succeeded=False, returncode=1, timed_out=False),
        LEASE_C: dict(succeeded=False, returncode=-9, limit_exceeded=True),
    }

    def build(srpm: Path, **kwargs: Any) -> rpmbuild.BuildOutcome:
        lease = kwargs["results_dir"].parent.name
        log = kwargs["results_dir"] / rpmbuild.LOG_NAME
        log.write_text("whatever\n")
        return rpmbuild.BuildOutcome(rpms=[], log=log, duration=1.0, **outcomes[lease])

    monkeypatch.setattr(rpmbuild, "build", build)
    monkeypatch.setattr(rpmbuild, "environment_manifest", lambda **_: dict(ENV))
    bus = FakeBus()
    agent = Agent(make_config(tmp_path, services), bus=bus)
    async with running(agent, bus):
        await deliver(bus, lease_msg(services, LEASE_A))
        await deliver(bus, lease_msg(services, LEASE_B))
        await deliver(bus, lease_msg(services, LEASE_C))
        await eventually(lambda: len(bus.of(TaskFinishedV1)) == 3)
    failures = {m.body["lease_id"]: (m.body["status"], m.failure) for m in bus.of(TaskFinishedV1)}
    assert failures == {
        LEASE_A: ("failed", "timeout"),
        LEASE_B: ("failed", "package"),
        LEASE_C: ("failed", "limit"),
    }


async def test_revoked_lease_stops_its_build_and_reports_it(
    tmp_path: Path, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = asyncio.Event()
    loop = asyncio.get_running_loop()

    def build(srpm: Path, **kwargs: Any) -> rpmbuild.BuildOutcome:
        # Like the real build: runs until its cancel event is set (or 30 s pass).
        loop.call_soon_threadsafe(started.set)
        cancelled = kwargs["cancel"].wait(30)
        log = kwargs["results_dir"] / rpmbuild.LOG_NAME
        log.write_text("skyline: build cancelled\n")
        return rpmbuild.BuildOutcome(False, [], log, -9, 0.5, cancelled=cancelled)

    monkeypatch.setattr(rpmbuild, "build", build)
    monkeypatch.setattr(rpmbuild, "environment_manifest", lambda **_: dict(ENV))
    bus = FakeBus()
    agent = Agent(make_config(tmp_path, services), bus=bus)
    async with running(agent, bus):
        assert not agent.revoke(LEASE_A)  # nothing to revoke yet
        await deliver(bus, lease_msg(services, LEASE_A))
        await asyncio.wait_for(started.wait(), 5)
        assert agent.revoke(LEASE_A)
        await eventually(lambda: bool(bus.of(TaskFinishedV1)), timeout=5)
    [finished] = bus.of(TaskFinishedV1)
    assert (finished.body["status"], finished.failure) == ("failed", "revoked")


def revoked_msg(lease: TaskLeasedV1, host: str = HOST) -> TaskRevokedV1:
    body = {k: lease.body[k] for k in ("task_id", "build_id", "lease_id", "arch", "nvr")}
    body |= {"host": host, "reason": "cancelled by alice"}
    return TaskRevokedV1(topic=TaskRevokedV1.topic_for(host), body=body)


async def test_revoked_message_stops_its_build_and_others_run_on(
    tmp_path: Path, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """task.revoked.<host> on the lease queue stops that lease's build within seconds; a
    revocation naming another host, or a lease not running here, changes nothing."""
    started: dict[str, asyncio.Event] = {LEASE_A: asyncio.Event(), LEASE_B: asyncio.Event()}
    release_b = threading.Event()
    loop = asyncio.get_running_loop()

    def build(srpm: Path, **kwargs: Any) -> rpmbuild.BuildOutcome:
        lease = kwargs["results_dir"].parent.name
        loop.call_soon_threadsafe(started[lease].set)
        cancel = kwargs["cancel"]
        cancelled = cancel.wait(30) if lease == LEASE_A else (release_b.wait(30) and False)
        log = kwargs["results_dir"] / rpmbuild.LOG_NAME
        log.write_text("skyline: build cancelled\n" if cancelled else "built\n")
        return rpmbuild.BuildOutcome(False, [], log, -9, 0.5, cancelled=cancelled)

    monkeypatch.setattr(rpmbuild, "build", build)
    monkeypatch.setattr(rpmbuild, "environment_manifest", lambda **_: dict(ENV))
    bus = FakeBus()
    agent = Agent(make_config(tmp_path, services), bus=bus)
    async with running(agent, bus):
        lease_a, lease_b = lease_msg(services, LEASE_A), lease_msg(services, LEASE_B)
        await deliver(bus, lease_a)
        await deliver(bus, lease_b)
        await asyncio.wait_for(started[LEASE_A].wait(), 5)
        await asyncio.wait_for(started[LEASE_B].wait(), 5)
        await deliver(bus, revoked_msg(lease_a, host="other-host"))  # not ours: ignored
        await deliver(bus, revoked_msg(lease_msg(services, LEASE_C)))  # not running here
        assert not bus.of(TaskFinishedV1)
        t0 = loop.time()
        await deliver(bus, revoked_msg(lease_a))
        await eventually(lambda: bool(bus.of(TaskFinishedV1)), timeout=5)
        assert loop.time() - t0 < 5
        [finished] = bus.of(TaskFinishedV1)
        assert finished.body["lease_id"] == LEASE_A
        assert (finished.body["status"], finished.failure) == ("failed", "revoked")
        assert LEASE_B in agent._tasks  # the other build runs on
        release_b.set()
        await eventually(lambda: len(bus.of(TaskFinishedV1)) == 2, timeout=5)
    assert bus.of(TaskFinishedV1)[1].failure == "package"


async def test_lease_repositories_become_the_builds_buildroot(
    tmp_path: Path,
    services: Services,
    builds: list[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fetched: list[tuple[list[str], str]] = []

    async def fetch_buildroot(session: Any, repos: list[str], arch: str, dest: Path) -> list[Path]:
        fetched.append((repos, arch))
        return [dest / "0-base-1-1.noarch.rpm"]

    monkeypatch.setattr(runner.buildroot, "fetch_buildroot", fetch_buildroot)
    msg = lease_msg(services)
    repo = "http://repo.example/chain/1/"
    msg = TaskLeasedV1(topic=msg.topic, body={**msg.body, "repos": [repo]})
    msg.validate()
    assert msg.repos == [repo]
    bus = FakeBus()
    agent = Agent(make_config(tmp_path, services), bus=bus)
    async with running(agent, bus):
        await deliver(bus, msg)
        await eventually(lambda: bool(bus.of(TaskFinishedV1)))
    assert fetched == [([repo], "noarch")]
    [call] = builds
    assert [p.name for p in call["buildroot_rpms"]] == ["0-base-1-1.noarch.rpm"]
    assert call["repos"] == [repo]


async def test_a_lease_is_built_in_its_trace_even_when_resumed_after_a_restart(
    tmp_path: Path, services: Services, builds: list[dict[str, Any]]
) -> None:
    telemetry.setup("test")  # the first call sets the provider; later ones keep it
    exporter = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    config = make_config(tmp_path, services)
    bus = FakeBus()
    agent = Agent(config, bus=bus)
    async with running(agent, bus):
        with telemetry.consume_span(lease_msg(services), {}) as consumed:  # as the bus does
            await deliver(bus, lease_msg(services))
        await eventually(lambda: bool(bus.of(TaskFinishedV1)))
    journal = Journal(config.path(config.builder.workdir) / "journal")
    # A lease accepted by an earlier run, in the trace its delivery carried.
    lease_trace = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"
    journal.save(
        LEASE_B,
        {
            "lease": lease_msg(services, LEASE_B).body,
            "state": "accepted",
            "traceparent": lease_trace,
        },
    )
    async with running(Agent(config, bus=bus), bus):
        await eventually(lambda: len(bus.of(TaskFinishedV1)) == 2)
    tasks = {
        s.attributes["lease_id"]: s
        for s in exporter.get_finished_spans()
        if s.name == "skyline.builder.task"
    }
    exporter.shutdown()
    assert tasks[LEASE_A].context.trace_id == consumed.get_span_context().trace_id
    assert tasks[LEASE_A].parent.span_id == consumed.get_span_context().span_id
    assert f"{tasks[LEASE_B].context.trace_id:032x}" == "ab" * 16
    assert f"{tasks[LEASE_B].parent.span_id:016x}" == "cd" * 8
