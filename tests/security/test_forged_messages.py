"""Forged service messages and requests for another owner change nothing: the broker refuses
them, and what reaches a consumer from the wrong sender is dead-lettered before any handler."""

from __future__ import annotations

import datetime
import uuid

import pytest
from skyline_messages import (
    BuildCompleteV1,
    BuildQueuedV1,
    BuildRequestV1,
    BuildStoredV1,
    HostStatusV1,
    TaskLeasedV1,
    TaskMismatchV1,
    TaskVerifiedV1,
)

from tests.security.attack import (
    build_id_of,
    builds_of,
    dead_letters,
    encoded,
    get_json,
    host_view,
    refused_publish,
    request_body,
    stored_digests,
    submit,
    try_publish,
    wait_for_log,
)
from tests.system import enrol_host

pytestmark = pytest.mark.e2e
EVIL = "e" * 64  # the digest of the rogue's files and SRPM


async def test_forged_service_messages_change_nothing(system, example_srpm, tap):
    rogue = await enrol_host(system, f"mallory-{uuid.uuid4().hex[:6]}")
    request = await submit(system, await request_body(system, example_srpm, scratch=True))
    build_id = await build_id_of(system, request)
    leased = await tap.wait(TaskLeasedV1, timeout=60, build_id=build_id)
    lease = leased.body
    honest = lease["host"]
    task = {k: lease[k] for k in ("task_id", "build_id", "lease_id", "arch")}
    future = (datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=3650)).isoformat()
    evil_rpm = {"name": "skyline-hello-1.0-1.noarch.rpm", "size": 4, "sha256": EVIL}

    forgeries = [
        HostStatusV1(
            body={
                "host": rogue.host,
                "owner": "mallory",
                "state": "online",
                "trust": "core",
                "arches": ["noarch", "x86_64"],
                "releases": ["local"],
                "free_slots": 64,
                "seen_at": future,
            }
        ),
        TaskLeasedV1(
            body={**lease, "srpm_url": "http://127.0.0.1:9/evil.src.rpm", "srpm_sha256": EVIL},
            topic=TaskLeasedV1.topic_for(honest),
        ),
        TaskVerifiedV1(
            body={
                **task,
                "host": rogue.host,
                "nvr": lease["nvr"],
                "status": "succeeded",
                "files": [evil_rpm],
                "result_digest": EVIL,
            }
        ),
        TaskVerifiedV1(  # an honest lease's verdict turned into a failure
            body={
                **task,
                "host": honest,
                "nvr": lease["nvr"],
                "status": "failed",
                "files": [],
                "result_digest": EVIL,
            }
        ),
        TaskMismatchV1(
            body={**task, "host": honest, "reason": "digest_mismatch", "detail": "forged"}
        ),
        BuildStoredV1(
            body={
                "build_id": build_id,
                "task_id": lease["task_id"],
                "owner": system.owner,
                "nvr": lease["nvr"],
                "arch": lease["arch"],
                "host": rogue.host,
                "files": [{**evil_rpm, "path": "packages/evil.rpm", "arch": "noarch"}],
            }
        ),
    ]
    for forged in forgeries:
        # As itself, and naming the service that owns the topic: refused either way.
        for user_id in (None, "skyline-verifier"):
            key, message = encoded(forged, user_id)
            await refused_publish(rogue.amqp_url, key, message)

    # A verdict that reaches the dispatcher from the wrong sender (the packager, on the one
    # routing key it may publish on) is dead-lettered before any handler sees it.
    verdict = forgeries[3]
    _, message = encoded(verdict, system.owner)
    assert await try_publish(system.url_of(system.owner), request.topic, message) is None
    assert await dead_letters(system, {message.message_id})
    await wait_for_log(system, "dispatcher", "refused sender")

    # The honest build went through as if nothing happened.
    complete = await tap.wait(BuildCompleteV1, timeout=120, build_id=build_id)
    assert {m.body["host"] for m in tap.of(BuildStoredV1, build_id=build_id)} == {honest}
    assert all(f["sha256"] != EVIL for f in complete.body["files"])
    assert [m.body["srpm_sha256"] for m in tap.of(TaskLeasedV1, build_id=build_id)] == [
        lease["srpm_sha256"]
    ]
    assert not tap.of(TaskMismatchV1, lease_id=lease["lease_id"])
    verdicts = tap.of(TaskVerifiedV1, lease_id=lease["lease_id"], status="failed")
    assert {m.id for m in verdicts} <= {message.message_id}  # only the dead-lettered one
    assert not tap.of(HostStatusV1, host=rogue.host, trust="core")
    build = await get_json(f"{system.url('dispatcher')}/api/v1/builds/{build_id}")
    assert build["state"] == "complete"
    assert [(t["host"], t["attempts"]) for t in build["tasks"]] == [(honest, 1)]
    assert (await host_view(system, rogue.host))["trust"] == "untrusted"
    queue = await get_json(f"{system.url('dispatcher')}/api/v1/queue")
    assert all(h["trust"] != "core" for h in queue["hosts"] if h["host"] == rogue.host)
    assert EVIL not in stored_digests(system)
    assert not (system.koji_topdir / "packages" / "evil.rpm").exists()


async def test_request_for_another_owner_is_refused(system, example_srpm, tap):
    victim = f"victim-{uuid.uuid4().hex[:6]}"
    body = await request_body(system, example_srpm, scratch=True)

    # On its own routing key, naming another owner in the body: dead-lettered, no build.
    claimed = BuildRequestV1(
        body={**body, "owner": victim}, topic=BuildRequestV1.topic_for(system.owner)
    )
    key, message = encoded(claimed, system.owner)
    assert await try_publish(system.url_of(system.owner), key, message) is None
    assert await dead_letters(system, {message.message_id})
    await wait_for_log(system, "dispatcher", f"may not request builds for owner {victim!r}")
    assert await builds_of(system, claimed.id) == []

    # On the other owner's routing key: the broker refuses it, with or without a user_id.
    for user_id in (None, system.owner):
        as_victim = BuildRequestV1(
            body={**body, "owner": victim}, topic=BuildRequestV1.topic_for(victim)
        )
        key, message = encoded(as_victim, user_id)
        await refused_publish(system.url_of(system.owner), key, message)
        assert await builds_of(system, as_victim.id) == []

    # A request of its own afterwards is queued: nothing for the victim was queued before it.
    own = await submit(system, body)
    await build_id_of(system, own)
    await tap.wait(BuildQueuedV1, timeout=60, owner=system.owner)
    assert not tap.of(BuildQueuedV1, owner=victim)
    assert not [
        m
        for m in tap.messages
        if isinstance(m, BuildRequestV1) and m.owner == victim and m.id != claimed.id
    ]
