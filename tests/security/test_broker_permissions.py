"""An enrolled host's broker user may publish its own host topics and read its own lease
queue, nothing else: RabbitMQ itself refuses every other publish and queue operation."""

from __future__ import annotations

import base64
import uuid

import aio_pika
import aiohttp
import pytest
from skyline_messages import BuildRequestV1, HostHeartbeatV1

from services.common import principals
from services.common.signing import sign_body
from tests.security.attack import (
    dead_letters,
    encoded,
    raw,
    refused_operation,
    refused_publish,
    tap_sees,
    try_publish,
    wait_for_log,
)
from tests.system import enrol_host

pytestmark = pytest.mark.e2e
HONEST = "local-builder-1"


def schema_of(key: str) -> str:
    """The schema header a forgery on `key` would carry (the topic without its party)."""
    topic = next((t for t in principals.RULES if key == t or key.startswith(t + ".")), key)
    return f"{topic}.v1"


async def test_host_cannot_publish_another_party_topic_or_forge_user_id(system, tap):
    rogue = await enrol_host(system, f"mallory-{uuid.uuid4().hex[:6]}")
    forbidden = [
        f"skyline.host.heartbeat.{HONEST}",
        f"skyline.task.started.{HONEST}",
        f"skyline.task.finished.{HONEST}",
        "skyline.host.heartbeat",  # the bare topic names no host
        "skyline.host.status",
        "skyline.host.enrolled",
        f"skyline.task.leased.{HONEST}",
        f"skyline.task.leased.{rogue.host}",  # leases come from the dispatcher only
        f"skyline.task.revoked.{HONEST}",  # and so do revocations
        f"skyline.task.revoked.{rogue.host}",
        "skyline.task.verified",
        "skyline.task.mismatch",
        "skyline.build.stored",
        "skyline.build.queued",
        "skyline.build.complete",
        "skyline.build.failed",
        f"skyline.build.request.{system.owner}",
        f"skyline.build.chain.{system.owner}",
        "skyline.throttle.engaged",
        "skyline.anything.else",
    ]
    ids = set()
    for key in forbidden:
        message = raw({"host": rogue.host}, schema=schema_of(key))
        ids.add(message.message_id)
        refusal = await refused_publish(rogue.amqp_url, key, message)
        assert "ACCESS_REFUSED" in str(refusal), (key, refusal)

    # The sender's name is checked by the broker too: nobody can claim to be a service.
    own = f"skyline.host.heartbeat.{rogue.host}"
    for url, key in (
        (rogue.amqp_url, own),
        (system.url_of(system.owner), f"{BuildRequestV1.topic}.{system.owner}"),
    ):
        forged = raw({"host": rogue.host}, schema=schema_of(key), user_id="skyline-dispatcher")
        ids.add(forged.message_id)
        refusal = await refused_publish(url, key, forged)
        assert "PRECONDITION_FAILED" in str(refusal) and "user_id" in str(refusal), refusal

    # Its own topic is open to it (so the refusals above are about whose topic it is), and
    # once the tap saw that one, it would have seen any forgery published before it.
    # (No free slot: the rogue must win no lease of another test's build.)
    heartbeat = HostHeartbeatV1(
        body=sign_body({"host": rogue.host, "free_slots": 0}, rogue.key), topic=own
    )
    key, control = encoded(heartbeat, principals.host_user(rogue.host))
    assert await try_publish(rogue.amqp_url, key, control) is None
    await tap_sees(tap, control.message_id)
    assert not [m for m in tap.messages if m.id in ids]


async def test_host_cannot_declare_bind_consume_or_purge_queues(system):
    rogue = await enrol_host(system, f"mallory-{uuid.uuid4().hex[:6]}")
    own = principals.host_queue(rogue.host)

    # A marker in the dispatcher's dead-letter queue, to show afterwards that it survived.
    marker = raw(b"{not json")
    key = f"skyline.build.request.{system.owner}"
    assert await try_publish(system.url_of(system.owner), key, marker) is None
    await wait_for_log(system, "dispatcher", f"(id {marker.message_id})")

    async def declare_named(ch):
        await ch.declare_queue(f"mallory-spy-{uuid.uuid4().hex[:6]}")

    async def declare_server_named(ch):
        await ch.declare_queue(exclusive=True)

    async def bind_everything(ch):
        queue = await ch.get_queue(own, ensure=False)
        await queue.bind("amq.topic", "skyline.#")

    async def consume_honest(ch):
        queue = await ch.get_queue(principals.host_queue(HONEST), ensure=False)
        await queue.consume(ignore)

    async def get_honest(ch):
        queue = await ch.get_queue(principals.host_queue(HONEST), ensure=False)
        await queue.get(fail=False)

    def purge(name):
        async def operation(ch):
            await (await ch.get_queue(name, ensure=False)).purge()

        return operation

    def delete(name):
        async def operation(ch):
            await (await ch.get_queue(name, ensure=False)).delete(if_unused=False, if_empty=False)

        return operation

    attacks = [declare_named, declare_server_named, bind_everything, consume_honest, get_honest]
    for name in (
        "skyline.dispatcher",
        "skyline.dispatcher.dead",
        "skyline.verifier.dead",
        "skyline.collector",
        principals.host_queue(HONEST),
        f"{principals.host_queue(HONEST)}.dead",
    ):
        attacks += [purge(name), delete(name)]
    attacks.append(delete(own))  # its own queue is the registry's to delete, on revoke
    for attack in attacks:
        refusal = await refused_operation(rogue.amqp_url, attack)
        assert "ACCESS_REFUSED" in str(refusal), (attack, refusal)

    # Its own lease queue it may read and purge (the control: the user works).
    await try_own_purge(rogue.amqp_url, own)

    # Nothing changed: the marker is still dead-lettered, and the rogue's queue is still bound
    # to its own leases and their revocations only (as the administrator sees it).
    assert await dead_letters(system, {marker.message_id})
    assert await bindings_of(system, own) == {
        own,
        f"skyline.task.leased.{rogue.host}",
        f"skyline.task.revoked.{rogue.host}",
    }


async def ignore(message: aio_pika.abc.AbstractIncomingMessage) -> None:
    pass


async def try_own_purge(url: str, queue: str) -> None:
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        await (await channel.get_queue(queue, ensure=False)).purge()
    finally:
        await connection.close()


async def bindings_of(system, queue: str) -> set[str]:
    """The routing keys `queue` is bound with (the default exchange's binding is its name)."""
    rabbit = system.rabbitmq
    url = f"{rabbit.management_url}/api/queues/%2F/{queue}/bindings"
    token = base64.b64encode(f"{rabbit.user}:{rabbit.password}".encode()).decode()
    headers = {"Authorization": f"Basic {token}"}
    async with aiohttp.ClientSession(headers=headers) as http, http.get(url) as response:
        assert response.status == 200, await response.text()
        return {b["routing_key"] for b in await response.json()}
