"""Heartbeats handled many to a transaction: statuses only when something changed."""

from __future__ import annotations

import asyncio

import pytest
from skyline_messages import HostHeartbeatV1, HostStatusV1
from test_registry_service import KEY, OTHER_KEY, configure, enrol, heartbeat, iso, profile

from services.common.batch import Batcher
from services.registry.__main__ import SERVICE
from services.registry.handlers import mark_silent_hosts_offline, on_heartbeats

pytestmark = pytest.mark.integration


async def statuses(sent) -> list[tuple[str, str, int]]:
    return [
        (m.body["host"], m.body["state"], m.body["free_slots"])
        for m in await sent()
        if isinstance(m, HostStatusV1)
    ]


async def handle_batch(runtime, msgs: list[HostHeartbeatV1]) -> None:
    async with runtime.transaction() as ctx:
        await on_heartbeats(msgs, ctx)


async def test_unchanged_heartbeats_publish_no_status_until_the_refresh(
    client, runtime, sent
) -> None:
    await enrol(client, profile())
    await SERVICE.handle(runtime, heartbeat(free_slots=2, signed_at=iso(-30)))
    await SERVICE.handle(runtime, heartbeat(free_slots=2, signed_at=iso(-20)))
    assert await statuses(sent) == [("builder-1", "online", 2)]
    await SERVICE.handle(runtime, heartbeat(free_slots=1, signed_at=iso(-10)))
    assert (await statuses(sent))[-1] == ("builder-1", "online", 1)
    configure(runtime, status_refresh=0)  # a refresh is due at every heartbeat
    await SERVICE.handle(runtime, heartbeat(free_slots=1, signed_at=iso(-5)))
    assert await statuses(sent) == [
        ("builder-1", "online", 2),
        ("builder-1", "online", 1),
        ("builder-1", "online", 1),
    ]


async def test_a_batch_keeps_every_check_and_the_newest_heartbeat_per_host(
    client, runtime, sent
) -> None:
    await enrol(client, profile())
    await enrol(client, profile("builder-2", OTHER_KEY))
    older = heartbeat(free_slots=5, signed_at=iso(-20))
    batch = [
        older,
        heartbeat(free_slots=3, signed_at=iso(-10)),
        HostHeartbeatV1(body=older.body),  # a replay inside the batch
        heartbeat("builder-2", KEY),  # signed with someone else's key
        heartbeat("stranger"),
        heartbeat("builder-2", OTHER_KEY, free_slots=4, signed_at=iso(3600)),  # the future
    ]
    await handle_batch(runtime, batch)
    assert await statuses(sent) == [("builder-1", "online", 3)]
    row = await runtime.pool.fetchrow("SELECT * FROM hosts WHERE host = 'builder-2'")
    assert row["state"] == "offline"


async def test_an_offline_host_is_announced_again_when_it_comes_back(client, runtime, sent) -> None:
    configure(runtime, heartbeat_timeout=60)
    await enrol(client, profile())
    await SERVICE.handle(runtime, heartbeat(signed_at=iso(-10)))
    await runtime.pool.execute("UPDATE hosts SET last_heartbeat = now() - interval '61 seconds'")
    await mark_silent_hosts_offline(runtime)
    await SERVICE.handle(runtime, heartbeat())
    assert [s[1] for s in await statuses(sent)] == ["online", "offline", "online"]


async def test_a_redelivered_heartbeat_batch_changes_nothing_and_records_no_ids(
    client, runtime, sent
) -> None:
    """Heartbeats keep no processed-message ids (the largest table at 100,000 hosts): their
    signed, per-host increasing time is what makes a redelivery a no-op."""
    await enrol(client, profile())
    await enrol(client, profile("builder-2", OTHER_KEY))
    configure(runtime, status_refresh=0)  # every heartbeat applied would publish a status
    batcher = Batcher(runtime, on_heartbeats, size=3, wait=0.01)
    first = [
        heartbeat(free_slots=1, signed_at=iso(-20)),
        heartbeat(free_slots=2, signed_at=iso(-10)),
        heartbeat("builder-2", OTHER_KEY, free_slots=3),
    ]
    await asyncio.gather(*(batcher.submit(m) for m in first))
    published = await statuses(sent)
    assert published == [("builder-1", "online", 2), ("builder-2", "online", 3)]
    await asyncio.gather(*(batcher.submit(m) for m in first))  # all of it again
    assert await statuses(sent) == published
    row = await runtime.pool.fetchrow("SELECT * FROM hosts WHERE host = 'builder-1'")
    assert row["free_slots"] == 2
    assert await runtime.pool.fetchval("SELECT count(*) FROM processed_messages") == 0
