"""The spool's pipeline: every stage sees every buffer, in order, with bounded buffers in
flight; a failing stage stops the upload instead of hanging it."""

from __future__ import annotations

import hashlib
import itertools
import os
import threading
from collections.abc import Callable
from pathlib import Path

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


def test_a_batch_keeps_big_pieces_and_copies_small_ones_together() -> None:
    big = bytes(spool.SMALL)
    batch = spool._Batch()
    pieces = [b"a", b"b", big, b"c", b"", big, *[b"d"] * 10_000]
    for piece in pieces:
        batch.add(piece)
    assert b"".join(batch.parts) == b"".join(pieces)
    assert batch.size == sum(map(len, pieces))
    assert batch.parts[1] is big and batch.parts[3] is big  # not copied
    # A sender's tiny HTTP chunks make a few buffers, not one object each.
    assert len(batch.parts) == 5


def test_the_writer_resumes_short_writes_and_starts_writeback_as_it_goes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    advised: list[tuple[int, int, int]] = []
    monkeypatch.setattr(spool, "WRITEBACK", 100)
    monkeypatch.setattr(spool.os, "posix_fadvise", lambda fd, *a: advised.append(a), raising=False)
    writev = os.writev
    monkeypatch.setattr(spool.os, "writev", lambda fd, views: writev(fd, [views[0][:7]]))
    data = hashlib.shake_256(b"spool").digest(1_000)
    out = spool.Writer.create(tmp_path / "part")
    try:
        for i in range(0, len(data), 60):  # batches of three pieces of 20 bytes
            out.write([data[j : j + 20] for j in range(i, min(i + 60, len(data)), 20)])
        out.sync()
    finally:
        out.close()
    assert (tmp_path / "part").read_bytes() == data
    assert all(advice == os.POSIX_FADV_DONTNEED for _, _, advice in advised)
    # Each window is advised when written (its writeback starts) and again with the next one
    # (then written back, it leaves the page cache): the ranges follow the writes, overlapping.
    ranges = [(offset, offset + length) for offset, length, _ in advised]
    assert ranges[0][0] == 0 and ranges[-1][1] >= len(data) - spool.WRITEBACK
    for before, after in itertools.pairwise(ranges):
        assert after[0] < before[1] < after[1]
