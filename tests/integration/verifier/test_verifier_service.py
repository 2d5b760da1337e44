"""The verifier against a real database, with the registry and collector stood in over HTTP."""

from __future__ import annotations

import copy
import dataclasses
import json
import socket
import uuid
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fedora_messaging import message as fm
from skyline_messages import TaskFinishedV1, TaskLeasedV1, TaskMismatchV1, TaskVerifiedV1

from services.common.errors import Retry
from services.common.rpmfacts import comparison_key, facts_from_json
from services.common.rpmfiles import result_set_digest
from services.common.service import Runtime
from services.common.signing import public_key_b64, sign_body
from services.verifier.__main__ import SERVICE

pytestmark = pytest.mark.integration

KEY = Ed25519PrivateKey.generate()
MALLORY_KEY = Ed25519PrivateKey.generate()
NVR = "skyline-hello-1.0-1"
SRPM_SHA256 = "a" * 64
RPMS = [
    {"name": f"{NVR}.x86_64.rpm", "size": 1000, "sha256": "b" * 64},
    {"name": "skyline-hello-debuginfo-1.0-1.x86_64.rpm", "size": 2000, "sha256": "c" * 64},
]
LOGS = [{"name": "build.log", "size": 300, "sha256": "d" * 64}]
SRPM = f"{NVR}.src.rpm"


def lease_message(host: str = "builder-1", task_id: int = 1, **changes: Any) -> TaskLeasedV1:
    body = {
        "task_id": task_id,
        "build_id": 1,
        "lease_id": str(uuid.uuid4()),
        "host": host,
        "arch": "x86_64",
        "owner": "alice",
        "nvr": NVR,
        "srpm_url": f"http://127.0.0.1:1/sources/{NVR}.src.rpm",
        "srpm_sha256": SRPM_SHA256,
        "release": "any",
        "scratch": True,
        "lease_expires": "2099-01-01T00:00:00+00:00",
    }
    body.update(changes)
    return TaskLeasedV1(body=body, topic=TaskLeasedV1.topic_for(body["host"]))


def attestation(
    lease: TaskLeasedV1,
    key: Ed25519PrivateKey = KEY,
    *,
    status: str = "succeeded",
    rpms: list[dict[str, Any]] | None = None,
    **changes: Any,
) -> TaskFinishedV1:
    rpms = RPMS if rpms is None else rpms
    body = {
        **{k: lease.body[k] for k in ("task_id", "build_id", "lease_id", "host", "arch", "nvr")},
        "status": status,
        "srpm_sha256": SRPM_SHA256,
        "files": [*rpms, *LOGS],
        "result_digest": result_set_digest((f["name"], f["sha256"]) for f in rpms),
        "env_manifest": {"rpm": "4.19.1", "gcc": "14.1.1"},
        "env_digest": "e" * 64,
        "duration": 42.5,
    }
    body.update(changes)
    return TaskFinishedV1(body=sign_body(body, key))


@pytest.fixture
async def lease(runtime: Runtime, peers) -> TaskLeasedV1:
    """builder-1 is enrolled, holds a lease, and uploaded what it will attest."""
    peers.host_view("builder-1", public_key_b64(KEY))
    msg = lease_message()
    await SERVICE.handle(runtime, msg)
    peers.stage(msg.body["lease_id"], *LOGS, *RPMS, sourcerpm=SRPM)
    return msg


async def judge(runtime: Runtime, sent, msg: fm.Message) -> list[fm.Message]:
    before = len(await sent())
    await SERVICE.handle(runtime, msg)
    return (await sent())[before:]


async def refusal(runtime: Runtime, sent, msg: fm.Message, reason: str) -> TaskMismatchV1:
    [refused] = await judge(runtime, sent, msg)
    assert type(refused) is TaskMismatchV1
    assert refused.body["reason"] == reason, refused.body
    b = msg.body
    for key in ("task_id", "build_id", "lease_id", "host", "arch"):
        assert refused.body[key] == b[key]
    return refused


async def attestations(runtime: Runtime) -> list[Any]:
    return await runtime.pool.fetch("SELECT * FROM attestations ORDER BY received_at")


async def test_lease_is_recorded_once(runtime, peers, lease) -> None:
    await SERVICE.handle(runtime, lease)
    again = TaskLeasedV1(body=lease.body, topic=lease.topic)
    await SERVICE.handle(runtime, again)
    rows = await runtime.pool.fetch("SELECT * FROM leases")
    assert len(rows) == 1
    assert (str(rows[0]["lease_id"]), rows[0]["host"]) == (lease.body["lease_id"], "builder-1")


