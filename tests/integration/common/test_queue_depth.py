"""The queue depth a service reports (skyline.queue.depth) is what waits in its queue."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from fedora_messaging import message as fm
from skyline_messages import BuildRequestV1

from services.common.bus import Bus

pytestmark = pytest.mark.integration

REQUEST = {
    "srpm_url": "http://127.0.0.1:1/sources/skyline-hello-1.0-1.src.rpm",
    "srpm_sha256": "a" * 64,
    "arches": ["noarch"],
    "owner": "alice",
}


async def test_queue_depth_counts_ready_messages_not_the_one_in_hand(broker) -> None:
    name = f"t{uuid.uuid4().hex[:12]}"
    bus = Bus(await broker.service(name))
    await bus.connect()
    alice = Bus(await broker.owner("alice"))
    await alice.connect()
    release = asyncio.Event()
    handled: list[fm.Message] = []

    async def on_message(msg: fm.Message) -> None:
        handled.append(msg)
        await release.wait()

    try:
        assert await bus.queue_depths() == {}  # consumes nothing yet
        await bus.subscribe(f"skyline.{name}", [BuildRequestV1.binding], on_message, prefetch=1)
        for _ in range(3):
            await alice.publish(
                BuildRequestV1(body=REQUEST, topic=BuildRequestV1.topic_for("alice"))
            )
        depths: dict[str, int] = {}
        for _ in range(200):
            depths = await bus.queue_depths()
            if handled and depths.get(f"skyline.{name}") == 2:
                break
            await asyncio.sleep(0.05)
        assert depths == {f"skyline.{name}": 2}  # one in the handler, two waiting
        release.set()
        for _ in range(200):
            depths = await bus.queue_depths()
            if len(handled) == 3 and depths[f"skyline.{name}"] == 0:
                break
            await asyncio.sleep(0.05)
        assert len(handled) == 3 and depths == {f"skyline.{name}": 0}
        await alice.publish(BuildRequestV1(body=REQUEST, topic=BuildRequestV1.topic_for("alice")))
        for _ in range(200):  # consuming goes on: the readings used a channel of their own
            if len(handled) == 4:
                break
            await asyncio.sleep(0.05)
        assert len(handled) == 4
    finally:
        release.set()
        await alice.close()
        await bus.close()
