"""The registry against a real database: enrolment over HTTP, heartbeats through SERVICE.handle."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import uuid
from typing import Any

import aio_pika
import aiormq
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from skyline_messages import HostEnrolledV1, HostHeartbeatV1, HostStatusV1

from services.common.config import with_credentials
from services.common.service import RUNTIME, Runtime
from services.common.signing import public_key_b64, sign_body
from services.registry import owners
from services.registry.__main__ import SERVICE
from services.registry.handlers import mark_silent_hosts_offline

pytestmark = pytest.mark.integration

KEY = Ed25519PrivateKey.generate()
OTHER_KEY = Ed25519PrivateKey.generate()


def profile(host: str = "builder-1", key: Ed25519PrivateKey = KEY, **changes: Any) -> dict:
    body = {
        "host": host,
        "owner": "alice",
        "public_key": public_key_b64(key),
        "arches": ["noarch", "x86_64"],
        "releases": ["f40"],
        "cpus": 4,
        "memory_mb": 8192,
        "disk_gb": 100,
    }
    body.update(changes)
    return body


def iso(seconds_from_now: float = 0) -> str:
    at = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=seconds_from_now)
    return at.isoformat()


def heartbeat(
    host: str = "builder-1",
    key: Ed25519PrivateKey = KEY,
    *,
    free_slots: int = 2,
    signed_at: str | None = None,
    sandbox: str | None = None,
) -> HostHeartbeatV1:
    body = {"host": host, "free_slots": free_slots, "running": 1, "signed_at": signed_at or iso()}
    if sandbox is not None:
        body["sandbox"] = sandbox
    return HostHeartbeatV1(body=sign_body(body, key))


def configure(runtime: Runtime, **registry: Any) -> None:
    config = runtime.config
    runtime.config = dataclasses.replace(
        config, registry=dataclasses.replace(config.registry, **registry)
    )


KEYS = {public_key_b64(k): k for k in (KEY, OTHER_KEY)}


async def owner_token(client, owner: str = "alice") -> str:
    """`owner`'s token, the owner made on first use (as an admin would make it)."""
    runtime = client.server.app[RUNTIME]
    tokens = runtime.state.setdefault("test_owner_tokens", {})
    if owner not in tokens:
        async with runtime.pool.acquire() as conn:
            tokens[owner] = await owners.create(conn, owner)
    return tokens[owner]


async def as_owner(client, owner: str = "alice") -> dict[str, str]:
    return {"Authorization": f"Bearer {await owner_token(client, owner)}"}


async def enrol(
    client,
    body: dict,
    *,
    token: str | None = None,
    status: int = 201,
    signed_by: Ed25519PrivateKey | None = None,
) -> dict:
    """POST an enrolment, signed (proof of possession) by the key it names, as agents do,
    with the token of the owner it names (`token`: another one; "": none)."""
    if token is None:
        token = await owner_token(client, str(body.get("owner") or "alice"))
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    key = signed_by or KEYS.get(body.get("public_key", ""))
    if key is not None:
        body = sign_body(body, key)
    response = await client.post("/api/v1/hosts", json=body, headers=headers)
    assert response.status == status, await response.text()
    return await response.json()


async def host_row(runtime: Runtime, host: str = "builder-1"):
    return await runtime.pool.fetchrow("SELECT * FROM hosts WHERE host = $1", host)


# Enrolment


async def test_enrol_creates_an_untrusted_host_and_announces_it(client, runtime, sent) -> None:
    view = await enrol(client, profile())
    assert view["host"] == "builder-1"
    assert view["trust"] == "untrusted"
    assert view["state"] == "offline"
    assert view["public_key"] == public_key_b64(KEY)
    assert view["enrolled_at"] and view["last_heartbeat"] is None
    [msg] = await sent()
    assert type(msg) is HostEnrolledV1
    assert msg.body == {**profile(), "trust": "untrusted"}


