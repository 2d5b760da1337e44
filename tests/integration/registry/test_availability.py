"""Online and offline with a grace period, and the availability history it leaves."""

from __future__ import annotations

import pytest
from skyline_messages import HostStatusV1
from test_registry_service import configure, enrol, heartbeat, iso, profile

from services.registry.__main__ import SERVICE
from services.registry.handlers import mark_silent_hosts_offline

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
