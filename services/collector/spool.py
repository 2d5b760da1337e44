"""Stream an HTTP request body to a file: constant memory for any size, at near disk speed.

The body arrives as the pieces aiohttp's parser cut from each socket read; they are gathered,
without copying, into batches of about CHUNK bytes that go down a short pipeline: while the
event loop receives the next batch, one thread hashes and another writes the ones before
(hashlib and file writes release the GIL), each stage in order. At most DEPTH batches are in
flight, so an upload holds about (DEPTH + 1) * CHUNK bytes however large it is, and a slow
disk slows the sender down (TCP flow control) instead of filling memory. Small pieces (a
sender's tiny HTTP chunks) are copied together, so a batch is never a long list of objects.

The file is fsynced once, at the end: that is where durability is needed (before the caller
moves it into place). Syncing every batch would make the disk wait on the network and vice
versa; but leaving it all to the end would write the whole file after it was received. So
the writer asks the kernel to start writing back each WRITEBACK bytes as soon as they are
written (posix_fadvise DONTNEED: starts writeback without waiting for it, and drops the pages
of the window before, already written back, from the page cache), and the final fsync only
waits for the last of it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from services.common.http import error

CHUNK = 4 * 1024 * 1024  # bytes per batch handed to the hashing and writing threads
DEPTH = 3  # batches in flight per upload: enough to keep both threads and the disk busy
SMALL = 64 * 1024  # pieces below this are copied together: a batch holds < 2 * CHUNK / SMALL
WRITEBACK = 16 * 1024 * 1024  # bytes written before their writeback is started


@dataclass(frozen=True)
class Spooled:
    path: Path
    size: int
    sha256: str


@contextlib.asynccontextmanager
async def spool(
    request: web.Request,
    folder: Path,
    name: str,
    limit: int,
    *,
    too_large: web.HTTPException | None = None,
) -> AsyncIterator[Spooled]:
    """Write the body to a hidden part file in `folder`, for the caller to move to `name`; the
    part file is removed on exit unless moved.

    Raises 400 when `name` is too long for the folder's file system, and 413 (or `too_large`)
    as soon as the body passes `limit` bytes. The part name starts with "." and is short and
    random, so it fits any file system and never clashes with a real file or a parallel upload.
    """
    longest = await asyncio.to_thread(name_max, folder)
    if len(name.encode()) > longest:
        raise error(
            400,
            f"the file name is {len(name.encode())} bytes long; the collector's file system"
            f" takes at most {longest}",
        )
    too_large = too_large or error(413, f"{name} is larger than the {limit} byte limit")
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    part = folder / f".{secrets.token_hex(8)}.part"
    digest, size = hashlib.sha256(), 0
    out = await asyncio.to_thread(Writer.create, part)
    try:
        pipe = _Pipeline(lambda batch: _hash(digest, batch), out.write)
        try:
            batch = _Batch()
            # One piece at a time as the parser cut it, not read(n): that would join pieces.
            async for piece, _ in request.content.iter_chunks():
                size += len(piece)
                if size > limit:
                    raise too_large
                batch.add(piece)
                if batch.size >= CHUNK:
                    await pipe.put(batch.parts)  # handed over: never touched here again
                    batch = _Batch()
            await pipe.put(batch.parts)
            await pipe.drain()
            await asyncio.to_thread(out.sync)
        finally:
            await pipe.settle()  # no thread may still use the file when it is closed
            await asyncio.to_thread(out.close)
        yield Spooled(part, size, digest.hexdigest())
    finally:
        part.unlink(missing_ok=True)


class _Batch:
    """Pieces of the body, kept as they came unless small (then copied into one buffer)."""

    def __init__(self) -> None:
        self.parts: list[bytes | bytearray] = []
        self.size = 0

    def add(self, piece: bytes) -> None:
        self.size += len(piece)
        if len(piece) >= SMALL:
            self.parts.append(piece)
        elif self.parts and isinstance(self.parts[-1], bytearray):
            self.parts[-1] += piece
        elif piece:
            self.parts.append(bytearray(piece))


def _hash(digest: Any, parts: Sequence[bytes | bytearray]) -> None:
    for part in parts:
        digest.update(part)


class Writer:
    """A file written in batches with os.writev, its writeback started every WRITEBACK bytes."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.written = 0
        self.started = 0  # bytes whose writeback was started

    @classmethod
    def create(cls, path: Path) -> Writer:
        return cls(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666))

    def write(self, parts: Sequence[bytes | bytearray]) -> None:
        views = [memoryview(p) for p in parts if p]
        while views:
            n = os.writev(self.fd, views)
            self.written += n
            while views and n >= len(views[0]):  # a short write: resume where it stopped
                n -= len(views.pop(0))
            if n:
                views[0] = views[0][n:]
        if self.written - self.started >= WRITEBACK:
            self._start_writeback()

    def _start_writeback(self) -> None:
        # This window's writeback starts now; the window before, written back since, leaves
        # the page cache. Linux does both for DONTNEED; elsewhere it is only a hint.
        if hasattr(os, "posix_fadvise"):
            window = self.written - self.started
            low = max(0, self.started - window)
            os.posix_fadvise(self.fd, low, self.written - low, os.POSIX_FADV_DONTNEED)
        self.started = self.written

    def sync(self) -> None:
        os.fsync(self.fd)

    def close(self) -> None:
        os.close(self.fd)


class _Pipeline:
    """Feeds buffers, in order, to each of `stages` in its own thread, all stages at once;
    put() waits while DEPTH buffers are in flight, and raises a stage's error."""

    def __init__(self, *stages: Callable[[Any], object]) -> None:
        self.stages = stages
        self.last: list[asyncio.Future[None] | None] = [None] * len(stages)
        self.inflight: collections.deque[asyncio.Future[Any]] = collections.deque()

    async def put(self, buffer: Any) -> None:
        while len(self.inflight) >= DEPTH:
            await self.inflight.popleft()
        steps = []
        for i, stage in enumerate(self.stages):
            # Each step waits for the previous step of its stage: one stage is never run
            # on two buffers at once, nor out of order.
            step = asyncio.ensure_future(_after(self.last[i], stage, buffer))
            self.last[i] = step
            steps.append(step)
        self.inflight.append(asyncio.gather(*steps))

    async def drain(self) -> None:
        while self.inflight:
            await self.inflight.popleft()

    async def settle(self) -> None:
        """Wait for every started step, failed or not (bounded: at most DEPTH buffers)."""
        steps = [s for s in self.last if s is not None]
        await asyncio.gather(*steps, *self.inflight, return_exceptions=True)
        self.inflight.clear()


async def _after(
    previous: Awaitable[None] | None, stage: Callable[[Any], object], buffer: Any
) -> None:
    if previous is not None:
        await previous
    await asyncio.to_thread(stage, buffer)


def name_max(folder: Path) -> int:
    """The longest file name (in bytes) the file system holding `folder` takes."""
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255  # POSIX systems' usual NAME_MAX
