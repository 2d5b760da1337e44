"""The message bus: aio-pika transport, fedora-messaging wire format and schema classes.

fedora-messaging 3.9 has no asyncio API (its `api` module runs Twisted in a thread), so the
transport is aio-pika, and fedora-messaging's `Message` classes are the schema layer: what
goes on the wire is exactly what `fedora_messaging.api.publish` would send (same properties
and headers), and what comes off it is decoded by `fedora_messaging.message.get_message`,
so stock fedora-messaging publishers and consumers interoperate with Skyline both ways.

Delivery guarantees: durable quorum queues, persistent messages, publisher confirms, manual
ack after the handler returned (its transaction committed), a dead-letter queue per consumer
queue for invalid messages and for messages that keep failing (`x-delivery-limit`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import heapq
import logging
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

import aio_pika
import aiormq
import pika
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection
from fedora_messaging import message as fm
from fedora_messaging.exceptions import ValidationError
from jsonschema.exceptions import ValidationError as SchemaError

from . import principals, telemetry
from .amqp_transport import CoalescingRobustConnection
from .broker_admin import queue_arguments
from .config import with_credentials
from .errors import ClipLongRecords, Reject, describe, is_unavailable

log = logging.getLogger(__name__)
# get_message() logs an invalid message's whole body at ERROR: a 4 MiB line per bad message.
logging.getLogger("fedora_messaging.message").addFilter(ClipLongRecords())

DEAD_LETTER_EXCHANGE = principals.DEAD_LETTER_EXCHANGE
# How long a delivery is held and retried here while its handler raises Retry or the database
# or a peer is unavailable, before it goes back to the queue (which counts toward
# `x-delivery-limit`), and the longest pause between two tries. Below RabbitMQ's default
# consumer_timeout (30 min), which would close the channel and return every held delivery.
RETRY_PATIENCE = 1500.0
RETRY_MAX_DELAY = 15.0
# Largest message body sent or accepted; the broker refuses larger ones too (localstack sets
# its max_message_size). An attestation of 10,000 files is about 1.6 MB.
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
OnMessage = Callable[[fm.Message], Awaitable[None]]
# Takes a decoded message and a callback it calls once the message is handled (None) or failed
# (the exception): a batched consumer (batch.Batcher.add). Raises Reject to refuse it at once.
Collect = Callable[[fm.Message, Callable[[BaseException | None], None]], None]


class Undeliverable(Exception):
    """A delivery that can never be handled: dead-letter it with this reason."""


@dataclasses.dataclass(frozen=True, slots=True)
class Wire:
    """A message as it goes on the wire, validated once when it was encoded."""

    routing_key: str
    body: bytes
    headers: dict[str, Any]
    message_id: str
    priority: int | None = None


def encode(msg: fm.Message, traceparent: str | None = None) -> Wire:
    """Validate `msg` (once) and encode it as fedora-messaging's publisher would.

    Raises fedora-messaging's ValidationError, as `fm.dumps` and `api.publish` do, and
    ValueError for a body over MAX_MESSAGE_BYTES. The trace context `traceparent`, else the
    current one, goes into the headers (an existing one is kept only in the second case).
    """
    try:
        msg.validate()
    except SchemaError as exc:
        raise ValidationError(exc) from exc
    body = msg._encoded_body  # a property: the body is JSON-encoded on each read
    if len(body) > MAX_MESSAGE_BYTES:
        raise ValueError(f"{msg.topic}: body of {len(body)} bytes is too large")
    props = msg._properties
    headers = dict(props.headers or {})
    if traceparent is not None:
        headers.pop("tracestate", None)
        headers["traceparent"] = traceparent
    else:
        telemetry.inject(headers)
    return Wire(msg._encoded_routing_key, body, headers, props.message_id, props.priority)


def wire_message(wire: Wire, user_id: str | None = None) -> aio_pika.Message:
    """The AMQP message for `wire`: persistent, JSON, naming its sender (`user_id`, which the
    broker checks against the connection's user)."""
    return aio_pika.Message(
        body=wire.body,
        content_type="application/json",
        content_encoding="utf-8",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=wire.message_id,
        priority=wire.priority,
        headers=wire.headers,
        user_id=user_id,
    )


def wire_properties(wire: Wire, user_id: str | None = None) -> aiormq.spec.Basic.Properties:
    """wire_message's AMQP properties, made directly: the relay's per-message path skips
    building an aio-pika Message (attribute by attribute, each checked) only to read them."""
    return aiormq.spec.Basic.Properties(
        content_type="application/json",
        content_encoding="utf-8",
        delivery_mode=int(aio_pika.DeliveryMode.PERSISTENT),
        priority=wire.priority or 0,
        message_id=wire.message_id,
        headers=wire.headers,
        user_id=user_id,
    )


def to_amqp(msg: fm.Message, user_id: str | None = None) -> tuple[str, aio_pika.Message]:
    """Validate `msg` and encode it as fedora-messaging's publisher would."""
    wire = encode(msg)
    return wire.routing_key, wire_message(wire, user_id)


def sent_at(msg: fm.Message) -> datetime.datetime | None:
    """When the publisher made the message: fedora-messaging's `sent-at` header (a naive time
    is taken as UTC), or None when it is missing or unreadable."""
    raw = (getattr(msg, "_headers", None) or {}).get("sent-at")
    try:
        at = datetime.datetime.fromisoformat(raw) if isinstance(raw, str) else None
    except ValueError:
        return None
    return at if at is None or at.tzinfo else at.replace(tzinfo=datetime.UTC)


def url_user(url: str) -> str:
    """The user an AMQP URL logs in as (AMQP's default `guest` when the URL names none)."""
    user = urlsplit(url).username
    return unquote(user) if user else "guest"


def from_amqp(incoming: AbstractIncomingMessage) -> fm.Message:
    """Decode and validate an incoming message; raises fedora-messaging's ValidationError."""
    props = pika.BasicProperties(
        content_type=incoming.content_type,
        content_encoding=incoming.content_encoding,
        headers=dict(incoming.headers or {}),
        message_id=incoming.message_id,
        priority=incoming.priority,
        delivery_mode=2,
    )
    return fm.get_message(incoming.routing_key or "", props, incoming.body)


def decode(incoming: AbstractIncomingMessage) -> tuple[fm.Message, str]:
    """The message and the principal that sent it; raises Undeliverable with a short reason
    for anything that is not a valid message from a principal allowed to send it."""
    if len(incoming.body) > MAX_MESSAGE_BYTES:
        raise Undeliverable(f"body of {len(incoming.body)} bytes is too large")
    try:
        msg = from_amqp(incoming)
    except Exception as exc:  # any property or body fedora-messaging cannot decode
        raise Undeliverable(f"cannot decode: {describe(exc)}") from None
    try:
        sender = principals.check_sender(
            type(msg).topic or "", incoming.routing_key or "", incoming.user_id, msg.body
        )
    except principals.Refused as exc:
        raise Undeliverable(f"refused sender: {describe(exc)}") from None
    return msg, sender


# How long an ack waits for an older delivery of its channel to be settled (so that one
# `multiple` ack covers both) before it is sent alone.
ACK_HOLD = 0.2


class Acks:
    """The acks of one consumer channel, coalesced: one `multiple` ack for every finished
    delivery below the oldest one still being handled, sent once per loop iteration.

    A batch of 100 heartbeats so costs one ack frame (one socket write) instead of 100. An
    ack above a delivery still being handled (a batch that finished before an older one, a
    handler waiting for a peer) is held at most ACK_HOLD seconds, then sent alone: a long
    handler never holds up the others' acks, whose unacked count would fill the prefetch.
    """

    def __init__(self) -> None:
        self._channel: object = None
        self._open: set[int] = set()  # delivered, not yet settled
        self._done: list[tuple[int, AbstractIncomingMessage]] = []  # to ack, a heap by tag
        self._flushing = False
        self._timer: asyncio.TimerHandle | None = None

    def received(self, incoming: AbstractIncomingMessage) -> None:
        try:
            channel: object = incoming.channel
        except aio_pika.exceptions.ChannelInvalidStateError:
            channel = None  # closed already: nothing of it can be acked
        if channel is not self._channel:  # a new channel (reconnected): tags start again
            self._channel, self._open, self._done = channel, set(), []
        self._open.add(incoming.delivery_tag or 0)

    def settled(self, incoming: AbstractIncomingMessage) -> None:
        """Rejected or nacked on its own: no longer holds back the acks after it."""
        self._open.discard(incoming.delivery_tag or 0)
        if self._done:
            self._schedule()

    def ack(self, incoming: AbstractIncomingMessage) -> None:
        self._open.discard(incoming.delivery_tag or 0)
        heapq.heappush(self._done, (incoming.delivery_tag or 0, incoming))
        self._schedule()

    async def send_all(self) -> None:
        """At shutdown: send every ack now, held or not, and wait until they are written."""
        if self._done:
            self._flush(hold=False)
        await asyncio.gather(*_SENDING, return_exceptions=True)

    def _schedule(self) -> None:
        if not self._flushing:
            self._flushing = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self, hold: bool = True) -> None:
        self._flushing = False
        if not hold:
            self._timer = None  # this is the timer firing
        oldest = min(self._open, default=None)
        last = None
        while self._done and (oldest is None or self._done[0][0] < oldest):
            last = heapq.heappop(self._done)[1]
        if last is not None:
            self._send(last, multiple=True)
        if not self._done:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        elif not hold:  # held long enough: each alone
            for _, incoming in self._done:
                self._send(incoming, multiple=False)
            self._done = []
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(ACK_HOLD, self._flush, False)

    @staticmethod
    def _send(incoming: AbstractIncomingMessage, multiple: bool) -> None:
        async def send() -> None:
            try:
                await incoming.ack(multiple=multiple)
            except Exception as exc:  # the channel closed: the broker redelivers them all
                log.warning("ack of %s failed: %s", incoming.message_id, describe(exc))

        task = asyncio.ensure_future(send())
        _SENDING.add(task)
        task.add_done_callback(_SENDING.discard)


