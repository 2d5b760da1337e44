"""AMQP connections whose frames leave in one send per event-loop pass.

aiormq writes each publish (and each ack) to the socket on its own: a relay batch of 100
task.leased was 100 `send` calls, each handing one small TCP segment to the broker. Over
loopback the kernel runs the receiving side inside the sender's call, so those sends were the
dispatcher's largest single cost (bench/scheduler.py under py-spy: about a fifth of its CPU).
Here the writer gathers what the connection's writer task writes in one pass of the event loop
and sends it at the end of that pass, in one call: the same bytes in the same order, only in
fewer segments. Nothing waits longer than the current pass (no Nagle-style delay): a lone
message still leaves at once.

Use `connection_class=CoalescingRobustConnection` (or CoalescingConnection) with aio-pika's
connect functions.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aio_pika
from aiormq.connection import TransportFactory
from aiormq.exceptions import AMQPConnectionError
from yarl import URL

# asyncio.open_connection's default read buffer limit.
READ_LIMIT = 2**16
# Frames a connection's publishers may queue for its writer (see widen_write_queue): a relay
# batch ([bus] relay_batch, 100) and the acks and heartbeats around it.
WRITE_QUEUE_FRAMES = 1024


class CoalescingWriter(asyncio.StreamWriter):
    """A StreamWriter that joins the writes of one event-loop pass into one transport write."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pending: list[bytes] = []
        self._scheduled = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._pending.append(bytes(data))
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def writelines(self, data: Any) -> None:
        for chunk in data:
            self.write(chunk)

    def flush(self) -> None:
        """Hand what was written so far to the transport (in one write)."""
        self._scheduled = False
        if not self._pending:
            return
        data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        self._pending.clear()
        if not self.transport.is_closing():
            super().write(data)

    async def drain(self) -> None:
        self.flush()
        await super().drain()

    def write_eof(self) -> None:
        self.flush()
        super().write_eof()

    def close(self) -> None:
        self.flush()
        super().close()


class CoalescingTransportFactory(TransportFactory):
    """aiormq's TCP (or, for amqps://, TLS) transport with a CoalescingWriter."""

    async def create(
        self, url: URL, **kwargs: Any
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        provider = kwargs.pop("ssl_context_provider", None)
        ssl = await provider.get_context() if url.scheme == "amqps" and provider else None
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=READ_LIMIT, loop=loop)
        protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        try:
            transport, _ = await loop.create_connection(
                lambda: protocol,
                host=url.host or "localhost",
                port=url.port or (5671 if url.scheme == "amqps" else 5672),
                ssl=ssl,
                **kwargs,
            )
        except OSError as exc:  # as aiormq's own factories: a robust connection retries it
            raise AMQPConnectionError(*exc.args) from exc
        return reader, CoalescingWriter(transport, protocol, reader, loop)


def widen_write_queue(connection: Any) -> None:
    """Let `connection`'s publishers queue WRITE_QUEUE_FRAMES frames, not aiormq's 10.

    A publisher whose frame finds aiormq's write queue full waits holding its channel's lock,
    and the publishers behind it then each get the lock one loop pass after another: a batch
    past the first ten left one message (and one send) per pass. Widened, a batch queues in
    one pass and leaves in one send. Still bounded; a batch waits for its confirms anyway.
    (asyncio.Queue has no public setter for its bound; aiormq reads it from a class constant
    when it makes the queue.)
    """
    queue = connection.transport.connection.write_queue
    if 0 < queue.maxsize < WRITE_QUEUE_FRAMES:
        queue._maxsize = WRITE_QUEUE_FRAMES


class CoalescingConnection(aio_pika.Connection):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.kwargs["transport_factory"] = CoalescingTransportFactory()

    async def _on_connected(self) -> None:
        widen_write_queue(self)
        await super()._on_connected()


class CoalescingRobustConnection(aio_pika.RobustConnection):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.kwargs["transport_factory"] = CoalescingTransportFactory()

    async def _on_connected(self) -> None:  # after every (re)connection, before any channel
        widen_write_queue(self)
        await super()._on_connected()