async def test_valid_attestation_is_verified(runtime, peers, sent, lease) -> None:
    msg = attestation(lease)
    [verified] = await judge(runtime, sent, msg)
    assert type(verified) is TaskVerifiedV1
    lease_id = lease.body["lease_id"]
    assert verified.body == {
        **{
            k: msg.body[k]
            for k in (
                "task_id",
                "build_id",
                "lease_id",
                "host",
                "arch",
                "nvr",
                "status",
                "files",
                "result_digest",
            )
        },
        # builder-1 is a core host: its result alone meets the policy.
        "comparison_key": comparison_key([facts_from_json(f) for f in peers.facts[lease_id]]),
        "rule": "core",
        "agreeing": [
            {"host": "builder-1", "owner": "alice", "trust": "core", "lease_id": lease_id}
        ],
        "odd_ones_out": [],
        "not_reproducible": False,
    }
    [row] = await attestations(runtime)
    assert (row["verdict"], row["signature"]) == ("verified", msg.body["signature"])
    assert json.loads(row["body"]) == msg.body
    assert f"/api/v1/uploads/{lease.body['lease_id']}" in peers.requests


async def test_failed_build_is_verified_without_asking_the_collector(
    runtime, peers, sent, lease
) -> None:
    [verified] = await judge(runtime, sent, attestation(lease, status="failed", rpms=[]))
    assert type(verified) is TaskVerifiedV1
    assert verified.body["status"] == "failed"
    assert not any(p.startswith("/api/v1/uploads/") for p in peers.requests)


async def test_forged_signature_is_refused_and_not_recorded(runtime, peers, sent, lease) -> None:
    await refusal(runtime, sent, attestation(lease, MALLORY_KEY), "bad_signature")
    tampered = copy.deepcopy(attestation(lease).body)  # not the shared RPMS entries
    tampered["files"][0]["sha256"] = "f" * 64
    await refusal(runtime, sent, TaskFinishedV1(body=tampered), "bad_signature")
    assert await attestations(runtime) == []
    # The forgeries took nothing from the honest host.
    [verified] = await judge(runtime, sent, attestation(lease))
    assert type(verified) is TaskVerifiedV1


async def test_unknown_host_is_refused_and_not_recorded(runtime, peers, sent, lease) -> None:
    msg = attestation(lease_message("stranger", lease_id=lease.body["lease_id"]))
    await refusal(runtime, sent, msg, "unknown_host")
    assert await attestations(runtime) == []
    assert "/api/v1/hosts/stranger" in peers.requests


async def test_quarantined_host_is_refused(runtime, peers, sent, lease) -> None:
    peers.host_view("builder-1", public_key_b64(KEY), state="quarantined")
    await refusal(runtime, sent, attestation(lease), "host_not_allowed")
    [row] = await attestations(runtime)
    assert row["verdict"] == "host_not_allowed"


async def test_unknown_lease_is_refused(runtime, peers, sent) -> None:
    peers.host_view("builder-1", public_key_b64(KEY))
    never_leased = lease_message()
    refused = await refusal(runtime, sent, attestation(never_leased), "unknown_lease")
    assert never_leased.body["lease_id"] in refused.body["detail"]
    # Not recorded: had the lease simply not arrived yet, the host's attestation still counts.
    assert await attestations(runtime) == []
    await SERVICE.handle(runtime, never_leased)
    peers.stage(never_leased.body["lease_id"], *RPMS, *LOGS, sourcerpm=SRPM)
    [verified] = await judge(runtime, sent, attestation(never_leased))
    assert type(verified) is TaskVerifiedV1


async def test_attesting_to_another_hosts_lease_cannot_lock_it_out(
    runtime, peers, sent, lease
) -> None:
    peers.host_view("mallory", public_key_b64(MALLORY_KEY))
    stolen = attestation(lease_message("mallory", lease_id=lease.body["lease_id"]), MALLORY_KEY)
    refused = await refusal(runtime, sent, stolen, "unknown_lease")
    assert "host" in refused.body["detail"]
    assert await attestations(runtime) == []
    [verified] = await judge(runtime, sent, attestation(lease))
    assert type(verified) is TaskVerifiedV1


@pytest.mark.parametrize(
    ("field", "value"), [("task_id", 2), ("build_id", 9), ("arch", "aarch64"), ("nvr", "x-1-1")]
)
async def test_attestation_about_another_task_is_refused(
    runtime, peers, sent, lease, field: str, value: Any
) -> None:
    refused = await refusal(runtime, sent, attestation(lease, **{field: value}), "unknown_lease")
    assert field in refused.body["detail"]


