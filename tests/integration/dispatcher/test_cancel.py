"""Cancel: the owner's POST /api/v1/builds/{id}/cancel on a real database and broker.

The owner is whoever the registry's GET /api/v1/owners/whoami says the token belongs to
(the contract the collector's uploads use too); a stand-in answers it here.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from fedora_messaging import message as fm
from skyline_messages import BuildFailedV1, TaskLeasedV1, TaskRevokedV1

from services.common.bus import Bus
from services.common.service import Runtime
from services.dispatcher.__main__ import SERVICE
from tests.integration.dispatcher.test_dispatcher_service import (
    new_messages,
    of_type,
    request,
    status,
    task_rows,
)

pytestmark = pytest.mark.integration

TOKENS = {"alice-token-0123456789": "alice", "bob-token-0123456789ab": "bob"}


@pytest.fixture
async def registry(runtime: Runtime) -> AsyncIterator[list[str]]:
    """The registry's whoami: 200 {"owner"} for a known token, 401 otherwise."""
    asked: list[str] = []

    async def whoami(request: web.Request) -> web.Response:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        asked.append(token)
        if token not in TOKENS:
            return web.json_response({"error": "unknown token", "status": 401}, status=401)
        return web.json_response({"owner": TOKENS[token]})

    app = web.Application()
    app.router.add_get("/api/v1/owners/whoami", whoami)
    server = TestServer(app)
    await server.start_server()
    conf = runtime.config
    runtime.config = dataclasses.replace(
        conf,
        dispatcher=dataclasses.replace(
            conf.dispatcher, registry_url=str(server.make_url("")).rstrip("/")
        ),
    )
    try:
        yield asked
    finally:
        await server.close()


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def leased_build(runtime: Runtime, sent) -> tuple[int, TaskLeasedV1]:
    """Alice's build of noarch (leased to core-1) and s390x (no host: queued)."""
    await SERVICE.handle(runtime, request(arches=["noarch", "s390x"]))
    [lease] = await new_messages(runtime, sent, status("core-1"))
    assert isinstance(lease, TaskLeasedV1)
    return lease.build_id, lease


async def test_owner_cancels_revokes_the_lease_and_fails_the_build(
    runtime, sent, client, registry
) -> None:
    build_id, lease = await leased_build(runtime, sent)
    before = len(await sent())

    reply = await client.post(
        f"/api/v1/builds/{build_id}/cancel", headers=auth("alice-token-0123456789")
    )
    assert reply.status == 200, await reply.text()
    body = await reply.json()
    assert body == {
        "build_id": build_id,
        "state": "failed",
        "reason": "cancelled by alice",
        "cancelled_tasks": 2,
        "revoked": [{"lease_id": lease.lease_id, "host": "core-1"}],
    }
    new = (await sent())[before:]
    [revoked] = of_type(new, TaskRevokedV1)
    assert revoked.topic == "skyline.task.revoked.core-1"
    assert revoked.body == {
        "task_id": lease.task_id,
        "build_id": build_id,
        "lease_id": lease.lease_id,
        "host": "core-1",
        "arch": "noarch",
        "nvr": lease.nvr,
        "reason": "cancelled by alice",
    }
    [failed] = of_type(new, BuildFailedV1)
    assert failed.body["reason"] == "cancelled by alice"
    assert sorted(failed.body["failed_arches"]) == ["noarch", "s390x"]
    assert [(t["state"], t["reason"]) for t in await task_rows(runtime)] == [
        ("failed", "cancelled by alice")
    ] * 2
    lease_state = await runtime.pool.fetchval("SELECT state FROM leases")
    assert lease_state == "revoked"
    # The host's slot is free again: its next heartbeat may get other work.
    [next_lease] = of_type(await new_messages(runtime, sent, request()), TaskLeasedV1)
    assert next_lease.build_id != build_id
    # A second cancel finds the build over.
    again = await client.post(
        f"/api/v1/builds/{build_id}/cancel", headers=auth("alice-token-0123456789")
    )
    assert again.status == 409


async def test_only_the_owner_may_cancel(runtime, sent, client, registry) -> None:
    build_id, _ = await leased_build(runtime, sent)
    before = len(await sent())
    url = f"/api/v1/builds/{build_id}/cancel"
    bob = await client.post(url, headers=auth("bob-token-0123456789ab"))
    assert bob.status == 403
    assert (await bob.json())["error"] == (
        f"build {build_id} is alice's: only its owner may cancel it"
    )
    assert (await client.post(url)).status == 401
    assert (await client.post(url, headers=auth("unknown-token-0123456789"))).status == 401
    assert (
        await client.post("/api/v1/builds/999/cancel", headers=auth("alice-token-0123456789"))
    ).status == 404
    # Nothing changed: no revocation, the build goes on.
    assert (await sent())[before:] == []
    assert [t["state"] for t in await task_rows(runtime)] == ["leased", "queued"]


async def test_registry_down_is_a_503_not_a_cancel(runtime, sent, client) -> None:
    conf = runtime.config
    runtime.config = dataclasses.replace(
        conf, dispatcher=dataclasses.replace(conf.dispatcher, registry_url="http://127.0.0.1:1")
    )
    build_id, _ = await leased_build(runtime, sent)
    reply = await client.post(
        f"/api/v1/builds/{build_id}/cancel", headers=auth("alice-token-0123456789")
    )
    assert reply.status == 503
    assert [t["state"] for t in await task_rows(runtime)] == ["leased", "queued"]


async def test_revocation_reaches_only_the_leased_hosts_queue(broker) -> None:
    """The registry binds task.revoked.<host> to the host's lease queue: published by the
    dispatcher's own broker user, it reaches that host, and no other host's queue."""
    dispatcher = Bus(await broker.service("dispatcher"))
    hosts = {
        "cancel-a": Bus(await broker.host("cancel-a")),
        "cancel-b": Bus(await broker.host("cancel-b")),
    }
    got: dict[str, list[fm.Message]] = {h: [] for h in hosts}
    arrived = asyncio.Event()
    try:
        for host, bus in hosts.items():
            await bus.connect()

            async def on_message(msg: fm.Message, host: str = host) -> None:
                got[host].append(msg)
                arrived.set()

            await bus.subscribe(f"skyline.builder.{host}", [], on_message, declare=False)
        await dispatcher.connect()
        body = {
            "task_id": 1,
            "build_id": 1,
            "lease_id": "3f2b8c1e-9a4d-4e6f-8b7a-1c2d3e4f5a6b",
            "host": "cancel-a",
            "arch": "noarch",
            "reason": "cancelled by alice",
        }
        msg = TaskRevokedV1(body=body, topic=TaskRevokedV1.topic_for("cancel-a"))
        await dispatcher.publish(msg)
        await asyncio.wait_for(arrived.wait(), 10)
        [received] = got["cancel-a"]
        assert isinstance(received, TaskRevokedV1) and received.id == msg.id
        assert got["cancel-b"] == []
    finally:
        await dispatcher.close()
        for bus in hosts.values():
            await bus.close()