async def test_re_enrolling_with_the_same_key_updates_the_profile(client, runtime, sent) -> None:
    await enrol(client, profile())
    view = await enrol(client, profile(arches=["aarch64"], cpus=16), status=200)
    assert view["arches"] == ["aarch64"]
    assert view["cpus"] == 16
    assert view["owner"] == "alice"  # only the hardware profile changes
    # Another owner's token cannot take the host over, even signed with its key.
    error = await enrol(client, profile(owner="mallory"), status=403)
    assert error["error"] == "host builder-1 belongs to another owner"
    row = await host_row(runtime)
    assert list(row["arches"]) == ["aarch64"]
    assert [type(m) for m in await sent()] == [HostEnrolledV1]


async def test_enrolling_a_taken_name_with_another_key_conflicts(client, runtime, sent) -> None:
    await enrol(client, profile())
    error = await enrol(client, profile(key=OTHER_KEY, arches=["s390x"]), status=409)
    assert error["status"] == 409
    assert "another key" in error["error"]
    row = await host_row(runtime)
    assert row["public_key"] == public_key_b64(KEY)
    assert list(row["arches"]) == ["noarch", "x86_64"]
    assert len(await sent()) == 1


async def test_an_unsigned_enrolment_is_refused(client, runtime, sent) -> None:
    response = await client.post("/api/v1/hosts", json=profile(), headers=await as_owner(client))
    assert response.status == 400
    assert "signed" in (await response.json())["error"]
    assert await host_row(runtime) is None and await sent() == []


async def test_re_enrolment_without_the_private_key_changes_nothing(client, runtime, sent) -> None:
    """Anyone can read a host's public key from the registry: naming it proves nothing."""
    await enrol(client, profile())
    mallory = Ed25519PrivateKey.generate()
    error = await enrol(client, profile(arches=["s390x"]), signed_by=mallory, status=403)
    assert "not signed by the private half" in error["error"]
    assert list((await host_row(runtime))["arches"]) == ["noarch", "x86_64"]
    assert len(await sent()) == 1


async def test_a_replayed_or_stale_enrolment_is_refused(client, runtime) -> None:
    signed = sign_body(profile(arches=["aarch64"]), KEY)
    alice = await as_owner(client)
    assert (await client.post("/api/v1/hosts", json=signed, headers=alice)).status == 201
    replay = await client.post("/api/v1/hosts", json=signed, headers=alice)
    assert replay.status == 403 and "replayed" in (await replay.json())["error"]
    stale = sign_body({**profile(arches=["s390x"]), "signed_at": iso(-3600)}, KEY)
    response = await client.post("/api/v1/hosts", json=stale, headers=alice)
    assert response.status == 403 and "clock" in (await response.json())["error"]
    assert list((await host_row(runtime))["arches"]) == ["aarch64"]


async def test_a_quarantined_host_cannot_re_enrol(client, runtime) -> None:
    await enrol(client, profile())
    await runtime.pool.execute("UPDATE hosts SET state = 'quarantined'")
    error = await enrol(client, profile(), status=403)
    assert "quarantined" in error["error"]


async def ignore(message: aio_pika.abc.AbstractIncomingMessage) -> None:
    pass


async def test_enrolment_makes_the_hosts_own_broker_user_and_lease_queue(
    client, runtime, broker
) -> None:
    """The reply carries credentials that reach the host's lease queue and nothing else."""
    runtime.state["broker_admin"] = broker.admin
    host = f"h-{uuid.uuid4().hex[:8]}"
    first = (await enrol(client, profile(host)))["broker"]
    assert first["user"] == f"host-{host}" and first["queue"] == f"skyline.builder.{host}"
    second = (await enrol(client, profile(host), status=200))["broker"]
    assert second["password"] != first["password"]  # each enrolment rotates it
    url = with_credentials(broker.amqp_url, second["user"], second["password"])
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        queue = await channel.get_queue(second["queue"])  # passive: no configure permission
        await queue.consume(ignore)  # its own lease queue: allowed
        with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
            other = await (await connection.channel()).get_queue("skyline.dispatcher", ensure=False)
            await other.consume(ignore)
    finally:
        await connection.close()
    with pytest.raises(aiormq.exceptions.ProbableAuthenticationError):
        await aio_pika.connect(with_credentials(broker.amqp_url, first["user"], first["password"]))


