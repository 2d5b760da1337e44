"""The spool's pipeline: every stage sees every buffer, in order, with bounded buffers in
flight; a failing stage stops the upload instead of hanging it."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from services.collector import spool


async def test_each_stage_sees_every_buffer_in_order_with_few_in_flight() -> None:
    seen: dict[str, list[bytes]] = {"hash": [], "write": []}
    busy, most, lock = 0, 0, threading.Lock()

    def stage(name: str) -> Callable[[bytearray], None]:
        def run(buffer: bytearray) -> None:
            nonlocal busy, most
            with lock:
                busy += 1
                most = max(most, busy)
            seen[name].append(bytes(buffer))
            with lock:
                busy -= 1

        return run

    pipe = spool._Pipeline(stage("hash"), stage("write"))
    buffers = [bytearray([n]) * 10 for n in range(50)]
    for buffer in buffers:
        await pipe.put(buffer)
        assert len(pipe.inflight) <= spool.DEPTH
    await pipe.drain()
    assert seen["hash"] == seen["write"] == [bytes(b) for b in buffers]
    assert most <= 2  # one thread per stage at most, never two on one stage


async def test_a_failing_stage_is_raised_and_every_step_settles() -> None:
    done: list[int] = []

    def write(buffer: bytearray) -> None:
        if buffer[0] == 3:
            raise OSError(28, "No space left on device")
        done.append(buffer[0])

    pipe = spool._Pipeline(lambda buffer: None, write)
    with pytest.raises(OSError, match="No space left"):
        for n in range(20):
            await pipe.put(bytearray([n]))
        await pipe.drain()
    await pipe.settle()  # returns: nothing is left running that could touch the file
    assert done == [0, 1, 2]  # nothing written after the failure
