"""Retention of the registry's history: old availability changes and builds go, the window
stays, and QoS figures compute the same before and after."""

from __future__ import annotations

import dataclasses
import uuid

import pytest
from test_registry_service import configure, enrol, profile

from services.registry.__main__ import SERVICE

pytestmark = pytest.mark.integration

# (days ago, old state, new state, reason): the host's life, oldest first.
LIFE = [
    (39, "offline", "online", "heartbeat"),
    (35, "online", "offline", "silent"),
    (34, "offline", "online", "heartbeat"),  # the last change before the 30-day cutoff
    (2, "online", "offline", "silent"),
    (1.9, "offline", "online", "heartbeat"),
]


async def add_life(runtime) -> None:
    await runtime.pool.execute("UPDATE hosts SET enrolled_at = now() - interval '40 days'")
    for days, old, new, reason in LIFE:
        await runtime.pool.execute(
            "INSERT INTO host_state_changes (host, old_state, new_state, reason, at)"
            " VALUES ('builder-1', $1, $2, $3, now() - make_interval(secs => $4))",
            old,
            new,
            reason,
            days * 86400,
        )
    for days in (31, 29, 1):  # builds finished that long ago (leased an hour before)
        await runtime.pool.execute(
            "INSERT INTO host_tasks (lease_id, host, task_id, build_id, nvr, package, arch,"
            " leased_at, finished_at, status, duration, counted)"
            " VALUES ($1, 'builder-1', 1, 1, 'hello-1-1', 'hello', 'x86_64',"
            " now() - make_interval(secs => $2 + 3600), now() - make_interval(secs => $2),"
            " 'succeeded', 3600, true)",
            uuid.uuid4(),
            days * 86400,
        )
    await runtime.pool.execute(
        "INSERT INTO host_qos (host, finished, succeeded) VALUES ('builder-1', 3, 3)"
    )


async def qos(client) -> dict:
    reply = await (await client.get("/api/v1/hosts/builder-1/qos")).json()
    return {"qos": reply["qos"], "counters": reply["counters"], "uptime": reply["uptime"]}


async def ages(runtime, sql: str) -> list[int]:
    return [round(r[0]) for r in await runtime.pool.fetch(sql)]


async def test_old_history_goes_the_window_stays_and_qos_is_unchanged(client, runtime) -> None:
    runtime.config = dataclasses.replace(
        runtime.config, bus=dataclasses.replace(runtime.config.bus, retention_chunk=1)
    )
    configure(runtime, history_days=30)
    await enrol(client, profile())
    await add_life(runtime)
    before = await qos(client)
    assert before["uptime"]["failures"] == 1  # the fall silent 2 days ago, inside 7 days

    await SERVICE.retention_job().job(runtime)  # deletes in chunks of one row

    changes = "SELECT extract(epoch FROM now() - at) / 86400 FROM host_state_changes ORDER BY at"
    # 39 and 35 days ago went; 34 days ago stays: the state the QoS window opens in.
    assert await ages(runtime, changes) == [34, 2, 2]
    builds = "SELECT extract(epoch FROM now() - finished_at) / 86400 FROM host_tasks"
    assert sorted(await ages(runtime, builds)) == [1, 29]
    after = await qos(client)
    assert after["qos"] == before["qos"] and after["counters"] == before["counters"]
    assert after["uptime"]["failures"] == before["uptime"]["failures"]
    assert after["uptime"]["online_seconds"] == pytest.approx(
        before["uptime"]["online_seconds"], abs=60
    )
    recent = await (await client.get("/api/v1/hosts/builder-1/builds")).json()
    assert len(recent["builds"]) == 2

    # A window shorter than the QoS window is raised to it: availability needs 7 days.
    configure(runtime, history_days=1)
    await SERVICE.retention_job().job(runtime)
    assert await ages(runtime, changes) == [34, 2, 2]
    assert await ages(runtime, builds) == [1]
    assert (await qos(client))["qos"] == before["qos"]
