"""Attacks on limits: hoarding leases with made-up free slots, flooding a lease with files,
file names the file system cannot hold, and SRPMs uploaded by nobody in particular."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

import aiohttp
import pytest
from skyline_messages import BuildCompleteV1, HostHeartbeatV1, HostStatusV1, TaskLeasedV1

from services.builder import client
from services.cli.localsystem import LocalSystem
from services.common.bus import Bus
from services.common.signing import sign_body
from services.common.testing import until
from tests.security.attack import build_id_of, get_json, request_body, submit
from tests.system import Rogue, Tap, enrol_host

pytestmark = pytest.mark.e2e


async def heartbeat(rogue: Rogue, free_slots: int) -> None:
    """A heartbeat signed with the rogue's own key, on its own routing key: all allowed."""
    body = sign_body({"host": rogue.host, "free_slots": free_slots, "running": 0}, rogue.key)
    msg = HostHeartbeatV1(body=body, topic=HostHeartbeatV1.topic_for(rogue.host))
    bus = Bus(rogue.amqp_url)  # the agent's own transport, as the rogue's own broker user
    await bus.connect()
    try:
        await bus.publish(msg)
    finally:
        await bus.close()


async def dispatcher_view(system: LocalSystem, host: str) -> dict[str, Any]:
    queue = await get_json(f"{system.url('dispatcher')}/api/v1/queue")
    return next((h for h in queue["hosts"] if h["host"] == host), {})


async def rogue_with_lease(system: LocalSystem, tap: Tap, example_srpm) -> tuple[Rogue, Any]:
    """A rogue that advertises 1,024 free slots and a lease it won with them."""
    rogue = await enrol_host(system, f"hoarder-{uuid.uuid4().hex[:6]}", cpus=2)
    await heartbeat(rogue, 1024)

    async def counted() -> bool:
        view = await dispatcher_view(system, rogue.host)
        return view.get("state") == "online" and view.get("max_slots") == 2

    await until(counted, f"the dispatcher counts {rogue.host} online with its 2 enrolled slots")
    body = await request_body(system, example_srpm, scratch=True)
    requests = [await submit(system, body) for _ in range(6)]
    build_ids = [await build_id_of(system, r) for r in requests]
    lease = await tap.wait(TaskLeasedV1, timeout=60, host=rogue.host)
    return rogue, (lease, build_ids)


async def test_advertised_free_slots_are_capped_by_what_the_host_enrolled(
    system, tap, example_srpm
):
    """A host that enrolled 2 CPUs and claims 1,024 free slots holds at most 2 leases: the
    dispatcher counts its own open leases, and the registry caps the claim."""
    rogue, (first, build_ids) = await rogue_with_lease(system, tap, example_srpm)
    try:
        status = await tap.wait(HostStatusV1, host=rogue.host, state="online")
        assert status.body["free_slots"] <= 2 and status.body["max_slots"] == 2
        # Every build completes (the honest builders take what the rogue cannot hold, and the
        # rogue's own leases expire and are requeued); meanwhile the rogue never held more
        # than two leases issued before its first one expired.
        for build_id in build_ids:
            await tap.wait(BuildCompleteV1, timeout=240, build_id=build_id)
        window = first.body["lease_expires"]
        held = {
            m.body["lease_id"]
            for m in tap.of(TaskLeasedV1, host=rogue.host)
            if m.body["lease_expires"] <= window
        }
        assert 1 <= len(held) <= 2
    finally:
        await heartbeat(rogue, 0)  # stop winning leases for later tests


async def upload(
    system: LocalSystem, rogue: Rogue, lease_id: str, name: str, data: bytes
) -> aiohttp.ClientResponse:
    digest = hashlib.sha256(data).hexdigest()
    headers = client.upload_headers(lease_id, name, digest, host=rogue.host, key=rogue.key)
    headers[client.SHA256_HEADER] = digest
    url = f"{system.url('collector')}/api/v1/uploads/{lease_id}/{name}"
    async with aiohttp.ClientSession() as http, http.put(url, data=data, headers=headers) as r:
        await r.read()
        return r


async def test_a_lease_takes_a_bounded_number_of_files_and_names_that_fit(
    system, tap, example_srpm
):
    rogue, (lease, _) = await rogue_with_lease(system, tap, example_srpm)
    lease_id = lease.body["lease_id"]
    try:
        # A 240-character name (the spool's temporary name once overflowed NAME_MAX: a 500).
        long_name = "x" * 236 + ".log"
        assert (await upload(system, rogue, lease_id, long_name, b"log")).status == 201
        too_long = "y" * 300 + ".log"
        assert (await upload(system, rogue, lease_id, too_long, b"log")).status == 400
        limit = 500  # [collector] max_files_per_lease's default
        statuses = []
        for i in range(limit):
            statuses.append((await upload(system, rogue, lease_id, f"f{i}.log", b"x")).status)
        # One file was already there: the limit refuses the last, with a client error.
        assert statuses.count(201) == limit - 1 and statuses[-1] == 413
        listed = await get_json(f"{system.url('collector')}/api/v1/uploads/{lease_id}")
        assert len(listed["files"]) == limit
    finally:
        await heartbeat(rogue, 0)


async def test_anonymous_srpm_uploads_are_refused(system, example_srpm):
    """Only an owner (with its token) may put an SRPM where builders fetch it from."""
    data = example_srpm.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    name = f"anon-{uuid.uuid4().hex[:6]}-1.0-1.src.rpm"
    url = f"{system.url('collector')}/api/v1/sources/{digest}/{name}"
    async with aiohttp.ClientSession() as http:
        for headers in ({}, {"Authorization": "Bearer not-a-token"}):
            async with http.put(url, data=data, headers=headers) as response:
                assert response.status == 401, await response.text()
        async with http.get(f"{system.url('collector')}/sources/{digest}/{name}") as response:
            assert response.status == 404
