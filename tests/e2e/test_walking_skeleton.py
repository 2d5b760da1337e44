"""One real build through every service, on real RabbitMQ, PostgreSQL and rpmbuild."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import aio_pika
import aiohttp
import koji
import pytest
from fedora_messaging import message as fm
from skyline_messages import (
    BuildCompleteV1,
    BuildFailedV1,
    BuildRequestV1,
    BuildStoredV1,
    TaskFinishedV1,
    TaskLeasedV1,
    TaskMismatchV1,
)

from services.cli.localsystem import LocalSystem
from services.cli.submit import upload_srpm
from services.common.bus import Bus
from services.common.config import load_config
from services.common.rpmfiles import make_srpm, read_rpm_info, sha256_file
from services.common.signing import sign_body
from tests.system import enrol_host

pytestmark = pytest.mark.e2e
EXAMPLE_SPEC = Path(__file__).resolve().parents[2] / "examples/skyline-hello/skyline-hello.spec"
FM_CLI = str(Path(sys.executable).parent / "fedora-messaging")


async def request_body(system: LocalSystem, srpm: Path, **extra: object) -> dict:
    config = load_config(system.config_file)
    async with aiohttp.ClientSession() as http:
        url, digest = await upload_srpm(http, config, srpm, token=system.secret(system.owner))
    body = {"srpm_url": url, "srpm_sha256": digest, "arches": ["noarch"], "owner": system.owner}
    return body | extra


def request_message(system: LocalSystem, body: dict) -> BuildRequestV1:
    """A request as the local packager sends it: on its own routing key."""
    return BuildRequestV1(body=body, topic=BuildRequestV1.topic_for(system.owner))


def stock_publish(system: LocalSystem, tmp_path: Path, *messages: fm.Message) -> None:
    file = tmp_path / f"publish-{uuid.uuid4().hex}.json"
    file.write_text(fm.dumps(list(messages)))
    subprocess.run(
        [FM_CLI, "--conf", str(system.fm_config_file), "publish", str(file)],
        check=True,
        capture_output=True,
        timeout=60,
    )


def start_stock_consumer(system: LocalSystem, tmp_path: Path, out: Path) -> subprocess.Popen:
    callback = tmp_path / "record.py"
    callback.write_text(
        "import json\n"
        "def on_message(m):\n"
        f"    with open({str(out)!r}, 'a') as f:\n"
        "        f.write(json.dumps({'cls': type(m).__name__, 'body': m.body}) + '\\n')\n"
    )
    return subprocess.Popen(
        [
            FM_CLI,
            "--conf",
            str(system.fm_config_file),
            "consume",
            "--callback-file",
            f"{callback}:on_message",
            "--routing-key",
            "skyline.build.complete",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def build_id_of(system: LocalSystem, request: fm.Message, timeout: float = 60) -> int:
    """The build the dispatcher made of `request` (found by the request's message id)."""
    url = f"{system.url('dispatcher')}/api/v1/builds"
    async with aiohttp.ClientSession() as http:
        for _ in range(int(timeout * 10)):
            async with http.get(url, params={"request_id": request.id}) as response:
                builds = (await response.json())["builds"]
            if builds:
                return builds[0]["build_id"]
            await asyncio.sleep(0.1)
    raise AssertionError(f"no build for request {request.id}")


async def wait_until(predicate, timeout: float = 60) -> None:
    for _ in range(int(timeout * 10)):
        if predicate():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("timed out")


async def test_stock_request_ends_as_rpm_in_koji_storage(system, example_srpm, tap, tmp_path):
    consumed = tmp_path / "consumed.jsonl"
    consumer = start_stock_consumer(system, tmp_path, consumed)
    try:
        # The stock consumer's queue exists once a probe message reaches it.
        await asyncio.sleep(3)
        request = request_message(system, await request_body(system, example_srpm))
        stock_publish(system, tmp_path, request)

        build_id = await build_id_of(system, request)
        finished = await tap.wait(TaskFinishedV1, timeout=120, build_id=build_id)
        complete = await tap.wait(BuildCompleteV1, timeout=120, build_id=build_id)
        await wait_until(lambda: consumed.exists() and "BuildCompleteV1" in consumed.read_text())
    finally:
        consumer.terminate()
        consumer.wait(timeout=30)

    line = next(json.loads(x) for x in consumed.read_text().splitlines() if "Complete" in x)
    assert line["body"] == complete.body  # decoded by stock fedora-messaging into our class

    attested = {f["name"]: f["sha256"] for f in finished.body["files"]}
    rpms = [f for f in complete.body["files"] if f["name"].endswith(".rpm")]
    assert [f["name"] for f in rpms] == ["skyline-hello-1.0-1.noarch.rpm"]
    info = read_rpm_info(system.koji_topdir / rpms[0]["path"])
    pathinfo = koji.PathInfo(topdir=str(system.koji_topdir))
    build_dir = Path(
        pathinfo.build({"name": info.name, "version": info.version, "release": info.release})
    )
    expected = build_dir / pathinfo.rpm(
        {"name": info.name, "version": info.version, "release": info.release, "arch": info.arch}
    )
    assert expected.is_file()
    assert sha256_file(expected) == attested[expected.name] == rpms[0]["sha256"]
    log_dir = Path(
        pathinfo.build_logs({"name": info.name, "version": info.version, "release": info.release})
    )
    assert (log_dir / "noarch" / "build.log").is_file()


async def test_two_builds_of_one_srpm_attest_the_same_result_digest(system, example_srpm, tap):
    """Which host builds each is the dispatcher's choice (matching.preference: the better-rated
    host takes both when it has two free slots); byte-identical results from two different
    hosts are asserted in test_farm_agreement (a volunteer's build and its replica agree)."""
    body = await request_body(system, example_srpm, scratch=True)
    requests = [request_message(system, body), request_message(system, body)]
    for request in requests:
        await publish(system, request)
    finished = [
        await tap.wait(TaskFinishedV1, timeout=120, build_id=await build_id_of(system, r))
        for r in requests
    ]
    assert {m.body["host"] for m in finished} <= {"local-builder-1", "local-builder-2"}
    assert finished[0].body["lease_id"] != finished[1].body["lease_id"]
    assert finished[0].body["result_digest"] == finished[1].body["result_digest"]
    rpm_digests = [
        {f["sha256"] for f in m.body["files"] if f["name"].endswith(".rpm")} for m in finished
    ]
    assert rpm_digests[0] == rpm_digests[1]  # byte-identical RPMs from two hosts


async def publish(system: LocalSystem, msg: fm.Message, amqp_url: str | None = None) -> None:
    """Publish as the local packager (or as whoever `amqp_url` names)."""
    bus = Bus(amqp_url or system.url_of(system.owner))
    await bus.connect()
    try:
        await bus.publish(msg)
    finally:
        await bus.close()


async def raw_publish(system: LocalSystem, body: bytes, schema: str = "skyline.build.request.v1"):
    connection = await aio_pika.connect(system.url_of(system.owner))
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange("amq.topic", ensure=False)
        await exchange.publish(
            aio_pika.Message(
                body,
                content_type="application/json",
                content_encoding="utf-8",
                message_id=str(uuid.uuid4()),
                headers={"fedora_messaging_schema": schema, "fedora_messaging_severity": 20},
            ),
            routing_key=BuildRequestV1.topic_for(system.owner),
        )
    finally:
        await connection.close()


async def test_malformed_requests_are_dead_lettered_and_dispatcher_goes_on(
    system, example_srpm, tap
):
    good = await request_body(system, example_srpm, scratch=True)
    bad = [
        b"{this is not json",
        json.dumps({**good, "owner": None}).encode(),  # schema violation
        json.dumps({**good, "arches": ["sparc64"]}).encode(),  # unknown arch
    ]
    for body in bad:
        await raw_publish(system, body)
    request = request_message(system, good)
    await publish(system, request)
    build_id = await build_id_of(system, request)
    complete = await tap.wait(BuildCompleteV1, timeout=120, build_id=build_id)
    assert complete.body["owner"] == system.owner

    # Read as the dispatcher: only the service that owns a dead-letter queue may read it.
    connection = await aio_pika.connect(system.url_of("skyline-dispatcher"))
    try:
        channel = await connection.channel()
        dead = await channel.get_queue("skyline.dispatcher.dead", ensure=False)
        bodies = []
        while (m := await dead.get(no_ack=True, fail=False)) is not None:
            bodies.append(m.body)
    finally:
        await connection.close()
    assert sorted(bodies) == sorted(bad)
    log = (system.logs / "dispatcher.log").read_text()
    assert f"dead-lettered {BuildRequestV1.topic_for(system.owner)}" in log
    assert "'sparc64' is not one of" in log


async def test_forged_attestation_is_refused_and_nothing_is_stored(system, example_srpm, tap):
    """An enrolled volunteer attests to another host's lease: refused, nothing stored."""
    rogue = await enrol_host(system, f"mallory-{uuid.uuid4().hex[:6]}")
    request = request_message(system, await request_body(system, example_srpm, scratch=True))
    await publish(system, request)
    leased = await tap.wait(TaskLeasedV1, timeout=60, build_id=await build_id_of(system, request))
    forged_rpm = {"name": "skyline-hello-1.0-1.noarch.rpm", "size": 4, "sha256": "f" * 64}
    body = {k: leased.body[k] for k in ("task_id", "build_id", "lease_id", "host", "arch", "nvr")}
    body |= {
        "status": "succeeded",
        "srpm_sha256": leased.body["srpm_sha256"],
        "files": [forged_rpm],
        "result_digest": "0" * 64,
        "env_manifest": {},
        "env_digest": "0" * 64,
        "duration": 1.0,
    }
    body["host"] = rogue.host  # its broker user may only publish as itself
    forged = TaskFinishedV1(
        body=sign_body(body, rogue.key), topic=TaskFinishedV1.topic_for(rogue.host)
    )
    await publish(system, forged, rogue.amqp_url)

    refusal = await tap.wait(TaskMismatchV1, timeout=60, lease_id=leased.body["lease_id"])
    assert refusal.body["reason"] == "unknown_lease" and refusal.body["host"] == rogue.host
    # The honest host's build of the same lease still goes through; the forgery stored nothing.
    stored = await tap.wait(BuildStoredV1, timeout=120, task_id=leased.body["task_id"])
    assert all(f["sha256"] != "f" * 64 for f in stored.body["files"])
    assert "refused attestation" in (system.logs / "verifier.log").read_text()


@pytest.fixture(scope="module")
def broken_srpm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example package with a %build that fails, as a packager's mistake would."""
    example = EXAMPLE_SPEC.parent
    src = tmp_path_factory.mktemp("broken-spec")
    for path in example.iterdir():
        if path.is_file():
            shutil.copy(path, src)
    spec = EXAMPLE_SPEC.read_text()
    spec = spec.replace("Name:           skyline-hello", "Name:           skyline-broken", 1)
    spec = spec.replace("%build\n", "%build\necho 'error: this package does not build'\nexit 1\n")
    (src / "skyline-broken.spec").write_text(spec)
    return make_srpm(src / "skyline-broken.spec", tmp_path_factory.mktemp("broken-srpm"))


async def test_failing_build_ends_as_build_failed_with_its_log_attested(system, broken_srpm, tap):
    request = request_message(system, await request_body(system, broken_srpm, scratch=True))
    await publish(system, request)
    build_id = await build_id_of(system, request)
    failed = await tap.wait(BuildFailedV1, timeout=120, build_id=build_id)
    assert failed.body["failed_arches"] == ["noarch"]
    assert "noarch build failed" in failed.body["reason"]
    finished = tap.of(TaskFinishedV1, build_id=build_id)[0]
    assert finished.body["status"] == "failed"
    assert [f["name"] for f in finished.body["files"]] == ["build.log"]
    assert not tap.of(BuildStoredV1, build_id=build_id)  # nothing of a failed build is stored
