"""Agreement before acceptance (issue 6): the verifier on a real database decides each task's
results with the acceptance policy; the registry and collector are stood in over HTTP."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fedora_messaging import message as fm
from skyline_messages import (
    TaskFinishedV1,
    TaskLeasedV1,
    TaskMismatchV1,
    TaskReplicateV1,
    TaskVerifiedV1,
)

from services.common.rpmfiles import result_set_digest
from services.common.service import Context, Runtime
from services.common.signing import public_key_b64, sign_body
from services.verifier import handlers
from services.verifier.__main__ import SERVICE
from services.verifier.policy import PolicyConfig

pytestmark = pytest.mark.integration

NVR = "skyline-hello-1.0-1"
SRPM = f"{NVR}.src.rpm"
SRPM_SHA256 = "a" * 64
LOGS = [{"name": "build.log", "size": 300, "sha256": "d" * 64}]
# host -> (owner, trust); each host has its own key.
HOSTS = {
    "volunteer": ("bob", "untrusted"),
    "trusty": ("carol", "trusted"),
    "stranger": ("dave", "untrusted"),
    "other": ("erin", "untrusted"),
    "core-1": ("fedora", "core"),
}
KEYS = {host: Ed25519PrivateKey.generate() for host in HOSTS}


@pytest.fixture
def hosts(peers) -> None:
    for host, (owner, trust) in HOSTS.items():
        peers.host_view(host, public_key_b64(KEYS[host]), owner=owner, trust=trust)


def rpms(content: str) -> list[dict[str, Any]]:
    """The result files of a build whose payload is `content` (bytes differ per host)."""
    digest = uuid.uuid5(uuid.NAMESPACE_URL, content).hex * 2
    return [{"name": f"{NVR}.x86_64.rpm", "size": 1000, "sha256": digest}]


async def build(
    runtime: Runtime,
    peers,
    sent,
    host: str,
    content: str = "honest",
    *,
    task_id: int = 1,
    scratch: bool = False,
    purpose: str = "build",
    lease_id: str | None = None,
) -> list[fm.Message]:
    """`host` is leased the task, uploads a result of `content`, attests it; what the
    verifier publishes."""
    msg = await lease_and_attest(runtime, peers, host, content, task_id, scratch, purpose, lease_id)
    before = len(await sent())
    await SERVICE.handle(runtime, msg)
    return (await sent())[before:]


async def lease_and_attest(
    runtime: Runtime,
    peers,
    host: str,
    content: str = "honest",
    task_id: int = 1,
    scratch: bool = False,
    purpose: str = "build",
    lease_id: str | None = None,
) -> TaskFinishedV1:
    lease = {
        "task_id": task_id,
        "build_id": task_id,
        "lease_id": lease_id or str(uuid.uuid4()),
        "host": host,
        "arch": "x86_64",
        "owner": "packager",
        "nvr": NVR,
        "srpm_url": f"http://127.0.0.1:1/sources/{SRPM}",
        "srpm_sha256": SRPM_SHA256,
        "release": "f40",
        "scratch": scratch,
        "lease_expires": "2099-01-01T00:00:00+00:00",
        "purpose": purpose,
    }
    await SERVICE.handle(runtime, TaskLeasedV1(body=lease, topic=TaskLeasedV1.topic_for(host)))
    files = rpms(content)
    peers.stage(lease["lease_id"], *files, *LOGS, sourcerpm=SRPM, content=content)
    body = {
        **{k: lease[k] for k in ("task_id", "build_id", "lease_id", "host", "arch", "nvr")},
        "status": "succeeded",
        "srpm_sha256": SRPM_SHA256,
        "files": [*files, *LOGS],
        "result_digest": result_set_digest((f["name"], f["sha256"]) for f in files),
        "env_manifest": {"rpm": "4.19.1"},
        "env_digest": "e" * 64,
        "duration": 42.5,
    }
    return TaskFinishedV1(body=sign_body(body, KEYS[host]))


def only(messages: list[fm.Message], kind: type[fm.Message]) -> dict[str, Any]:
    [msg] = messages
    assert type(msg) is kind, msg.body
    return msg.body


def agreeing(body: dict[str, Any]) -> list[str]:
    return [a["host"] for a in body["agreeing"]]


async def test_untrusted_result_waits_for_an_independent_agreeing_replica(
    runtime, peers, sent, hosts
) -> None:
    first = await build(runtime, peers, sent, "volunteer")
    ask = only(first, TaskReplicateV1)
    assert ask == {
        "task_id": 1,
        "build_id": 1,
        "arch": "x86_64",
        "nvr": NVR,
        "purpose": "replica",
        "reason": "official build needs a core host or a quorum",
        "min_trust": "trusted",
        "exclude_owners": ["bob"],
        "exclude_hosts": ["volunteer"],
        "results": 1,
    }
    # Another owner's trusted host rebuilds it (other bytes, same comparison key).
    second = await build(runtime, peers, sent, "trusty", purpose="replica")
    accepted = only(second, TaskVerifiedV1)
    assert accepted["rule"] == "quorum"
    assert [(a["host"], a["owner"], a["trust"]) for a in accepted["agreeing"]] == [
        ("volunteer", "bob", "untrusted"),
        ("trusty", "carol", "trusted"),
    ]
    # The earliest agreeing result is the one stored (no core host among them).
    [volunteer_row] = await runtime.pool.fetch("SELECT * FROM results WHERE host = 'volunteer'")
    assert accepted["lease_id"] == str(volunteer_row["lease_id"])
    assert accepted["host"] == "volunteer"
    assert accepted["files"] == [*rpms("honest"), *LOGS]
    assert accepted["odd_ones_out"] == [] and accepted["not_reproducible"] is False
    assert accepted["comparison_key"] == volunteer_row["comparison_key"]


async def test_disagreement_is_settled_by_a_core_tiebreak(runtime, peers, sent, hosts) -> None:
    only(await build(runtime, peers, sent, "volunteer", scratch=True), TaskReplicateV1)
    ask = only(
        await build(runtime, peers, sent, "trusty", "tampered", scratch=True, purpose="replica"),
        TaskReplicateV1,
    )
    assert (ask["purpose"], ask["min_trust"], ask["results"]) == ("tiebreak", "core", 2)
    assert ask["exclude_owners"] == ["bob", "carol"]
    assert ask["exclude_hosts"] == ["trusty", "volunteer"]

    tiebreak = await build(runtime, peers, sent, "core-1", scratch=True, purpose="tiebreak")
    accepted = only(tiebreak, TaskVerifiedV1)
    assert accepted["rule"] == "core"
    assert agreeing(accepted) == ["volunteer", "core-1"]
    assert accepted["host"] == "core-1"  # a core host's result is the one stored
    [odd] = accepted["odd_ones_out"]
    [trusty_row] = await runtime.pool.fetch("SELECT * FROM results WHERE host = 'trusty'")
    assert (odd["host"], odd["lease_id"], odd["comparison_key"]) == (
        "trusty",
        str(trusty_row["lease_id"]),
        trusty_row["comparison_key"],
    )
    # The evidence is the RPM-aware comparison's first difference.
    assert f"{NVR}.x86_64: file /usr/share/data: digest" in odd["detail"]
    assert accepted["not_reproducible"] is False


async def test_core_agreeing_with_nobody_means_not_reproducible(
    runtime, peers, sent, hosts
) -> None:
    only(await build(runtime, peers, sent, "volunteer", "stamp-1"), TaskReplicateV1)
    only(await build(runtime, peers, sent, "trusty", "stamp-2"), TaskReplicateV1)
    accepted = only(await build(runtime, peers, sent, "core-1", "stamp-3"), TaskVerifiedV1)
    assert accepted["rule"] == "not-reproducible"
    assert accepted["not_reproducible"] is True
    assert agreeing(accepted) == ["core-1"] and accepted["host"] == "core-1"
    assert accepted["odd_ones_out"] == []  # nobody is blamed
    [row] = await runtime.pool.fetch("SELECT package, arch, task_id FROM not_reproducible")
    assert tuple(row) == ("skyline-hello", "x86_64", 1)

    # The next official build of the package on that arch needs a core host, even after a
    # trusted host's result that sampling might have let through.
    ask = only(await build(runtime, peers, sent, "trusty", task_id=2), TaskReplicateV1)
    assert (ask["task_id"], ask["min_trust"], ask["purpose"]) == (2, "core", "replica")
    assert "not reproducible" in ask["reason"]
    # A scratch build of it is not held to that.
    scratch = await build(runtime, peers, sent, "volunteer", task_id=3, scratch=True)
    assert only(scratch, TaskReplicateV1)["min_trust"] == "trusted"


class Capturing(Context):
    """A handler context that keeps what it would publish (its transaction is rolled back)."""

    def __init__(self, conn, runtime: Runtime) -> None:
        super().__init__(conn=conn, runtime=runtime)
        self.published: list[fm.Message] = []

    async def publish(self, msg: fm.Message) -> None:
        self.published.append(msg)


async def test_a_redelivered_attestation_decides_the_same(runtime, peers, sent, hosts) -> None:
    # A trusted host's scratch results are sampled at random (about half at first): each is
    # judged in a transaction that rolls back (a crash before commit), then redelivered.
    outcomes = set()
    for n in range(8):
        lease_id = str(uuid.uuid5(uuid.NAMESPACE_OID, f"sampled-{n}"))
        msg = await lease_and_attest(
            runtime, peers, "trusty", task_id=10 + n, scratch=True, lease_id=lease_id
        )
        async with runtime.pool.acquire() as conn:
            transaction = conn.transaction()
            await transaction.start()
            ctx = Capturing(conn, runtime)
            await handlers.on_task_finished(msg, ctx)
            await transaction.rollback()
        before = len(await sent())
        await SERVICE.handle(runtime, msg)
        redelivered = (await sent())[before:]
        assert [(type(m), m.body) for m in redelivered] == [
            (type(m), m.body) for m in ctx.published
        ]
        outcomes.add(type(redelivered[0]))
    assert outcomes == {TaskVerifiedV1, TaskReplicateV1}  # the sampling did sample


async def test_no_agreement_within_the_results_limit_is_refused(
    runtime, peers, sent, hosts
) -> None:
    config = runtime.config
    runtime.config = dataclasses.replace(
        config, verifier=dataclasses.replace(config.verifier, policy=PolicyConfig(max_results=3))
    )
    # Untrusted hosts of three owners agree, but none vouches for the others.
    for host in ("volunteer", "stranger"):
        only(await build(runtime, peers, sent, host, scratch=True), TaskReplicateV1)
    third = await build(runtime, peers, sent, "other", scratch=True)
    refused = only(third, TaskMismatchV1)
    [row] = await runtime.pool.fetch("SELECT lease_id FROM results WHERE host = 'other'")
    assert (refused["reason"], refused["lease_id"], refused["host"]) == (
        "no_agreement",
        str(row["lease_id"]),
        "other",
    )
    assert "no agreement after 3 results" in refused["detail"]


async def test_a_result_after_acceptance_changes_nothing(runtime, peers, sent, hosts) -> None:
    only(await build(runtime, peers, sent, "core-1"), TaskVerifiedV1)
    assert await build(runtime, peers, sent, "trusty", "tampered") == []


async def test_rpms_the_collector_cannot_read_are_refused(runtime, peers, sent, hosts) -> None:
    msg = await lease_and_attest(runtime, peers, "core-1")
    peers.unreadable[msg.lease_id] = "not an intact RPM: x.rpm: header digest of /a differs"
    await SERVICE.handle(runtime, msg)
    refused = only(await sent(), TaskMismatchV1)
    assert (refused["reason"], refused["detail"]) == ("bad_rpm", peers.unreadable[msg.lease_id])
    assert await runtime.pool.fetch("SELECT * FROM results") == []


async def test_staged_rpms_that_are_not_the_attested_ones_are_refused(
    runtime, peers, sent, hosts
) -> None:
    msg = await lease_and_attest(runtime, peers, "core-1")
    # Replaced after the listing was checked: the facts are of other bytes.
    peers.facts[msg.lease_id][0]["sha256"] = "0" * 64
    await SERVICE.handle(runtime, msg)
    assert only(await sent(), TaskMismatchV1)["reason"] == "digest_mismatch"
