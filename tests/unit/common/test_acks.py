"""Acks coalesced per consumer channel: one `multiple` ack per run of finished deliveries."""

from __future__ import annotations

import asyncio

from services.common import bus
from services.common.bus import Acks


class Delivery:
    """What Acks uses of an aio-pika IncomingMessage: its tag, its channel, ack()."""

    def __init__(self, tag: int, channel: object, sent: list[tuple[int, bool]]) -> None:
        self.delivery_tag, self.channel, self.message_id, self.sent = tag, channel, str(tag), sent

    async def ack(self, multiple: bool = False) -> None:
        self.sent.append((self.delivery_tag, multiple))


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_finished_batch_is_acked_with_one_frame() -> None:
    sent: list[tuple[int, bool]] = []
    acks, channel = Acks(), object()
    deliveries = [Delivery(tag, channel, sent) for tag in range(1, 101)]
    for d in deliveries:
        acks.received(d)  # type: ignore[arg-type]
    for d in reversed(deliveries):  # finished in any order within the loop iteration
        acks.ack(d)  # type: ignore[arg-type]
    await settle()
    assert sent == [(100, True)]


async def test_an_ack_above_an_unfinished_delivery_waits_then_goes_alone(monkeypatch) -> None:
    monkeypatch.setattr(bus, "ACK_HOLD", 0.05)
    sent: list[tuple[int, bool]] = []
    acks, channel = Acks(), object()
    first, second, third = (Delivery(tag, channel, sent) for tag in (1, 2, 3))
    for d in (first, second, third):
        acks.received(d)  # type: ignore[arg-type]
    acks.ack(second)  # type: ignore[arg-type]
    acks.ack(third)  # type: ignore[arg-type]
    await settle()
    assert sent == []  # a multiple ack of 3 would ack the unfinished 1 too
    await asyncio.sleep(0.2)
    assert sorted(sent) == [(2, False), (3, False)]
    acks.ack(first)  # type: ignore[arg-type]
    await settle()
    assert sent[-1] == (1, True)  # nothing below it is open: a multiple ack is the same


async def test_a_rejected_delivery_no_longer_holds_the_acks_after_it() -> None:
    sent: list[tuple[int, bool]] = []
    acks, channel = Acks(), object()
    rejected, later = Delivery(1, channel, sent), Delivery(2, channel, sent)
    acks.received(rejected)  # type: ignore[arg-type]
    acks.received(later)  # type: ignore[arg-type]
    acks.ack(later)  # type: ignore[arg-type]
    await settle()
    assert sent == []
    acks.settled(rejected)  # type: ignore[arg-type]  # its reject went out on its own
    await settle()
    assert sent == [(2, True)]


async def test_a_new_channel_starts_afresh_and_shutdown_sends_what_is_held() -> None:
    sent: list[tuple[int, bool]] = []
    acks = Acks()
    stale = Delivery(1, object(), sent)
    acks.received(stale)  # type: ignore[arg-type]  # never finished: its channel closed
    fresh_channel = object()
    first, second = Delivery(1, fresh_channel, sent), Delivery(2, fresh_channel, sent)
    acks.received(first)  # type: ignore[arg-type]
    acks.received(second)  # type: ignore[arg-type]
    acks.ack(second)  # type: ignore[arg-type]
    await acks.send_all()
    assert sent == [(2, False)]
