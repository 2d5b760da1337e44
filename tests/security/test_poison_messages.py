"""Messages that cannot be decoded, or are too large, cannot stall or flood a service."""

from __future__ import annotations

import json

import pytest
from skyline_messages import BuildCompleteV1

from services.common.bus import MAX_MESSAGE_BYTES
from tests.security.attack import (
    build_id_of,
    dead_letters,
    raw,
    refused_publish,
    request_body,
    submit,
    try_publish,
    wait_for_log,
)

pytestmark = pytest.mark.e2e
POISONS = 12  # more than the dispatcher's prefetch: held deliveries would stall it for good


async def test_poison_properties_are_dead_lettered_and_the_dispatcher_goes_on(
    system, example_srpm, tap
):
    body = await request_body(system, example_srpm, scratch=True)
    key = f"skyline.build.request.{system.owner}"
    poisons = [raw(body, content_encoding="x-no-such-codec") for _ in range(POISONS)]
    poisons += [
        raw(body, headers={"fedora_messaging_schema": 42, "fedora_messaging_severity": 20})
        for _ in range(POISONS)
    ]
    for message in poisons:
        assert await try_publish(system.url_of(system.owner), key, message) is None

    dead = await dead_letters(system, {m.message_id for m in poisons})
    assert len(dead) == 2 * POISONS
    await wait_for_log(system, "dispatcher", "cannot decode")

    request = await submit(system, body)
    build_id = await build_id_of(system, request)
    await tap.wait(BuildCompleteV1, timeout=120, build_id=build_id)


async def test_huge_bodies_neither_flood_the_log_nor_pass_the_broker(system, example_srpm):
    body = await request_body(system, example_srpm, scratch=True)
    key = f"skyline.build.request.{system.owner}"
    # ~3 MiB, below the size limit but invalid: its whole text is in the validation error.
    huge = raw(json.dumps({**body, "arches": ["x" * (3 * 1024 * 1024)]}).encode())
    assert await try_publish(system.url_of(system.owner), key, huge) is None
    assert await dead_letters(system, {huge.message_id})
    await wait_for_log(system, "dispatcher", f"(id {huge.message_id})")
    log = (system.logs / "dispatcher.log").read_text(errors="replace")
    assert max(len(line) for line in log.splitlines()) < 4096

    too_big = raw(b" " * (MAX_MESSAGE_BYTES + 1024))
    refusal = await refused_publish(system.url_of(system.owner), key, too_big)
    assert "larger than configured max size" in str(refusal), refusal
