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


def service_name() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


async def consumer_bus(broker) -> tuple[Bus, str]:
    """A bus as a service of its own (a fresh name per test), and the queue it may use."""
    name = service_name()
    bus = Bus(await broker.service(name))
    await bus.connect()
    return bus, f"skyline.{name}"


async def test_stock_publish_cli_is_decoded_into_skyline_class(broker, tmp_path) -> None:
    """A packager with nothing but fedora-messaging and its own credentials requests a build:
    the routing key names it, and only its broker user may publish there."""
    bus, queue = await consumer_bus(broker)
    got: list[fm.Message] = []
    try:
        await collect(bus, queue, [BuildRequestV1.binding], got)
        msg = BuildRequestV1(body=REQUEST, topic=BuildRequestV1.topic_for("alice"))
        file = tmp_path / "msg.json"
        file.write_text(fm.dumps(msg))
        conf = fm_config(tmp_path, await broker.owner("alice"), "alice:unused", ["skyline.build.x"])
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
        assert got[0].requester == "alice"
    finally:
        await bus.close()


async def test_skyline_message_is_decoded_by_stock_fedora_messaging_consumer(
    broker, tmp_path
) -> None:
    queue = f"alice:fm-{uuid.uuid4().hex}"
    out = tmp_path / "consumed.jsonl"
    cb = tmp_path / "cb.py"
    cb.write_text(
        "import json, os\n"
        "def on_message(m):\n"
        f"    with open({str(out)!r}, 'a') as f:\n"
        "        f.write(json.dumps({'cls': type(m).__name__, 'summary': m.summary,"
        " 'body': m.body}) + '\\n')\n"
    )
    conf = fm_config(tmp_path, await broker.owner("alice"), queue, ["skyline.build.#"])
    consumer = subprocess.Popen(
        [
            Path(sys.executable).parent / "fedora-messaging",
            "--conf",
            conf,
            "consume",
            "--callback-file",
            f"{cb}:on_message",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    bus = Bus(await broker.owner("alice"))
    await bus.connect()
    try:
        msg = BuildRequestV1(body=REQUEST, topic=BuildRequestV1.topic_for("alice"))
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
        print(consumer.stderr.read().decode()[-3000:] if consumer.stderr else "")


async def dead_letters(amqp_url: str, queue: str) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """What the queue's dead-letter queue holds (read as the service that owns it)."""
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        dead = await channel.get_queue(f"{queue}.dead", ensure=False)
        found = []
        while (m := await dead.get(no_ack=True, fail=False)) is not None:
            found.append(m)
        return found
    finally:
        await connection.close()


async def test_invalid_messages_are_dead_lettered_and_consuming_goes_on(broker, caplog) -> None:
    """Bad JSON, a schema violation, properties fedora-messaging cannot decode, a huge invalid
    body: each is dead-lettered with a short logged reason, and consuming goes on."""
    name = service_name()
    service_url = await broker.service(name)
    queue = f"skyline.{name}"
    bus = Bus(service_url)
    await bus.connect()
    got: list[fm.Message] = []
    try:
        await collect(bus, queue, [BuildRequestV1.binding], got)
        alice = await broker.owner("alice")
        connection = await aio_pika.connect(alice)
        channel = await connection.channel()
        exchange = await channel.get_exchange("amq.topic", ensure=False)
        headers = {
            "fedora_messaging_schema": "skyline.build.request.v1",
            "fedora_messaging_severity": 20,
        }
        huge = json.dumps({**REQUEST, "owner": "x" * (3 * 1024 * 1024)}).encode()
        bad = [
            (b"{not json", headers, "utf-8"),
            (json.dumps({**REQUEST, "arches": ["sparc"]}).encode(), headers, "utf-8"),
            (json.dumps(REQUEST).encode(), headers, "x-unknown-encoding"),
            (json.dumps(REQUEST).encode(), {**headers, "fedora_messaging_schema": 42}, "utf-8"),
            (huge, headers, "utf-8"),
        ]
        for body, hdrs, encoding in bad:
            await exchange.publish(
                aio_pika.Message(
                    body, headers=hdrs, content_encoding=encoding, message_id=str(uuid.uuid4())
                ),
                routing_key="skyline.build.request.alice",
            )
        await connection.close()
        alice_bus = Bus(alice)
        await alice_bus.connect()
        good = BuildRequestV1(body=REQUEST, topic=BuildRequestV1.topic_for("alice"))
        await alice_bus.publish(good)
        await alice_bus.close()
        await wait_for(lambda: got)
        assert [m.id for m in got] == [good.id]
        found: list[aio_pika.abc.AbstractIncomingMessage] = []

        async def all_dead() -> bool:
            found.extend(await dead_letters(service_url, queue))
            return len(found) >= len(bad)

        await wait_for_async(all_dead)
        assert sorted(m.body for m in found) == sorted(b for b, _, _ in bad)
        assert all(m.headers["x-first-death-exchange"] == "amq.topic" for m in found)
        assert all(len(r.getMessage()) < 1000 for r in caplog.records)
    finally:
        await bus.close()


async def wait_for_async(predicate, timeout: float = 15) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.1)


async def test_reject_dead_letters_and_crashing_handler_is_retried_then_dead_lettered(
    broker,
) -> None:
    name = service_name()
    service_url = await broker.service(name)
    queue = f"skyline.{name}"
    bus = Bus(service_url)
    await bus.connect()
    attempts: dict[str, int] = {}

    async def on_message(msg: fm.Message) -> None:
        attempts[msg.id] = attempts.get(msg.id, 0) + 1
        if msg.body["host"] == "reject-me":
            raise Reject("no")
        raise RuntimeError("boom")

    try:
        await bus.subscribe(queue, [HostHeartbeatV1.binding], on_message, delivery_limit=2)
        body = {
            "free_slots": 1,
            "signed_at": "2026-01-01T00:00:00+00:00",
            "signature": "A" * 86 + "==",
        }
        sent = []
        for host in ("reject-me", "crash-me"):
            host_bus = Bus(await broker.host(host))
            await host_bus.connect()
            msg = HostHeartbeatV1(
                body={**body, "host": host}, topic=HostHeartbeatV1.topic_for(host)
            )
            await host_bus.publish(msg)
            await host_bus.close()
            sent.append(msg)
        rejected, crashing = sent
        await wait_for(lambda: attempts.get(crashing.id, 0) >= 3, timeout=30)
        found: list[aio_pika.abc.AbstractIncomingMessage] = []

        async def both_dead() -> bool:
            found.extend(await dead_letters(service_url, queue))
            return len(found) >= 2

        await wait_for_async(both_dead)
        assert sorted(m.message_id for m in found) == sorted([rejected.id, crashing.id])
        assert attempts[rejected.id] == 1
        assert attempts[crashing.id] == 3  # first delivery + delivery_limit redeliveries
    finally:
        await bus.close()


async def test_unavailable_database_holds_the_delivery_without_counting(broker) -> None:
    """A handler failing because the database is down is retried on the same delivery: with
    a delivery limit of 1 it still succeeds, and nothing is dead-lettered."""
    name = service_name()
    service_url = await broker.service(name)
    queue = f"skyline.{name}"
    bus = Bus(service_url)
    await bus.connect()
    tries: list[str] = []

    async def on_message(msg: fm.Message) -> None:
        tries.append(msg.id)
        if len(tries) < 3:
            raise ConnectionRefusedError("[Errno 111] Connect call failed ('127.0.0.1', 5432)")

    try:
        await bus.subscribe(queue, [BuildRequestV1.binding], on_message, delivery_limit=1)
        alice = Bus(await broker.owner("alice"))
        await alice.connect()
        msg = BuildRequestV1(body=REQUEST, topic=BuildRequestV1.topic_for("alice"))
        await alice.publish(msg)
        await alice.close()
        await wait_for(lambda: len(tries) >= 3, timeout=30)
        assert tries == [msg.id] * 3
        assert await dead_letters(service_url, queue) == []
    finally:
        await bus.close()
