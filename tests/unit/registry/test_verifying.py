"""Heartbeat signatures checked in a batch, inline or in worker processes: same answers."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.common.signing import public_key_b64, sign_body
from services.registry import verifying

KEY, OTHER = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()


def items() -> tuple[list, list[bool]]:
    good = sign_body({"host": "h1", "free_slots": 1}, KEY)
    forged = sign_body({"host": "h1", "free_slots": 1}, OTHER)  # another key signed it
    altered = {**good, "free_slots": 2}  # changed after signing
    garbage = {**good, "signature": 42}
    batch = [good, forged, altered, garbage] * 3
    return [(b, public_key_b64(KEY)) for b in batch], [True, False, False, False] * 3


@pytest.mark.parametrize("processes", [0, 2])
async def test_a_batch_is_verified_the_same_inline_and_in_workers(processes) -> None:
    batch, expected = items()
    assert len(batch) >= verifying.INLINE_BELOW
    assert await verifying.verify(batch, processes) == expected


async def test_a_small_batch_is_verified_inline() -> None:
    batch, expected = items()
    assert await verifying.verify(batch[:2], 4) == expected[:2]
    assert 4 not in verifying._POOLS


async def test_a_broken_pool_is_replaced_and_the_batch_verified_inline() -> None:
    batch, expected = items()
    assert await verifying.verify(batch, 1) == expected
    pool = verifying._POOLS[1]
    for process in list(pool._processes.values()):  # a worker killed (out of memory, say)
        process.kill()
        process.join()
    assert await verifying.verify(batch, 1) == expected
    assert await verifying.verify(batch, 1) == expected  # with a new pool
    assert verifying._POOLS[1] is not pool