async def test_core_keys_enrol_as_core(client, runtime, sent) -> None:
    configure(runtime, core_keys=[public_key_b64(KEY)])
    assert (await enrol(client, profile()))["trust"] == "core"
    assert (await enrol(client, profile("builder-2", OTHER_KEY)))["trust"] == "untrusted"
    assert [m.body["trust"] for m in await sent()] == ["core", "untrusted"]


async def test_a_host_cannot_claim_its_own_trust(client, runtime) -> None:
    assert (await enrol(client, {**profile(), "trust": "core"}))["trust"] == "untrusted"


@pytest.mark.parametrize(
    "body",
    [
        profile(host="Builder_1"),
        profile(host="builder-1\n"),
        profile(host=""),
        profile(public_key="abc"),
        profile(public_key="A" * 44),  # right length, no padding
        profile(public_key=public_key_b64(KEY) + "\n"),
        profile(public_key=42),
        profile(arches=["sparc"]),
        profile(arches=[]),
        profile(cpus=0),
        {**profile(), "admin": True},
        {k: v for k, v in profile().items() if k != "public_key"},
    ],
)
async def test_invalid_enrolments_are_400_with_a_json_error(client, runtime, sent, body) -> None:
    error = await enrol(client, body, status=400)
    assert error["status"] == 400
    assert error["error"].startswith("invalid enrolment")
    assert await sent() == []


@pytest.mark.parametrize("data", [b"{not json", b"[1, 2]", b'"host"', b"\xff\xfe"])
async def test_non_object_bodies_are_400(client, sent, data: bytes) -> None:
    headers = {"Content-Type": "application/json", **await as_owner(client)}
    response = await client.post("/api/v1/hosts", data=data, headers=headers)
    assert response.status == 400
    assert (await response.json())["status"] == 400
    assert await sent() == []


async def test_get_and_list_hosts(client) -> None:
    await enrol(client, profile())
    await enrol(client, profile("builder-0", OTHER_KEY))
    response = await client.get("/api/v1/hosts/builder-1")
    assert response.status == 200
    view = await response.json()
    assert (view["public_key"], view["state"]) == (public_key_b64(KEY), "offline")
    missing = await client.get("/api/v1/hosts/nobody")
    assert missing.status == 404
    assert "nobody" in (await missing.json())["error"]
    listing = await (await client.get("/api/v1/hosts")).json()
    assert [h["host"] for h in listing["hosts"]] == ["builder-0", "builder-1"]


# Heartbeats


async def test_signed_heartbeat_marks_the_host_online(client, runtime, sent) -> None:
    await enrol(client, profile())
    msg = heartbeat(free_slots=3)
    await SERVICE.handle(runtime, msg)
    row = await host_row(runtime)
    assert (row["state"], row["free_slots"], row["running"]) == ("online", 3, 1)
    assert row["last_signed_at"] == datetime.datetime.fromisoformat(msg.body["signed_at"])
    status = (await sent())[-1]
    assert type(status) is HostStatusV1
    assert status.body["host"] == "builder-1"
    assert status.body["state"] == "online"
    assert status.body["free_slots"] == 3
    assert status.body["trust"] == "untrusted"
    assert status.body["arches"] == ["noarch", "x86_64"]
    assert status.body["releases"] == ["f40"]
    # The HTTP view follows.
    view = await (await client.get("/api/v1/hosts/builder-1")).json()
    assert view["state"] == "online"
    assert view["last_heartbeat"] is not None


async def test_newer_heartbeats_update_the_status(client, runtime, sent) -> None:
    await enrol(client, profile())
    await SERVICE.handle(runtime, heartbeat(free_slots=2, signed_at=iso(-20)))
    await SERVICE.handle(runtime, heartbeat(free_slots=0, signed_at=iso(-10)))
    statuses = [m.body["free_slots"] for m in await sent() if isinstance(m, HostStatusV1)]
    assert statuses == [2, 0]


