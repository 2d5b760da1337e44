"""Online and offline with a grace period, and the availability history it leaves."""

from __future__ import annotations

import pytest
from skyline_messages import HostStatusV1
from test_registry_service import OTHER_KEY, configure, enrol, heartbeat, iso, profile

from services.registry.__main__ import SERVICE
from services.registry.handlers import mark_silent_hosts_offline
from services.registry.qos_events import refresh_stale

pytestmark = pytest.mark.integration
GRACE = 60


async def silent_for(runtime, seconds: float) -> None:
    await runtime.pool.execute(
        "UPDATE hosts SET last_heartbeat = now() - make_interval(secs => $1)", seconds
    )


async def history(client) -> list[tuple[str, str, str]]:
    reply = await (await client.get("/api/v1/hosts/builder-1/availability")).json()
    return [(c["old"], c["new"], c["reason"]) for c in reversed(reply["changes"])]


async def test_a_host_goes_offline_only_after_the_grace_period(client, runtime, sent) -> None:
    configure(runtime, heartbeat_timeout=GRACE)
    await enrol(client, profile())
    await SERVICE.handle(runtime, heartbeat(signed_at=iso(-10)))
    await silent_for(runtime, GRACE - 5)  # a late heartbeat is within the grace
    await mark_silent_hosts_offline(runtime)
    view = await (await client.get("/api/v1/hosts/builder-1")).json()
    assert view["state"] == "online"
    await silent_for(runtime, GRACE + 1)
    await mark_silent_hosts_offline(runtime)
    view = await (await client.get("/api/v1/hosts/builder-1")).json()
    assert (view["state"], view["free_slots"]) == ("offline", 0)
    statuses = [m.body["state"] for m in await sent() if isinstance(m, HostStatusV1)]
    assert statuses == ["online", "offline"]
    await SERVICE.handle(runtime, heartbeat())  # back
    assert await history(client) == [
        ("offline", "online", "heartbeat"),
        ("online", "offline", "silent"),
        ("offline", "online", "heartbeat"),
    ]
    # Unchanged heartbeats leave no history.
    await SERVICE.handle(runtime, heartbeat(signed_at=iso(1)))
    assert len(await history(client)) == 3


async def test_admin_actions_are_in_the_history_with_their_reason(client, runtime) -> None:
    configure(runtime, admin_token="admin-secret")
    admin = {"Authorization": "Bearer admin-secret"}
    await enrol(client, profile())
    await SERVICE.handle(runtime, heartbeat())
    assert (await client.post("/api/v1/hosts/builder-1/quarantine", headers=admin)).status == 200
    assert (await client.post("/api/v1/hosts/builder-1/release", headers=admin)).status == 200
    assert await history(client) == [
        ("offline", "online", "heartbeat"),
        ("online", "quarantined", "quarantine"),
        ("quarantined", "offline", "release"),
    ]


async def test_the_periodic_refresh_scores_availability(client, runtime, sent) -> None:
    """A host online for its whole (young) life scores better than one never seen, and a
    change in the score of a host seen before is published in its status."""
    configure(runtime, heartbeat_timeout=GRACE)
    await enrol(client, profile())
    await enrol(client, profile("builder-2", OTHER_KEY))
    await runtime.pool.execute("UPDATE hosts SET enrolled_at = now() - interval '1 day'")
    await SERVICE.handle(runtime, heartbeat(signed_at=iso(-10)))
    # builder-1 came online a day ago and stayed: rewrite its history to say so.
    await runtime.pool.execute(
        "UPDATE host_state_changes SET at = now() - interval '1 day' WHERE host = 'builder-1'"
    )
    before = len(await sent())
    await refresh_stale(runtime)
    online = await (await client.get("/api/v1/hosts/builder-1/qos")).json()
    never = await (await client.get("/api/v1/hosts/builder-2/qos")).json()
    assert online["qos"]["availability"] > 0.95 and online["uptime"]["failures"] == 0
    assert never["qos"]["availability"] < 0.05
    rows = await runtime.pool.fetch("SELECT host, qos_score FROM hosts ORDER BY host")
    assert rows[0]["qos_score"] > rows[1]["qos_score"]
    # The seen host's new score went out in its status; the never-seen one's waits for it.
    new = [m for m in (await sent())[before:] if isinstance(m, HostStatusV1)]
    assert [(m.body["host"], m.qos_score) for m in new] == [
        ("builder-1", pytest.approx(rows[0]["qos_score"], abs=0.005))
    ]
    # Scores just computed are not recomputed until refresh_seconds have passed.
    await refresh_stale(runtime)
    assert len(await sent()) == before + 1
