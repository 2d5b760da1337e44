"""Verified results grade their hosts' trust, on a real database (and a real broker for the
quarantine): promotions, demotions and quarantines are stored, listed and published, core
hosts are left to admins, and a redelivered verdict counts once."""

from __future__ import annotations

import asyncio
import itertools
import uuid

import aio_pika
import aiormq
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from skyline_messages import HostStatusV1, HostTrustV1, TaskVerifiedV1
from test_registry_service import configure, enrol, host_row, profile

from services.common.config import with_credentials
from services.registry.__main__ import SERVICE
from services.registry.trust import TrustConfig

pytestmark = pytest.mark.integration

PROMOTE_AFTER = 3
TASK_IDS = itertools.count(100)
CORE_KEY = Ed25519PrivateKey.generate()


@pytest.fixture
async def hosts(client, runtime) -> dict[str, dict]:
    """alice's a1 and a2, bob's b1, and the project's core-1; promotion after 3 confirmations."""
    configure(runtime, trust=TrustConfig(promote_after=PROMOTE_AFTER))
    enrolled = {}
    for host, owner in (("a1", "alice"), ("a2", "alice"), ("b1", "bob"), ("core-1", "fedora")):
        key = CORE_KEY if host == "core-1" else Ed25519PrivateKey.generate()
        enrolled[host] = await enrol(client, profile(host, key, owner=owner), signed_by=key)
    await runtime.pool.execute("UPDATE hosts SET trust = 'core' WHERE host = 'core-1'")
    return enrolled


def agreeing(*hosts: str) -> list[dict[str, str]]:
    owners = {"a1": "alice", "a2": "alice", "b1": "bob", "core-1": "fedora"}
    return [
        {"host": h, "owner": owners[h], "trust": "untrusted", "lease_id": str(uuid.uuid4())}
        for h in hosts
    ]


def verified(
    agree: list[dict[str, str]], odd: tuple[str, ...] = (), rule: str = "agreement"
) -> TaskVerifiedV1:
    task_id = next(TASK_IDS)
    msg = TaskVerifiedV1(
        body={
            "task_id": task_id,
            "build_id": 1,
            "lease_id": agree[0]["lease_id"],
            "host": agree[0]["host"],
            "arch": "x86_64",
            "nvr": "hello-1.0-1.fc40",
            "status": "succeeded",
            "files": [{"name": "hello-1.0-1.fc40.x86_64.rpm", "size": 10, "sha256": "c" * 64}],
            "result_digest": "d" * 64,
            "comparison_key": f"{task_id:064x}",
            "rule": rule,
            "agreeing": agree,
            "odd_ones_out": [
                {
                    "host": h,
                    "lease_id": str(uuid.uuid4()),
                    "comparison_key": "e" * 64,
                    "detail": "hello: /usr/bin/hello differs",
                }
                for h in odd
            ],
        }
    )
    msg.validate()
    return msg


async def trust_view(client, host: str) -> dict:
    response = await client.get(f"/api/v1/hosts/{host}/trust")
    assert response.status == 200
    return await response.json()


def published(messages, host: str) -> list[tuple[str, ...]]:
    """host.trust and host.status messages about `host`, in order, as short tuples."""
    out: list[tuple[str, ...]] = []
    for m in messages:
        if type(m) is HostTrustV1 and m.body["host"] == host:
            out.append(("trust", m.body["old"], m.body["new"]))
        elif type(m) is HostStatusV1 and m.body["host"] == host:
            out.append(("status", m.body["state"], m.body["trust"]))
    return out


def test_the_registry_consumes_task_verified() -> None:
    assert "skyline.task.verified" in SERVICE.routing_keys()


async def test_confirmed_results_promote_an_untrusted_host(client, runtime, sent, hosts) -> None:
    for n in range(1, PROMOTE_AFTER):
        await SERVICE.handle(runtime, verified(agreeing("a1", "b1")))
        row = await host_row(runtime, "a1")
        assert (row["trust"], row["consecutive_confirmed"]) == ("untrusted", n)
    last = verified(agreeing("a1", "b1"))
    await SERVICE.handle(runtime, last)
    for host, other in (("a1", "b1"), ("b1", "a1")):
        view = await trust_view(client, host)
        assert view["trust"] == "trusted"
        assert view["record"] == {"consecutive_confirmed": 0, "total_results": 0, "odd_one_out": 0}
        [transition] = view["transitions"]
        assert (transition["old"], transition["new"], transition["by"]) == (
            "untrusted",
            "trusted",
            "registry",
        )
        assert transition["reason"] == "3 consecutive results confirmed by other owners"
        assert transition["evidence"] == {
            "task_id": str(last.body["task_id"]),
            "digest": last.body["comparison_key"],
            "others": [other],
            "detail": "",
        }
        # Published: the transition, then the status the dispatcher schedules on.
        assert published(await sent(), host) == [
            ("trust", "untrusted", "trusted"),
            ("status", "offline", "trusted"),
        ]
    # The core host agreed too in none of these; a host of the same owner never confirms.
    await SERVICE.handle(runtime, verified(agreeing("a2", "a1"), rule="trusted-sampled-out"))
    row = await host_row(runtime, "a2")
    assert (row["trust"], row["consecutive_confirmed"], row["total_results"]) == ("untrusted", 0, 1)