_SENDING: set[asyncio.Future[None]] = set()  # ack writes in flight, referenced until done
_SETTLING: set[asyncio.Future[None]] = set()  # failed batched deliveries, until settled


class Bus:
    """One connection, one confirming publisher channel, any number of consumers."""

    def __init__(self, url: str, *, exchange: str = "amq.topic", name: str = "skyline") -> None:
        self.url = url
        # The user_id of what this bus publishes: RabbitMQ checks it against the connection's.
        self.user = url_user(url)
        self.exchange_name = exchange
        self.name = name
        self._connection: AbstractRobustConnection | None = None
        self._publish_channel: aio_pika.abc.AbstractChannel | None = None
        self._exchange: aio_pika.abc.AbstractExchange | None = None
        self._consumers: list[tuple[aio_pika.abc.AbstractQueue, str]] = []
        self._acks: list[Acks] = []

    def use_credentials(self, user: str, password: str) -> None:
        """Connect (next time) as `user`: a host learns its credentials when it enrols."""
        self.url = with_credentials(self.url, user, password)
        self.user = user

    async def connect(self) -> None:
        self._connection = await aio_pika.connect_robust(
            self.url,
            client_properties={"connection_name": self.name},
            connection_class=CoalescingRobustConnection,  # a send per loop pass, not per frame
        )
        self._publish_channel = await self._connection.channel(publisher_confirms=True)
        self._exchange = await self._declare_exchange(self._publish_channel)

    async def _declare_exchange(
        self, channel: aio_pika.abc.AbstractChannel
    ) -> aio_pika.abc.AbstractExchange:
        if self.exchange_name.startswith("amq."):
            return await channel.get_exchange(self.exchange_name, ensure=False)
        return await channel.declare_exchange(
            self.exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
        )

    async def stop_consuming(self) -> None:
        """Cancel every consumer; publishing still works (in-flight work can report back)."""
        for queue, tag in self._consumers:
            try:
                await queue.cancel(tag)
            except Exception:  # the channel may already be gone; closing is best effort
                log.debug("cancel of %s failed", queue.name, exc_info=True)
        self._consumers.clear()

    async def close(self) -> None:
        await self.stop_consuming()
        for acks in self._acks:
            await acks.send_all()
        if self._connection is not None:
            await self._connection.close()
            self._connection = None

    async def publish(self, msg: fm.Message) -> None:
        """Publish and wait for the broker's confirm; raises if the broker refuses it."""
        if self._exchange is None:
            raise RuntimeError("Bus.publish() before connect()")
        with telemetry.publish_span(msg.topic):
            routing_key, amqp_message = to_amqp(msg, self.user)
            await self._exchange.publish(amqp_message, routing_key=routing_key)

    async def publish_encoded(self, wires: Sequence[Wire]) -> list[BaseException | None]:
        """Publish pre-encoded messages with their confirms pipelined (all in flight at once).

        They leave in order on one channel; the result says, per message, None when the broker
        confirmed it or the exception (a nack, a lost connection) when it did not. Nothing is
        validated again: a Wire was validated when it was encoded.
        """
        if self._exchange is None or self._publish_channel is None:
            raise RuntimeError("Bus.publish_encoded() before connect()")
        if not wires:
            return []
        # aiormq's channel, not aio-pika's Exchange.publish: that one waits for each frame to
        # be written (`wait`, under the channel's lock) before the next may queue, so a batch
        # went out a send per message. Without the wait, what the batch queues in one pass of
        # the event loop leaves in one send (amqp_transport.py); the confirms are awaited
        # all the same, and the connection's bounded write queue still holds publishers back.
        channel = await self._publish_channel.get_underlay_channel()
        assert isinstance(channel, aiormq.Channel)  # its basic_publish takes `wait`
        name, user = self._exchange.name, self.user
        results = await asyncio.gather(
            *(
                channel.basic_publish(
                    w.body,
                    exchange=name,
                    routing_key=w.routing_key,
                    properties=wire_properties(w, user),
                    mandatory=True,  # as aio-pika's Exchange.publish
                    wait=False,
                )
                for w in wires
            ),
            return_exceptions=True,
        )
        return [r if isinstance(r, BaseException) else None for r in results]

    async def queue_depths(self) -> dict[str, int]:
        """Messages ready in each queue consumed here (a passive declare on its own channel,
        so an error never touches the publishing channel)."""
        if self._connection is None or not self._consumers:
            return {}
        depths = {}
        async with self._connection.channel() as channel:
            for queue, _tag in self._consumers:
                declared = await channel.declare_queue(queue.name, passive=True)
                result = declared.declaration_result
                depths[queue.name] = int(result.message_count or 0)
        return depths

    async def subscribe(
        self,
        queue_name: str,
        routing_keys: Iterable[str],
        on_message: OnMessage,
        *,
        prefetch: int = 10,
        delivery_limit: int = 5,
        declare: bool = True,
        batched: Collection[type[fm.Message]] = (),
        collect: Mapping[type[fm.Message], Collect] | None = None,
    ) -> None:
        """Consume `queue_name`; with `declare`, first declare it (and its dead-letter queue)
        and bind it. A host consumes without declaring: the registry made its queue, and its
        broker user may declare or bind nothing. Messages of the `batched` classes get no span
        each: their batch has one (services/common/batch.py).

        Messages of a class in `collect` are handed to its collector once decoded, and the
        delivery's own task ends there: no coroutine waits per message (a heartbeat's waiting
        task and future cost more CPU than its database work). The collector's callback acks
        it (coalesced); a failure goes the way `on_message`'s would (dead-letter on Reject,
        retried through `on_message` while something is unavailable, else nacked)."""
        if self._connection is None:
            raise RuntimeError("Bus.subscribe() before connect()")
        channel = await self._connection.channel()
        await channel.set_qos(prefetch_count=prefetch)
        if declare:
            queue = await self._declare_queue(channel, queue_name, routing_keys, delivery_limit)
        else:
            # A passive declare: it needs no configure permission, and the robust channel
            # remembers the queue, so consuming resumes after the broker restarts.
            queue = await channel.get_queue(queue_name, ensure=True)

        untraced = frozenset(batched)
        acks = Acks()
        self._acks.append(acks)

        collectors = dict(collect or {})

        async def deliver(incoming: AbstractIncomingMessage) -> None:
            acks.received(incoming)
            if not collectors:
                await self._deliver(queue_name, incoming, on_message, untraced, acks)
                return
            try:
                msg, _sender = decode(incoming)
            except Undeliverable as exc:
                await self._dead_letter(queue_name, incoming, exc, acks)
                return
            collector = collectors.get(type(msg))
            if collector is None:
                await self._deliver(queue_name, incoming, on_message, untraced, acks, msg)
                return
            msg.queue = queue_name

            def done(error: BaseException | None) -> None:
                if error is None:
                    acks.ack(incoming)
                else:  # settled by a task of its own, as an unbatched delivery would be
                    task = asyncio.ensure_future(
                        self._deliver(queue_name, incoming, on_message, untraced, acks, msg, error)
                    )
                    _SETTLING.add(task)
                    task.add_done_callback(_SETTLING.discard)

            try:
                collector(msg, done)
            except Exception as exc:  # Reject: no message id
                done(exc)

        tag = await queue.consume(deliver)
        self._consumers.append((queue, tag))

    async def _declare_queue(
        self,
        channel: aio_pika.abc.AbstractChannel,
        queue_name: str,
        routing_keys: Iterable[str],
        delivery_limit: int,
    ) -> aio_pika.abc.AbstractQueue:
        exchange = await self._declare_exchange(channel)
        dlx = await channel.declare_exchange(
            DEAD_LETTER_EXCHANGE, aio_pika.ExchangeType.DIRECT, durable=True
        )
        dead = await channel.declare_queue(
            f"{queue_name}.dead", durable=True, arguments={"x-queue-type": "quorum"}
        )
        await dead.bind(dlx, routing_key=queue_name)
        queue = await channel.declare_queue(
            queue_name, durable=True, arguments=queue_arguments(queue_name, delivery_limit)
        )
        for key in routing_keys:
            await queue.bind(exchange, routing_key=key)
        return queue

    async def _deliver(
        self,
        queue_name: str,
        incoming: AbstractIncomingMessage,
        on_message: OnMessage,
        untraced: Collection[type[fm.Message]] = (),
        acks: Acks | None = None,
        msg: fm.Message | None = None,
        failed: BaseException | None = None,
    ) -> None:
        """Ack after the handler succeeded; dead-letter what can never succeed; hold what
        fails because something else is down. Log lines name the message, never its body.
        With `acks`, acks are coalesced (Acks); a reject or nack is sent at once, alone.
        `msg`: already decoded; `failed`: its first try (in a batch) failed so."""
        try:
            ok = await self._outcome(queue_name, incoming, on_message, untraced, msg, failed)
        finally:
            if acks is not None:
                acks.settled(incoming)  # after its reject or nack went out, or to be acked
        if ok and acks is not None:
            acks.ack(incoming)
        elif ok:
            await incoming.ack()

    async def _outcome(
        self,
        queue_name: str,
        incoming: AbstractIncomingMessage,
        on_message: OnMessage,
        untraced: Collection[type[fm.Message]],
        msg: fm.Message | None = None,
        failed: BaseException | None = None,
    ) -> bool:
        """Handle one delivery; True when it is to be acked, else it was rejected or nacked."""
        where = _where(queue_name, incoming)
        if msg is None:
            try:
                msg, _sender = decode(incoming)
            except Undeliverable as exc:
                log.error("dead-lettered %s: %s", where, exc)
                await incoming.reject(requeue=False)
                return False
        msg.queue = queue_name
        try:
            if failed is not None:  # a batch failed: fail the same way, or try again
                if not is_unavailable(failed):
                    raise failed
                log.warning("cannot handle %s yet, will retry: %s", where, describe(failed))
                await asyncio.sleep(1.0)
                await self._handle_while_unavailable(where, msg, on_message)
            elif type(msg) in untraced:
                await self._handle_while_unavailable(where, msg, on_message)
            else:
                with telemetry.consume_span(msg, incoming.headers or {}):
                    await self._handle_while_unavailable(where, msg, on_message)
        except Reject as exc:
            log.error("rejected message %s, dead-lettered: %s", where, describe(exc))
            await incoming.reject(requeue=False)
        except asyncio.CancelledError:
            await incoming.nack(requeue=True)
            raise
        except Exception as exc:
            if is_unavailable(exc):
                log.warning("still cannot handle %s, back to the queue: %s", where, describe(exc))
            else:
                log.exception("handler failed on message %s; it will be redelivered", where)
                await asyncio.sleep(1)
            await incoming.nack(requeue=True)
        else:
            return True
        return False

    @staticmethod
    async def _dead_letter(
        queue_name: str, incoming: AbstractIncomingMessage, why: Exception, acks: Acks
    ) -> None:
        log.error("dead-lettered %s: %s", _where(queue_name, incoming), why)
        try:
            await incoming.reject(requeue=False)
        finally:
            acks.settled(incoming)

    @staticmethod
    async def _handle_while_unavailable(where: str, msg: fm.Message, on_message: OnMessage) -> None:
        """Call the handler again, with growing pauses, while it fails because the database or
        a peer is down (or it raises Retry).

        Such a failure is not the message's fault, so the delivery is held and retried here
        instead of being nacked: on a quorum queue every nack counts toward
        `x-delivery-limit`, and nacking each try dead-lettered valid requests, verdicts and
        stored-notifications during a database outage of a few seconds. Only after
        RETRY_PATIENCE is it given back to the queue (one count toward the limit). Each try is
        a fresh handler call: the failed try's transaction was rolled back.
        """
        loop = asyncio.get_running_loop()
        give_up = loop.time() + RETRY_PATIENCE
        delay = 1.0
        while True:
            try:
                await on_message(msg)
                return
            except Exception as exc:
                if not is_unavailable(exc) or loop.time() + delay > give_up:
                    raise
                log.warning("will retry message %s in %.0f s: %s", where, delay, describe(exc))
            await asyncio.sleep(delay)  # do not spin on a peer that is down
            delay = min(delay * 2, RETRY_MAX_DELAY)


def _where(queue_name: str, incoming: AbstractIncomingMessage) -> str:
    """A delivery as log lines name it (never its body)."""
    return f"{(incoming.routing_key or '')[:200]} (id {incoming.message_id}) on {queue_name}"
