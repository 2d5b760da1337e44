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
    digest, size, buffer = hashlib.sha256(), 0, bytearray()
    out: BinaryIO = await asyncio.to_thread(open, part, "xb")
    try:
        try:
            async for chunk in request.content.iter_chunked(CHUNK):
                size += len(chunk)
                if size > limit:
                    raise too_large
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


def name_max(folder: Path) -> int:
    """The longest file name (in bytes) the file system holding `folder` takes."""
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255  # POSIX systems' usual NAME_MAX


def _write(out: BinaryIO, digest: Any, data: bytes, *, sync: bool = False) -> None:
    digest.update(data)  # hashlib releases the GIL on large buffers
    out.write(data)
    if sync:
        out.flush()
        os.fsync(out.fileno())
