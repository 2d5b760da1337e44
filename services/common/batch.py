"""Batched handling: many deliveries of a high-volume topic handled in one transaction.

A Batcher sits behind the bus's consumer: the bus hands it each delivery with `add` and a
callback that acks (or settles) the delivery once its batch ended, so a delivery costs no
future and no waiting coroutine of its own (`submit` is the awaitable form). When `size`
messages are waiting (or the first has waited `wait` seconds) one transaction records every
message id in `processed_messages` (skipping ids already there, as `Service.handle` does),
runs the batch handler on the new ones, and commits. Only
then are the callbacks called, so the bus acks each delivery after the commit: the same
exactly-once guarantee as one transaction per message, at a fraction of the round trips.

A batch whose transaction fails fails every delivery in it, so the whole batch is nacked and
redelivered (nothing of it was committed). So that one poisonous message cannot take its
neighbours to the dead-letter queue with it, the ids of a failed batch are remembered and
handled one per transaction when they come back; a Reject raised for a batch of several is
turned into such a failure (only a message alone in its batch is dead-lettered). Retry (a peer
is down) passes through: the bus retries each delivery, which form a new batch.

A handler marked `idempotent` (one that itself recognises a message it already applied, as the
registry's heartbeats do with their signed, per-host increasing time) records no ids: at one
heartbeat per host every 30 s, those ids alone would be the largest table of the service.

Each batch gets one telemetry span (the bus makes no span per batched delivery: a span per
heartbeat cost more than the heartbeat's own handling).
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from . import telemetry
from .errors import Reject, Retry

if TYPE_CHECKING:
    from .service import Context, Runtime

log = logging.getLogger(__name__)

BatchHandler = Callable[[Sequence[Any], "Context"], Awaitable[None]]
# Called once a message's batch ended: None when it committed, else why it failed.
Done = Callable[[BaseException | None], None]
# How many ids of failed batches are remembered (to be handled alone when they come back).
SUSPECTS_KEPT = 10_000


def idempotent(handler: BatchHandler) -> BatchHandler:
    """Mark a batch handler that skips by itself what it already applied (see above)."""
    handler.idempotent = True  # type: ignore[attr-defined]
    return handler


class BatchFailed(RuntimeError):
    """A batch of several messages failed; each is redelivered and then handled alone."""


class Batcher:
    def __init__(
        self,
        runtime: Runtime,
        handler: BatchHandler,
        *,
        size: int = 100,
        wait: float = 0.05,
        concurrency: int = 2,
    ) -> None:
        self.runtime = runtime
        self.handler = handler
        self.record_ids = not getattr(handler, "idempotent", False)
        self.size = max(1, size)
        self.wait = wait
        self.concurrency = max(1, concurrency)
        self._running = 0
        self._pending: list[tuple[Any, Done]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._overdue = False  # the oldest waiting delivery has waited `wait` already
        self._suspects: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, msg: Any) -> None:
        """Handle `msg` in a batch; returns once its batch committed, raises if it failed."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def done(error: BaseException | None) -> None:
            if future.done():
                return  # its waiter was cancelled (shutdown): the delivery is redelivered
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)

        self.add(msg, done)
        await future

    def add(self, msg: Any, done: Done) -> None:
        """Handle `msg` in a batch; `done` is called once its batch committed or failed.
        Raises Reject (and calls nothing) for a message without an id."""
        if not msg.id:
            raise Reject("message has no message_id, so it cannot be processed exactly once")
        if msg.id in self._suspects:
            self._suspects.pop(msg.id)
            self._start([(msg, done)])  # it was in a failed batch: alone this time
        else:
            self._pending.append((msg, done))
            if len(self._pending) >= self.size:
                self._kick()
            elif self._timer is None:
                self._timer = asyncio.get_running_loop().call_later(self.wait, self._expired)

    async def drain(self) -> None:
        """At shutdown: commit what is waiting and let every batch in flight finish."""
        self._kick(force=True)
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self._kick(force=True)

    def _expired(self) -> None:
        self._timer = None
        self._overdue = True  # goes at the next free slot if none is free now
        self._kick(force=True)

    def _kick(self, force: bool = False) -> None:
        """Start batches while a slot is free: full ones, or any when `force`d.

        Deliveries that arrive while every slot is busy wait for a slot and then go together
        (group commit). A slot that frees starts a partial batch only once its oldest delivery
        has waited `wait`: starting whatever had arrived made batches of two or three on a
        busy machine, each paying a whole transaction.
        """
        while self._pending and self._running < self.concurrency:
            if len(self._pending) < self.size and not force:
                break
            items, self._pending = self._pending[: self.size], self._pending[self.size :]
            self._start(items)
        if not self._pending:
            self._overdue = False
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    def _start(self, items: list[tuple[Any, Done]]) -> None:
        self._running += 1
        task = asyncio.create_task(self._run(items))
        self._tasks.add(task)  # keep a reference until it is done
        task.add_done_callback(self._tasks.discard)

    async def _run(self, items: list[tuple[Any, Done]]) -> None:
        error: BaseException | None = None
        try:
            await self._commit([msg for msg, _ in items])
        except Retry as exc:
            error = exc
        except BaseException as exc:  # CancelledError too: every waiter must hear of it
            error = exc
            if len(items) > 1:
                for msg, _ in items:
                    self._suspect(msg.id)
                log.warning("batch of %d failed, each will be handled alone: %r", len(items), exc)
                if isinstance(exc, Reject):
                    error = BatchFailed(f"batch rejected: {exc}")
        finally:
            self._running -= 1
            self._kick(force=self._overdue)  # what waited long enough for a slot goes now
        for _, done in items:
            try:
                done(error)
            except Exception:  # one delivery's settling must not keep the others unsettled
                log.exception("settling a batched delivery failed")

    def _suspect(self, message_id: str) -> None:
        self._suspects[message_id] = None
        while len(self._suspects) > SUSPECTS_KEPT:
            self._suspects.popitem(last=False)

    async def _commit(self, msgs: list[Any]) -> None:
        first: dict[str, Any] = {}
        for msg in msgs:
            first.setdefault(msg.id, msg)  # a resent copy in the same batch is skipped
        unique = list(first.values())
        with telemetry.batch_span(unique[0].topic, len(unique)):
            async with self.runtime.transaction() as ctx:
                todo = unique
                if self.record_ids:
                    fresh = {
                        r["message_id"]
                        for r in await ctx.conn.fetch(
                            "INSERT INTO processed_messages (message_id) SELECT unnest($1::text[])"
                            " ON CONFLICT DO NOTHING RETURNING message_id",
                            [m.id for m in unique],
                        )
                    }
                    todo = [m for m in unique if m.id in fresh]
                if len(todo) < len(msgs):
                    log.info("skipping %d already processed message(s)", len(msgs) - len(todo))
                if todo:
                    await self.handler(todo, ctx)
