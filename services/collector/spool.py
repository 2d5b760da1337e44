"""Stream an HTTP request body to a file: constant memory for any size, hashed on the way."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from aiohttp import web

from services.common.http import error

CHUNK = 1024 * 1024  # what is buffered before one write; the memory used per upload


@dataclass(frozen=True)
class Spooled:
    path: Path
    size: int
    sha256: str


@contextlib.asynccontextmanager
async def spool(
    request: web.Request, folder: Path, name: str, limit: int
) -> AsyncIterator[Spooled]:
    """Write the body to a hidden part file in `folder`; it is removed on exit unless moved.

    Raises 413 as soon as the body passes `limit` bytes. The part name starts with "." and
    has a random tail, so it never clashes with a real file name or a parallel upload.
    """
    if request.content_length is not None and request.content_length > limit:
        raise error(413, f"{name} is larger than the {limit} byte limit")
    part = folder / f".{name}.{secrets.token_hex(6)}.part"
    digest, size, buffer = hashlib.sha256(), 0, bytearray()
    out: BinaryIO = await asyncio.to_thread(open, part, "xb")
    try:
        try:
            async for chunk in request.content.iter_chunked(CHUNK):
                size += len(chunk)
                if size > limit:
                    raise error(413, f"{name} is larger than the {limit} byte limit")
                buffer += chunk
                if len(buffer) >= CHUNK:
                    # Disk writes can stall under write-back pressure: keep them off the loop.
                    await asyncio.to_thread(_write, out, digest, bytes(buffer))
                    buffer.clear()
            await asyncio.to_thread(_write, out, digest, bytes(buffer), sync=True)
        finally:
            await asyncio.to_thread(out.close)
        yield Spooled(part, size, digest.hexdigest())
    finally:
        part.unlink(missing_ok=True)


def _write(out: BinaryIO, digest: Any, data: bytes, *, sync: bool = False) -> None:
    digest.update(data)  # hashlib releases the GIL on large buffers
    out.write(data)
    if sync:
        out.flush()
        os.fsync(out.fileno())
