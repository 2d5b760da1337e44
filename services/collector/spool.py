"""Stream an HTTP request body to a file: constant memory for any size, at near disk speed.

The body is cut into CHUNK-sized buffers that go down a short pipeline: while the event loop
receives the next buffer, one thread hashes and another writes the ones before (hashlib and
file writes release the GIL), each stage in order. At most DEPTH buffers are in flight, so an
upload holds about (DEPTH + 1) * CHUNK bytes however large it is, and a slow disk slows the
sender down (TCP flow control) instead of filling memory. The file is fsynced once, at the
end: that is where durability is needed (before the caller moves it into place); syncing
every chunk would only make the disk wait on the network and vice versa.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from aiohttp import web

from services.common.http import error

CHUNK = 1024 * 1024  # bytes per buffer handed to the hashing and writing threads
DEPTH = 4  # buffers in flight per upload: enough to keep both threads and the disk busy


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
    out: BinaryIO = await asyncio.to_thread(open, part, "xb")
    try:
        pipe = _Pipeline(digest.update, out.write)
        try:
            buffer = bytearray()
            async for chunk in request.content.iter_chunked(CHUNK):
                size += len(chunk)
                if size > limit:
                    raise too_large
                buffer += chunk
                if len(buffer) >= CHUNK:
                    await pipe.put(buffer)  # handed over: never touched here again
                    buffer = bytearray()
            await pipe.put(buffer)
            await pipe.drain()
            await asyncio.to_thread(_sync, out)
        finally:
            await pipe.settle()  # no thread may still use `out` when it is closed
            await asyncio.to_thread(out.close)
        yield Spooled(part, size, digest.hexdigest())
    finally:
        part.unlink(missing_ok=True)


class _Pipeline:
    """Feeds buffers, in order, to each of `stages` in its own thread, all stages at once;
    put() waits while DEPTH buffers are in flight, and raises a stage's error."""

    def __init__(self, *stages: Callable[[Any], object]) -> None:
        self.stages = stages
        self.last: list[asyncio.Future[None] | None] = [None] * len(stages)
        self.inflight: collections.deque[asyncio.Future[Any]] = collections.deque()

    async def put(self, buffer: bytearray) -> None:
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
    previous: Awaitable[None] | None, stage: Callable[[Any], object], buffer: bytearray
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


def _sync(out: BinaryIO) -> None:
    out.flush()
    os.fsync(out.fileno())
