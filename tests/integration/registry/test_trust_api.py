"""Trust levels over the registry's HTTP API, on a real database: admin decisions are recorded,
applied and published together; every host's history is listed newest first."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from skyline_messages import HostEnrolledV1, HostStatusV1, HostTrustV1
from test_registry_service import OTHER_KEY, configure, enrol, host_row, profile

from services.registry import trust, trust_store

pytestmark = pytest.mark.integration

ADMIN = {"Authorization": "Bearer adm1n"}


@pytest.fixture
async def admin(runtime) -> None:
    configure(runtime, admin_token="adm1n")


async def set_trust(client, body: Any, *, host: str = "builder-1", status: int = 200) -> dict:
    response = await client.post(f"/api/v1/hosts/{host}/trust", json=body, headers=ADMIN)
    assert response.status == status, await response.text()
    return await response.json()


async def get_trust(client, host: str = "builder-1", query: str = "", status: int = 200) -> dict:
    response = await client.get(f"/api/v1/hosts/{host}/trust{query}")
    assert response.status == status, await response.text()
    return await response.json()


async def test_a_new_host_is_untrusted_with_no_history(client, admin) -> None:
    await enrol(client, profile())
    view = await get_trust(client)
    assert view == {
        "host": "builder-1",
        "owner": "alice",
        "trust": "untrusted",
        "record": {"consecutive_confirmed": 0, "total_results": 0, "odd_one_out": 0},
        "transitions": [],
    }


async def test_an_admin_makes_a_host_core_recorded_and_published(
    client, runtime, sent, admin
) -> None:
    await enrol(client, profile())
    # A record that the decision restarts (the odd-one-out count is for life).
    await runtime.pool.execute(
        "UPDATE hosts SET consecutive_confirmed = 4, total_results = 7, odd_one_out = 1"
    )
    reply = await set_trust(client, {"trust": "core", "reason": "  our own machine  "})
    assert reply["trust"] == "core"
    assert reply["record"] == {"consecutive_confirmed": 0, "total_results": 0, "odd_one_out": 1}
    transition = reply["transition"]
    assert {k: transition[k] for k in ("old", "new", "reason", "evidence", "by")} == {
        "old": "untrusted",
        "new": "core",
        "reason": "our own machine",
        "evidence": None,
        "by": "admin",
    }
    at = datetime.datetime.fromisoformat(transition["at"])
    assert abs((datetime.datetime.now(datetime.UTC) - at).total_seconds()) < 60
    assert (await host_row(runtime))["trust"] == "core"
    # Published in the same transaction: the transition, then the status the dispatcher uses.
    enrolled, trust_msg, status = await sent()
    assert type(enrolled) is HostEnrolledV1
    assert type(trust_msg) is HostTrustV1
    assert trust_msg.body == {
        "host": "builder-1",
        "owner": "alice",
        "old": "untrusted",
        "new": "core",
        "reason": "our own machine",
        "by": "admin",
    }
    assert type(status) is HostStatusV1
    assert (status.body["host"], status.body["trust"]) == ("builder-1", "core")
    # The host's view follows.
    host = await (await client.get("/api/v1/hosts/builder-1")).json()
    assert host["trust"] == "core"


async def test_history_is_listed_newest_first_and_limited(client, sent, admin) -> None:
    await enrol(client, profile())
    await enrol(client, profile("builder-2", OTHER_KEY))
    await set_trust(client, {"trust": "trusted", "reason": "vouched for"})
    await set_trust(client, {"trust": "core", "reason": "donated to the project"})
    await set_trust(client, {"trust": "untrusted", "reason": "changed hands"})
    view = await get_trust(client)
    assert view["trust"] == "untrusted"
    assert [(t["old"], t["new"], t["reason"]) for t in view["transitions"]] == [
        ("core", "untrusted", "changed hands"),
        ("trusted", "core", "donated to the project"),
        ("untrusted", "trusted", "vouched for"),
    ]
    ats = [t["at"] for t in view["transitions"]]
    assert ats == sorted(ats, reverse=True)
    latest = await get_trust(client, query="?limit=1")
    assert [t["reason"] for t in latest["transitions"]] == ["changed hands"]
    # Another host's history is its own.
    assert (await get_trust(client, "builder-2"))["transitions"] == []
    news = [(m.body["old"], m.body["new"]) for m in await sent() if type(m) is HostTrustV1]
    assert news == [("untrusted", "trusted"), ("trusted", "core"), ("core", "untrusted")]


async def test_a_policy_transition_is_stored_with_its_evidence(client, runtime) -> None:
    """What the acceptance policy will record: `by` is the registry, the evidence is kept."""
    await enrol(client, profile())
    row = await host_row(runtime)
    state = trust_store.host_trust(row)
    evidence = trust.Evidence("11", "ab" * 32, ("builder-7", "core-1"), "core agreed with b-7")
    _, transition = trust.record_odd_one_out(state, evidence, trust.TrustConfig())
    async with runtime.transaction() as ctx:
        await trust_store.record_transition(ctx.conn, transition)
    [listed] = (await get_trust(client))["transitions"]
    assert (listed["old"], listed["new"], listed["by"]) == ("untrusted", "quarantined", "registry")
    assert listed["evidence"] == {
        "task_id": "11",
        "digest": "ab" * 32,
        "others": ["builder-7", "core-1"],
        "detail": "core agreed with b-7",
    }
    msg = trust_store.trust_message("alice", transition)
    msg.validate()
    assert msg.body["evidence"] == listed["evidence"] and msg.body["by"] == "registry"


# Errors: clear JSON, nothing recorded, nothing published.


async def nothing_changed(client, runtime, sent) -> None:
    assert await runtime.pool.fetchval("SELECT count(*) FROM trust_transitions") == 0
    assert (await host_row(runtime))["trust"] == "untrusted"
    assert [type(m) for m in await sent()] == [HostEnrolledV1]


@pytest.mark.parametrize(
    "body",
    [
        {"trust": "quarantined", "reason": "use /quarantine"},
        {"trust": "root", "reason": "why not"},
        {"trust": "Core", "reason": "case matters"},
        {"trust": ["core"], "reason": "a list"},
        {"trust": None, "reason": "nothing"},
        {"trust": "core", "reason": ""},
        {"trust": "core", "reason": "   \n"},
        {"trust": "core", "reason": "x" * 501},
        {"trust": "core", "reason": 42},
        {"trust": "core"},
        {"reason": "no level"},
        {"trust": "core", "reason": "ok", "by": "mallory"},
        ["core", "reason"],
        "core",
    ],
)
async def test_bad_bodies_are_400(client, runtime, sent, admin, body) -> None:
    await enrol(client, profile())
    error = await set_trust(client, body, status=400)
    assert error["status"] == 400 and error["error"]
    await nothing_changed(client, runtime, sent)


@pytest.mark.parametrize("data", [b"{not json", b"\xff\xfe", b""])
async def test_unreadable_bodies_are_400(client, runtime, sent, admin, data: bytes) -> None:
    await enrol(client, profile())
    response = await client.post(
        "/api/v1/hosts/builder-1/trust",
        data=data,
        headers={**ADMIN, "Content-Type": "application/json"},
    )
    assert response.status == 400
    assert "JSON" in (await response.json())["error"]
    await nothing_changed(client, runtime, sent)


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "adm1n"}]
)
async def test_setting_trust_needs_the_admin_token(client, runtime, sent, admin, headers) -> None:
    await enrol(client, profile())
    response = await client.post(
        "/api/v1/hosts/builder-1/trust", json={"trust": "core", "reason": "me"}, headers=headers
    )
    assert response.status == 401
    assert "admin token" in (await response.json())["error"]
    await nothing_changed(client, runtime, sent)


async def test_setting_trust_is_disabled_without_an_admin_token(client, runtime, sent) -> None:
    await enrol(client, profile())
    response = await client.post(
        "/api/v1/hosts/builder-1/trust", json={"trust": "core", "reason": "me"}, headers=ADMIN
    )
    assert response.status == 403
    assert "disabled" in (await response.json())["error"]
    await nothing_changed(client, runtime, sent)


async def test_unknown_hosts_are_404(client, runtime, sent, admin) -> None:
    await enrol(client, profile())
    error = await set_trust(client, {"trust": "core", "reason": "x"}, host="nobody", status=404)
    assert "nobody" in error["error"]
    assert "nobody" in (await get_trust(client, "nobody", status=404))["error"]
    await nothing_changed(client, runtime, sent)


@pytest.mark.parametrize("query", ["?limit=0", "?limit=1001", "?limit=-1", "?limit=x", "?limit="])
async def test_bad_limits_are_400(client, admin, query: str) -> None:
    await enrol(client, profile())
    error = await get_trust(client, query=query, status=400)
    assert "limit" in error["error"]