async def test_the_host_view_shows_the_sandbox_the_host_last_reported(client, runtime) -> None:
    async def shown() -> str | None:
        return (await (await client.get("/api/v1/hosts/builder-1")).json())["sandbox"]

    await enrol(client, profile(sandbox="bwrap"))  # an agent says it at enrolment
    assert await shown() == "bwrap"
    await SERVICE.handle(runtime, heartbeat(signed_at=iso(-30), sandbox="none"))
    assert await shown() == "none"  # and in every heartbeat: the latest word counts
    await SERVICE.handle(runtime, heartbeat(signed_at=iso(-20)))
    assert await shown() == "none"  # an older agent's heartbeat says nothing: kept
    await SERVICE.handle(runtime, heartbeat(signed_at=iso(-30), sandbox="bwrap"))
    assert await shown() == "none"  # a replayed heartbeat changes nothing


async def dropped(runtime: Runtime, sent, msg: HostHeartbeatV1) -> None:
    before = len(await sent())
    row = await host_row(runtime, msg.body["host"])
    await SERVICE.handle(runtime, msg)  # must not raise: a dropped heartbeat is not retried
    assert len(await sent()) == before
    assert await host_row(runtime, msg.body["host"]) == row


async def test_heartbeat_with_a_bad_signature_is_dropped(client, runtime, sent) -> None:
    await enrol(client, profile())
    await dropped(runtime, sent, heartbeat(key=OTHER_KEY))
    forged = heartbeat().body
    await dropped(runtime, sent, HostHeartbeatV1(body={**forged, "free_slots": 99}))
    assert (await host_row(runtime))["state"] == "offline"


async def test_heartbeat_from_an_unknown_host_is_dropped(client, runtime, sent) -> None:
    await enrol(client, profile())
    msg = heartbeat("stranger")
    before = len(await sent())
    await SERVICE.handle(runtime, msg)
    assert len(await sent()) == before
    assert await host_row(runtime, "stranger") is None


async def test_replayed_heartbeat_is_dropped(client, runtime, sent) -> None:
    await enrol(client, profile())
    first = heartbeat(free_slots=2, signed_at=iso(-30))
    await SERVICE.handle(runtime, first)
    # Older than the one already seen, or the very same signed body under a new message id.
    await dropped(runtime, sent, heartbeat(free_slots=5, signed_at=iso(-60)))
    await dropped(runtime, sent, HostHeartbeatV1(body=first.body))
    assert (await host_row(runtime))["free_slots"] == 2


async def test_heartbeat_signed_in_the_future_is_dropped(client, runtime, sent) -> None:
    await enrol(client, profile())
    await dropped(runtime, sent, heartbeat(signed_at=iso(3600)))


@pytest.mark.parametrize(
    "signed_at",
    ["2026-01-01T00:00:00.000000", "not a timestamp, really", "2026-13-45T99:99:99+00:00"],
)
async def test_heartbeat_with_an_unreadable_signed_at_is_dropped(
    client, runtime, sent, signed_at: str
) -> None:
    # Signed by the host, valid for the schema (which does not check formats), yet unusable:
    # dropped, not crashing the handler into redelivery.
    await enrol(client, profile())
    msg = heartbeat(signed_at=signed_at)
    msg.validate()
    await dropped(runtime, sent, msg)


async def test_the_same_delivery_twice_is_processed_once(client, runtime, sent) -> None:
    await enrol(client, profile())
    msg = heartbeat()
    await SERVICE.handle(runtime, msg)
    # Forget the replay guard: only the processed-message record can stop a second status.
    await runtime.pool.execute("UPDATE hosts SET last_signed_at = NULL")
    await SERVICE.handle(runtime, msg)
    assert len([m for m in await sent() if isinstance(m, HostStatusV1)]) == 1
    assert await runtime.pool.fetchval("SELECT count(*) FROM processed_messages") == 1


async def test_quarantined_host_stays_quarantined(client, runtime, sent) -> None:
    await enrol(client, profile())
    await runtime.pool.execute("UPDATE hosts SET state = 'quarantined'")
    await SERVICE.handle(runtime, heartbeat(free_slots=4))
    [status] = [m for m in await sent() if isinstance(m, HostStatusV1)]
    assert (status.body["state"], status.body["free_slots"]) == ("quarantined", 0)