async def test_a_redelivered_verdict_counts_once(client, runtime, sent, hosts) -> None:
    msg = verified(agreeing("a1", "b1"))
    for _ in range(PROMOTE_AFTER):
        await SERVICE.handle(runtime, msg)
    row = await host_row(runtime, "a1")
    assert (row["trust"], row["consecutive_confirmed"], row["total_results"]) == ("untrusted", 1, 1)
    assert published(await sent(), "a1") == []


async def test_an_odd_one_out_demotes_a_trusted_host(client, runtime, sent, hosts) -> None:
    await runtime.pool.execute("UPDATE hosts SET trust = 'trusted' WHERE host = 'b1'")
    msg = verified(agreeing("core-1", "a1"), odd=("b1",))
    await SERVICE.handle(runtime, msg)
    view = await trust_view(client, "b1")
    assert view["trust"] == "untrusted"
    assert view["record"]["odd_one_out"] == 1
    [transition] = view["transitions"]
    assert (transition["old"], transition["new"]) == ("trusted", "untrusted")
    assert transition["evidence"] == {
        "task_id": str(msg.body["task_id"]),
        "digest": "e" * 64,
        "others": ["core-1", "a1"],
        "detail": "hello: /usr/bin/hello differs",
    }
    assert (await host_row(runtime, "b1"))["state"] == "offline"  # demoted, not cut off
    assert published(await sent(), "b1") == [
        ("trust", "trusted", "untrusted"),
        ("status", "offline", "untrusted"),
    ]
    # The winners: a1 confirmed by core-1 of another owner; core-1 not graded by its peers.
    assert (await host_row(runtime, "a1"))["consecutive_confirmed"] == 1
    core = await host_row(runtime, "core-1")
    assert (core["trust"], core["total_results"]) == ("core", 0)


async def test_an_odd_one_out_quarantines_an_untrusted_host(
    client, runtime, sent, broker, hosts
) -> None:
    runtime.state["broker_admin"] = broker.admin
    host = f"q-{uuid.uuid4().hex[:8]}"
    key = Ed25519PrivateKey.generate()
    creds = (await enrol(client, profile(host, key, owner="mallory"), signed_by=key))["broker"]
    url = with_credentials(broker.amqp_url, creds["user"], creds["password"])
    connection = await aio_pika.connect(url)
    cut_off = asyncio.Event()
    connection.close_callbacks.add(lambda *args: cut_off.set())
    msg = verified(agreeing("core-1", "b1"), odd=(host,))
    await SERVICE.handle(runtime, msg)
    row = await host_row(runtime, host)
    assert (row["trust"], row["state"], row["free_slots"]) == ("quarantined", "quarantined", 0)
    [transition] = (await trust_view(client, host))["transitions"]
    assert (transition["old"], transition["new"]) == ("untrusted", "quarantined")
    assert published(await sent(), host) == [
        ("trust", "untrusted", "quarantined"),
        ("status", "quarantined", "quarantined"),
    ]
    # Cut off as by the admin's /quarantine: connection closed, credentials dead, no re-enrol.
    await asyncio.wait_for(cut_off.wait(), 15)
    with pytest.raises(aiormq.exceptions.ProbableAuthenticationError):
        await aio_pika.connect(url)
    error = await enrol(client, profile(host, key, owner="mallory"), signed_by=key, status=403)
    assert "quarantined" in error["error"]


async def test_a_core_host_is_never_demoted_by_policy(client, runtime, sent, hosts) -> None:
    for _ in range(3):  # past quarantine_after (2): still core
        await SERVICE.handle(runtime, verified(agreeing("a1", "b1"), odd=("core-1",)))
    row = await host_row(runtime, "core-1")
    assert (row["trust"], row["state"]) == ("core", "offline")
    view = await trust_view(client, "core-1")
    # Each disagreement is recorded and published for the admins, the level left to them.
    assert [(t["old"], t["new"], t["reason"]) for t in view["transitions"]] == [
        ("core", "core", "core host was the odd one out")
    ] * 3
    assert published(await sent(), "core-1") == [("trust", "core", "core")] * 3


async def test_failures_and_verdicts_without_agreement_grade_nobody(
    client, runtime, sent, hosts
) -> None:
    before = len(await sent())
    failed = verified(agreeing("a1", "b1"))
    failed.body.update(status="failed", files=[])
    for key in ("rule", "agreeing", "odd_ones_out", "comparison_key"):
        del failed.body[key]
    legacy = verified(agreeing("a1"))
    for key in ("rule", "agreeing", "odd_ones_out"):
        del legacy.body[key]
    for msg in (failed, legacy):
        await SERVICE.handle(runtime, msg)
    assert await runtime.pool.fetchval("SELECT sum(total_results) FROM hosts") == 0
    assert len(await sent()) == before


async def test_an_unknown_host_is_skipped_and_the_others_graded(
    client, runtime, sent, hosts
) -> None:
    agree = agreeing("a1", "b1")
    agree[1]["host"] = "ghost"  # bob's, but never enrolled here
    await SERVICE.handle(runtime, verified(agree))
    assert (await host_row(runtime, "a1"))["consecutive_confirmed"] == 1