async def test_srpm_mismatch(runtime, peers, sent, lease) -> None:
    await refusal(runtime, sent, attestation(lease, srpm_sha256="0" * 64), "srpm_mismatch")
    [row] = await attestations(runtime)
    assert row["verdict"] == "srpm_mismatch"


async def test_wrong_result_digest(runtime, peers, sent, lease) -> None:
    msg = attestation(lease, result_digest="0" * 64)
    await refusal(runtime, sent, msg, "digest_mismatch")
    assert not any(p.startswith("/api/v1/uploads/") for p in peers.requests)


async def test_uploaded_digest_differs(runtime, peers, sent, lease) -> None:
    lease_id = lease.body["lease_id"]
    peers.stage(lease_id, {**RPMS[0], "sha256": "9" * 64}, RPMS[1], *LOGS, sourcerpm=SRPM)
    refused = await refusal(runtime, sent, attestation(lease), "digest_mismatch")
    assert RPMS[0]["name"] in refused.body["detail"]
    [row] = await attestations(runtime)
    assert (row["verdict"], row["detail"]) == ("digest_mismatch", refused.body["detail"])


async def test_upload_missing(runtime, peers, sent, lease) -> None:
    peers.stage(lease.body["lease_id"], RPMS[0], *LOGS, sourcerpm=SRPM)
    refused = await refusal(runtime, sent, attestation(lease), "missing_upload")
    assert RPMS[1]["name"] in refused.body["detail"]


async def test_nothing_uploaded_for_the_lease(runtime, peers, sent, lease) -> None:
    del peers.uploads[lease.body["lease_id"]]  # the collector answers 404
    await refusal(runtime, sent, attestation(lease), "missing_upload")


async def test_second_different_attestation_is_a_replay(runtime, peers, sent, lease) -> None:
    first = attestation(lease)
    await judge(runtime, sent, first)
    second = attestation(lease, duration=1.0)
    assert second.body["signature"] != first.body["signature"]
    refused = await refusal(runtime, sent, second, "replayed")
    assert "different attestation" in refused.body["detail"]
    [row] = await attestations(runtime)
    assert (row["signature"], row["verdict"]) == (first.body["signature"], "verified")


async def test_a_refused_attestation_also_takes_the_leases_slot(
    runtime, peers, sent, lease
) -> None:
    await refusal(runtime, sent, attestation(lease, srpm_sha256="0" * 64), "srpm_mismatch")
    await refusal(runtime, sent, attestation(lease), "replayed")


async def test_the_same_attestation_again_changes_nothing(runtime, peers, sent, lease) -> None:
    msg = attestation(lease)
    await judge(runtime, sent, msg)
    # Redelivered (same message id), and published again by the builder (new message id).
    assert await judge(runtime, sent, fm.load_message(json.loads(fm.dumps(msg)))) == []
    assert await judge(runtime, sent, TaskFinishedV1(body=msg.body)) == []
    assert len(await attestations(runtime)) == 1
    assert len(await sent()) == 1


async def test_registry_down_is_retried_later(runtime, peers, sent, lease) -> None:
    msg = attestation(lease)
    peers.registry_status = 503
    with pytest.raises(Retry, match="503"):
        await SERVICE.handle(runtime, msg)
    assert await sent() == []
    assert await attestations(runtime) == []
    # Nothing was marked processed: the redelivery is judged once the registry is back.
    peers.registry_status = 200
    [verified] = await judge(runtime, sent, msg)
    assert type(verified) is TaskVerifiedV1


async def test_registry_unreachable_is_retried_later(runtime, peers, sent, lease) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    config = runtime.config
    runtime.config = dataclasses.replace(
        config,
        verifier=dataclasses.replace(
            config.verifier, registry_url=f"http://127.0.0.1:{closed_port}"
        ),
    )
    with pytest.raises(Retry):
        await SERVICE.handle(runtime, attestation(lease))
    assert await sent() == []
    assert await runtime.pool.fetchval("SELECT count(*) FROM processed_messages") == 1  # lease


async def test_collector_down_is_retried_later(runtime, peers, sent, lease) -> None:
    peers.collector_status = 502
    with pytest.raises(Retry, match="502"):
        await SERVICE.handle(runtime, attestation(lease))
    assert await sent() == []
    assert await attestations(runtime) == []