async def test_silent_hosts_go_offline(client, runtime, sent) -> None:
    configure(runtime, heartbeat_timeout=60)
    await enrol(client, profile())
    await enrol(client, profile("builder-2", OTHER_KEY))
    await SERVICE.handle(runtime, heartbeat())
    await SERVICE.handle(runtime, heartbeat("builder-2", OTHER_KEY))
    await runtime.pool.execute(
        "UPDATE hosts SET last_heartbeat = now() - interval '61 seconds' WHERE host = 'builder-1'"
    )
    before = len(await sent())
    await mark_silent_hosts_offline(runtime)
    new = (await sent())[before:]
    assert [(m.body["host"], m.body["state"], m.body["free_slots"]) for m in new] == [
        ("builder-1", "offline", 0)
    ]
    assert all(type(m) is HostStatusV1 for m in new)
    assert (await host_row(runtime, "builder-1"))["state"] == "offline"
    assert (await host_row(runtime, "builder-2"))["state"] == "online"
    # Offline hosts are not announced again.
    await mark_silent_hosts_offline(runtime)
    assert len(await sent()) == before + 1
    # A fresh heartbeat brings the host back.
    await SERVICE.handle(runtime, heartbeat())
    assert (await host_row(runtime, "builder-1"))["state"] == "online"


async def test_status_slots_are_capped_by_the_enrolled_cpus(client, runtime, sent) -> None:
    await enrol(client, profile(cpus=2))
    no_cpus = profile("builder-2", OTHER_KEY)
    del no_cpus["cpus"]
    await enrol(client, no_cpus)
    await SERVICE.handle(runtime, heartbeat(free_slots=1024))
    await SERVICE.handle(runtime, heartbeat("builder-2", OTHER_KEY, free_slots=8))
    statuses = {m.body["host"]: m.body for m in await sent() if isinstance(m, HostStatusV1)}
    # A host's heartbeat is its own word: what it enrolled (one slot per CPU) caps it.
    first = statuses["builder-1"]
    assert (first["free_slots"], first["running"], first["max_slots"]) == (2, 1, 2)
    # A host that did not say how many CPUs it has gets one slot.
    second = statuses["builder-2"]
    assert (second["free_slots"], second["running"], second["max_slots"]) == (1, 1, 1)


async def test_quarantine_deletes_the_hosts_broker_user_and_release_lets_it_enrol(
    client, runtime, sent, broker
) -> None:
    runtime.state["broker_admin"] = broker.admin
    configure(runtime, admin_token="adm1n")
    host = f"q-{uuid.uuid4().hex[:8]}"
    creds = (await enrol(client, profile(host)))["broker"]
    url = with_credentials(broker.amqp_url, creds["user"], creds["password"])
    connection = await aio_pika.connect(url)
    cut_off = asyncio.Event()
    connection.close_callbacks.add(lambda *args: cut_off.set())
    admin = {"Authorization": "Bearer adm1n"}
    assert (await client.post(f"/api/v1/hosts/{host}/quarantine")).status == 401
    assert (await client.post("/api/v1/hosts/nobody/quarantine", headers=admin)).status == 404
    response = await client.post(f"/api/v1/hosts/{host}/quarantine", headers=admin)
    assert response.status == 200 and (await response.json())["state"] == "quarantined"
    status_sent = [m for m in await sent() if isinstance(m, HostStatusV1)]
    assert status_sent[-1].body["state"] == "quarantined"
    # Its connection is closed now, and its credentials no longer open one.
    await asyncio.wait_for(cut_off.wait(), 15)
    with pytest.raises(aiormq.exceptions.ProbableAuthenticationError):
        await aio_pika.connect(url)
    assert "quarantined" in (await enrol(client, profile(host), status=403))["error"]
    released = await client.post(f"/api/v1/hosts/{host}/release", headers=admin)
    assert (await released.json())["state"] == "offline"
    again = (await enrol(client, profile(host), status=200))["broker"]
    connection = await aio_pika.connect(
        with_credentials(broker.amqp_url, again["user"], again["password"])
    )
    await connection.close()
