"""The bus against a real RabbitMQ, and wire compatibility with stock fedora-messaging."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from pathlib import Path

import aio_pika
import pytest
from fedora_messaging import message as fm
from skyline_messages import BuildRequestV1, HostHeartbeatV1

from services.common.bus import Bus
from services.common.errors import Reject

pytestmark = pytest.mark.integration

REQUEST = {
    "srpm_url": "http://127.0.0.1:1/sources/skyline-hello-1.0-1.src.rpm",
    "srpm_sha256": "a" * 64,
    "arches": ["noarch"],
    "owner": "alice",
}


def fm_config(tmp_path: Path, amqp_url: str, queue: str, keys: list[str]) -> Path:
    path = tmp_path / "fm.toml"
    path.write_text(
        f'amqp_url = "{amqp_url}"\npublish_exchange = "amq.topic"\npassive_declares = false\n'
        f'[client_properties]\napp = "test"\n'
        f'[queues."{queue}"]\ndurable = false\nauto_delete = true\nexclusive = false\n'
        f"arguments = {{}}\n"
        f'[[bindings]]\nqueue = "{queue}"\nexchange = "amq.topic"\n'
        f"routing_keys = {json.dumps(keys)}\n"
        "[consumer_config]\n[qos]\nprefetch_size = 0\nprefetch_count = 10\n"
    )
    return path


async def collect(bus: Bus, queue: str, keys: list[str], out: list[fm.Message]) -> None:
    async def on_message(msg: fm.Message) -> None:
        out.append(msg)

    await bus.subscribe(queue, keys, on_message)


async def wait_for(predicate, timeout: float = 15) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.05)


async def test_stock_publish_cli_is_decoded_into_skyline_class(servers, tmp_path) -> None:
    queue = f"test-{uuid.uuid4().hex}"
    bus = Bus(servers.amqp_url)
    await bus.connect()
    got: list[fm.Message] = []
    try:
        await collect(bus, queue, ["skyline.build.request"], got)
        msg = BuildRequestV1(body=REQUEST)
        file = tmp_path / "msg.json"
        file.write_text(fm.dumps(msg))
        conf = fm_config(tmp_path, servers.amqp_url, "unused", ["unused"])
        subprocess.run(
            [Path(sys.executable).parent / "fedora-messaging", "--conf", conf, "publish", file],
            check=True,
            timeout=60,
            capture_output=True,
        )
        await wait_for(lambda: got)
        assert type(got[0]) is BuildRequestV1
        assert got[0].body == REQUEST
        assert got[0].id == msg.id
    finally:
        await bus.close()


async def test_skyline_message_is_decoded_by_stock_fedora_messaging_consumer(
    servers, tmp_path
) -> None:
    queue = f"fm-{uuid.uuid4().hex}"
    out = tmp_path / "consumed.jsonl"
    cb = tmp_path / "cb.py"
    cb.write_text(
        "import json, os\n"
        "def on_message(m):\n"
        f"    with open({str(out)!r}, 'a') as f:\n"
        "        f.write(json.dumps({'cls': type(m).__name__, 'summary': m.summary,"
        " 'body': m.body}) + '\\n')\n"
    )
    conf = fm_config(tmp_path, servers.amqp_url, queue, ["skyline.build.request"])
    consumer = subprocess.Popen(
        [
            Path(sys.executable).parent / "fedora-messaging",
            "--conf",
            conf,
            "consume",
            "--callback-file",
            f"{cb}:on_message",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    bus = Bus(servers.amqp_url)
    await bus.connect()
    try:
        msg = BuildRequestV1(body=REQUEST)
        # The consumer declares its queue when it starts: publish until it is there.
        for _ in range(100):
            await bus.publish(msg)
            await asyncio.sleep(0.2)
            if out.exists() and out.read_text():
                break
        line = json.loads(out.read_text().splitlines()[0])
        assert line == {"cls": "BuildRequestV1", "summary": msg.summary, "body": REQUEST}
    finally:
        await bus.close()
        consumer.terminate()
        consumer.wait(timeout=30)


async def dead_letters(amqp_url: str, queue: str) -> list[aio_pika.abc.AbstractIncomingMessage]:
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        dead = await channel.declare_queue(
            f"{queue}.dead", durable=True, arguments={"x-queue-type": "quorum"}
        )
        found = []
        while (m := await dead.get(no_ack=True, fail=False)) is not None:
            found.append(m)
        return found
    finally:
        await connection.close()


async def test_invalid_messages_are_dead_lettered_and_consuming_goes_on(servers) -> None:
    queue = f"test-{uuid.uuid4().hex}"
    bus = Bus(servers.amqp_url)
    await bus.connect()
    got: list[fm.Message] = []
    try:
        await collect(bus, queue, ["skyline.build.request"], got)
        connection = await aio_pika.connect(servers.amqp_url)
        channel = await connection.channel()
        exchange = await channel.get_exchange("amq.topic", ensure=False)
        headers = {
            "fedora_messaging_schema": "skyline.build.request.v1",
            "fedora_messaging_severity": 20,
        }
        bad_bodies = [b"{not json", json.dumps({**REQUEST, "arches": ["sparc"]}).encode()]
        for body in bad_bodies:
            await exchange.publish(
                aio_pika.Message(
                    body, headers=headers, content_encoding="utf-8", message_id=str(uuid.uuid4())
                ),
                routing_key="skyline.build.request",
            )
        await connection.close()
        good = BuildRequestV1(body=REQUEST)
        await bus.publish(good)
        await wait_for(lambda: got)
        assert [m.id for m in got] == [good.id]
        await asyncio.sleep(0.5)
        dead = await dead_letters(servers.amqp_url, queue)
        assert sorted(m.body for m in dead) == sorted(bad_bodies)
        assert all(m.headers["x-first-death-exchange"] == "amq.topic" for m in dead)
    finally:
        await bus.close()


async def test_reject_dead_letters_and_crashing_handler_is_retried_then_dead_lettered(
    servers,
) -> None:
    queue = f"test-{uuid.uuid4().hex}"
    bus = Bus(servers.amqp_url)
    await bus.connect()
    attempts: dict[str, int] = {}

    async def on_message(msg: fm.Message) -> None:
        attempts[msg.id] = attempts.get(msg.id, 0) + 1
        if msg.body["host"] == "reject-me":
            raise Reject("no")
        raise RuntimeError("boom")

    try:
        await bus.subscribe(queue, ["skyline.host.heartbeat"], on_message, delivery_limit=2)
        body = {
            "free_slots": 1,
            "signed_at": "2026-01-01T00:00:00+00:00",
            "signature": "A" * 86 + "==",
        }
        rejected = HostHeartbeatV1(body={**body, "host": "reject-me"})
        crashing = HostHeartbeatV1(body={**body, "host": "crash-me"})
        await bus.publish(rejected)
        await bus.publish(crashing)
        await wait_for(lambda: attempts.get(crashing.id, 0) >= 3, timeout=30)
        await asyncio.sleep(1.5)
        dead = await dead_letters(servers.amqp_url, queue)
        assert sorted(m.message_id for m in dead) == sorted([rejected.id, crashing.id])
        assert attempts[rejected.id] == 1
        assert attempts[crashing.id] == 3  # first delivery + delivery_limit redeliveries
    finally:
        await bus.close()
