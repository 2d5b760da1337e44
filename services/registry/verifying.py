"""Heartbeat signatures checked many at a time, optionally in worker processes.

An Ed25519 verify is most of a heartbeat's CPU in the registry (bench/heartbeat_consume.py):
`cryptography` holds the GIL while it verifies, so threads do not help (measured: two threads
verify no faster than one). With `registry.verify_processes` > 0 each batch's signatures are
checked in a pool of that many worker processes, so the event loop goes on decoding, acking and
writing while another core verifies; 0 checks them in the event loop. The check itself is
`signing.verify_body` either way; batches smaller than INLINE_BELOW are checked inline, where
the round trip to a worker would cost more than it saves.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import concurrent.futures.process
import logging
import multiprocessing
from collections.abc import Mapping, Sequence
from typing import Any

from services.common.errors import SignatureError
from services.common.signing import verify_body

log = logging.getLogger(__name__)
INLINE_BELOW = 8
# One pool per process and size (the bench starts and stops the service several times).
_POOLS: dict[int, concurrent.futures.ProcessPoolExecutor] = {}


def verify_many(items: Sequence[tuple[Mapping[str, Any], str]]) -> list[bool]:
    """For each (body, public key): whether the body carries that key's signature."""
    results = []
    for body, public_key in items:
        try:
            verify_body(body, public_key)
        except SignatureError:
            results.append(False)
        else:
            results.append(True)
    return results


def _pool(processes: int) -> concurrent.futures.ProcessPoolExecutor:
    pool = _POOLS.get(processes)
    if pool is None:
        # spawn, not fork: the service has threads (telemetry) and an event loop running.
        context = multiprocessing.get_context("spawn")
        pool = _POOLS[processes] = concurrent.futures.ProcessPoolExecutor(
            processes, mp_context=context
        )
    return pool


async def verify(items: Sequence[tuple[Mapping[str, Any], str]], processes: int) -> list[bool]:
    """`verify_many`, in `processes` worker processes when there are any and it pays."""
    if processes <= 0 or len(items) < INLINE_BELOW:
        return verify_many(items)
    pool = _pool(processes)
    # One call per worker, so each verifies its share at once.
    share = -(-len(items) // processes)
    parts = [items[i : i + share] for i in range(0, len(items), share)]
    loop = asyncio.get_running_loop()
    try:
        done = await asyncio.gather(*(loop.run_in_executor(pool, verify_many, p) for p in parts))
    except concurrent.futures.process.BrokenProcessPool:
        # A worker died (killed, out of memory): a new pool next time, this batch inline.
        log.warning("signature worker pool broken: verifying inline, a new pool next batch")
        _POOLS.pop(processes, None)
        return verify_many(items)
    return [ok for part in done for ok in part]
