"""What a misbehaving builder or packager does, and how the tests look for its consequences.

Every attack goes through the real broker (aio-pika, publisher confirms, as the attacker's own
broker user) or the real HTTP APIs; every check reads what an observer can: the monitor's tap,
the dead-letter queues (as the service that owns them), the services' HTTP APIs and the Koji
storage directory.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import aiormq.exceptions
from fedora_messaging import message as fm
from skyline_messages import BuildRequestV1

from services.cli.localsystem import LocalSystem
from services.cli.submit import upload_srpm
from services.common.bus import to_amqp
from services.common.config import load_config
from services.common.rpmfiles import sha256_file

EXCHANGE = "amq.topic"
#: What RabbitMQ answers a refused publish or queue operation with (it closes the channel).
REFUSALS = (aiormq.exceptions.ChannelAccessRefused, aiormq.exceptions.ChannelPreconditionFailed)


def raw(
    body: bytes | dict[str, Any],
    *,
    schema: str = "skyline.build.request.v1",
    content_encoding: str = "utf-8",
    user_id: str | None = None,
    headers: dict[str, Any] | None = None,
) -> aio_pika.Message:
    """A message built by hand, as a hostile client would (no client-side validation)."""
    if isinstance(body, dict):
        body = json.dumps(body).encode()
    return aio_pika.Message(
        body,
        content_type="application/json",
        content_encoding=content_encoding,
        message_id=str(uuid.uuid4()),
        user_id=user_id,
        headers=headers
        if headers is not None
        else {"fedora_messaging_schema": schema, "fedora_messaging_severity": 20},
    )


def encoded(msg: fm.Message, user_id: str | None = None) -> tuple[str, aio_pika.Message]:
    """A valid message encoded exactly as Skyline's bus sends it (so only the broker or a
    consumer's sender check can tell the forgery apart)."""
    return to_amqp(msg, user_id)


async def try_publish(url: str, routing_key: str, message: aio_pika.Message) -> Exception | None:
    """Publish with confirms on a fresh connection: the broker's refusal, or None if it took it."""
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(EXCHANGE, ensure=False)
        try:
            await asyncio.wait_for(exchange.publish(message, routing_key=routing_key), 30)
        except REFUSALS as exc:
            return exc
        return None
    finally:
        await connection.close()


async def refused_publish(url: str, routing_key: str, message: aio_pika.Message) -> Exception:
    refusal = await try_publish(url, routing_key, message)
    assert refusal is not None, f"the broker accepted a publish on {routing_key}"
    return refusal


async def refused_operation(
    url: str, operation: Callable[[aio_pika.abc.AbstractChannel], Awaitable[object]]
) -> Exception:
    """Run one queue operation on a fresh channel; it must be refused by the broker."""
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        try:
            await asyncio.wait_for(operation(channel), 30)
        except REFUSALS as exc:
            return exc
        raise AssertionError("the broker allowed the operation")
    finally:
        await connection.close()


async def dead_letters(
    system: LocalSystem, ids: set[str], queue: str = "skyline.dispatcher.dead", timeout: float = 60
) -> dict[str, aio_pika.abc.AbstractIncomingMessage]:
    """Drain `queue` (as the service that owns it) until every message id of `ids` was in it."""
    service = queue.split(".")[1]
    connection = await aio_pika.connect(system.url_of(f"skyline-{service}"))
    found: dict[str, aio_pika.abc.AbstractIncomingMessage] = {}
    try:
        channel = await connection.channel()
        dead = await channel.get_queue(queue, ensure=False)
        deadline = asyncio.get_running_loop().time() + timeout
        while not ids <= found.keys():
            message = await dead.get(no_ack=True, fail=False)
            if message is not None:
                found[message.message_id or ""] = message
                continue
            if asyncio.get_running_loop().time() > deadline:
                missing = ids - found.keys()
                raise AssertionError(f"{len(missing)} message(s) never reached {queue}")
            await asyncio.sleep(0.1)
    finally:
        await connection.close()
    return {k: v for k, v in found.items() if k in ids}


async def wait_for_log(system: LocalSystem, service: str, text: str, timeout: float = 60) -> None:
    path = system.logs / f"{service}.log"
    deadline = asyncio.get_running_loop().time() + timeout
    while not (path.exists() and text in path.read_text(errors="replace")):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{text!r} never appeared in {path.name}")
        await asyncio.sleep(0.1)


# -- the packager's honest requests ------------------------------------------------------


async def request_body(system: LocalSystem, srpm: Path, **extra: object) -> dict[str, Any]:
    config = load_config(system.config_file)
    async with aiohttp.ClientSession() as http:
        url, digest = await upload_srpm(http, config, srpm, token=system.secret(system.owner))
    body = {"srpm_url": url, "srpm_sha256": digest, "arches": ["noarch"], "owner": system.owner}
    return body | extra


async def submit(system: LocalSystem, body: dict[str, Any]) -> BuildRequestV1:
    """Publish a request as the local packager, on its own routing key."""
    request = BuildRequestV1(body=body, topic=BuildRequestV1.topic_for(system.owner))
    key, message = encoded(request, system.owner)
    assert await try_publish(system.url_of(system.owner), key, message) is None
    return request


async def get_json(url: str, **params: str) -> Any:
    async with aiohttp.ClientSession() as http, http.get(url, params=params) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def builds_of(system: LocalSystem, request_id: str) -> list[dict[str, Any]]:
    url = f"{system.url('dispatcher')}/api/v1/builds"
    return (await get_json(url, request_id=request_id))["builds"]


async def build_id_of(system: LocalSystem, request: fm.Message, timeout: float = 60) -> int:
    deadline = asyncio.get_running_loop().time() + timeout
    while not (builds := await builds_of(system, request.id)):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"no build for request {request.id}")
        await asyncio.sleep(0.1)
    return builds[0]["build_id"]


async def host_view(system: LocalSystem, host: str) -> dict[str, Any]:
    return await get_json(f"{system.url('registry')}/api/v1/hosts/{host}")


def stored_digests(system: LocalSystem) -> set[str]:
    """The sha256 of every file in Koji storage."""
    top = system.koji_topdir
    return {sha256_file(p) for p in top.rglob("*") if p.is_file()} if top.exists() else set()


async def tap_sees(tap: Any, message_id: str, timeout: float = 60) -> None:
    """Wait until the monitor's tap saw `message_id`: what was refused before it never will."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not any(m.id == message_id for m in tap.messages):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"the tap never saw {message_id}")
        await asyncio.sleep(0.1)
