"""The services' AMQP client (services/common/amqp_transport.py) against a real broker: a
relay batch leaves in a few sends, not one per message, and arrives whole and in order."""

from __future__ import annotations

import asyncio
import uuid

import aio_pika
import pytest
from skyline_messages import HostStatusV1

from services.common import amqp_transport
from services.common.bus import Bus, encode

pytestmark = pytest.mark.integration


def status(n: int) -> HostStatusV1:
    return HostStatusV1(
        body={
            "host": f"h{n}",
            "owner": "alice",
            "state": "online",
            "trust": "untrusted",
            "arches": ["noarch"],
            "releases": ["f40"],
            "free_slots": n,
            "seen_at": "2026-01-01T00:00:00+00:00",
        },
    )


async def test_a_batch_leaves_in_few_sends_and_arrives_in_order(servers, monkeypatch) -> None:
    sends = 0
    flush = amqp_transport.CoalescingWriter.flush

    def counting_flush(self: amqp_transport.CoalescingWriter) -> None:
        nonlocal sends
        sends += bool(self._pending)
        flush(self)

    monkeypatch.setattr(amqp_transport.CoalescingWriter, "flush", counting_flush)
    received: list[str] = []
    done = asyncio.Event()
    consumer = await aio_pika.connect(servers.amqp_url)
    bus = Bus(servers.amqp_url, name="transport-test")
    try:
        channel = await consumer.channel()
        queue = await channel.declare_queue(f"transport-{uuid.uuid4().hex}", exclusive=True)
        await queue.bind("amq.topic", routing_key=HostStatusV1.topic)

        async def on_message(incoming: aio_pika.abc.AbstractIncomingMessage) -> None:
            received.append(incoming.message_id or "")
            await incoming.ack()
            if len(received) == 300:
                done.set()

        await queue.consume(on_message)
        await bus.connect()
        wires = [encode(status(n)) for n in range(300)]
        sends = 0
        results = await bus.publish_encoded(wires)
        assert results == [None] * 300  # every one confirmed
        assert sends <= 30, sends  # a send per message was 300
        await asyncio.wait_for(done.wait(), 30)
        assert received == [w.message_id for w in wires]  # in order, nothing lost or twice
        # A lone message still leaves at once (nothing waits for company).
        [result] = await asyncio.wait_for(bus.publish_encoded([encode(status(300))]), 5)
        assert result is None
    finally:
        await bus.close()
        await consumer.close()
