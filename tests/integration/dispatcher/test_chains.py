"""Chain builds in the dispatcher on a real database: links wait for the links they come
after, build against their repositories, and fail at once when one of them failed."""

from __future__ import annotations

from typing import Any

import pytest
from skyline_messages import BuildChainRequestV1, BuildFailedV1, BuildQueuedV1, TaskLeasedV1

from services.common.errors import Reject
from services.common.service import Runtime
from services.dispatcher.__main__ import SERVICE
from tests.integration.dispatcher.test_dispatcher_service import (
    new_messages,
    of_type,
    status,
    stored,
    verified,
)

pytestmark = pytest.mark.integration

NVRS = ["skyline-base-1.0-1", "skyline-user-1.0-1", "skyline-top-1.0-1"]


def link(nvr: str, *after: int) -> dict[str, Any]:
    body: dict[str, Any] = {
        "srpm_url": f"http://127.0.0.1:1/sources/{nvr}.src.rpm",
        "srpm_sha256": "a" * 64,
        "arches": ["noarch"],
    }
    if after:
        body["after"] = list(after)
    return body


def chain(*links: dict[str, Any], sender: str = "alice") -> BuildChainRequestV1:
    return BuildChainRequestV1(
        body={"links": list(links), "owner": "alice"},
        topic=BuildChainRequestV1.topic_for(sender),
    )


async def builds(runtime: Runtime) -> list[Any]:
    return await runtime.pool.fetch("SELECT * FROM builds ORDER BY id")


async def tasks_of(runtime: Runtime, build_id: int) -> list[Any]:
    return await runtime.pool.fetch("SELECT * FROM tasks WHERE build_id = $1", build_id)


async def lease_one(runtime: Runtime, sent) -> TaskLeasedV1:
    [lease] = of_type(await new_messages(runtime, sent, status("core-1")), TaskLeasedV1)
    return lease


async def test_three_links_in_order_each_against_the_previous_links_repository(
    runtime, sent, client
) -> None:
    msg = chain(link(NVRS[0]), link(NVRS[1], 0), link(NVRS[2], 1))
    await SERVICE.handle(runtime, msg)
    b0, b1, b2 = await builds(runtime)
    assert [b["nvr"] for b in (b0, b1, b2)] == NVRS
    assert [b["request_id"] for b in (b0, b1, b2)] == [f"{msg.id}/{i}" for i in range(3)]
    assert len(of_type(await sent(), BuildQueuedV1)) == 3
    [t1] = await tasks_of(runtime, b1["id"])
    assert (t1["state"], t1["waiting"]) == ("blocked", f"waiting for chain link {NVRS[0]}")

    # Only the first link is leased; the others wait however many hosts are free.
    first = await lease_one(runtime, sent)
    assert first.build_id == b0["id"] and first.repos == []
    assert of_type(await new_messages(runtime, sent, status("core-2")), TaskLeasedV1) == []

    await SERVICE.handle(runtime, verified(first))
    # Stored: the second link goes to the queue with the first one's repository, and is
    # leased at once to the free host.
    [second] = of_type(await new_messages(runtime, sent, stored(first)), TaskLeasedV1)
    repo0 = f"{runtime.config.dispatcher.collector_url}/api/v1/repos/builds/{b0['id']}/"
    assert (second.build_id, second.repos) == (b1["id"], [repo0])
    [t2] = await tasks_of(runtime, b2["id"])
    assert (t2["state"], t2["waiting"]) == ("blocked", f"waiting for chain link {NVRS[1]}")

    await SERVICE.handle(runtime, verified(second))
    [third] = of_type(await new_messages(runtime, sent, stored(second)), TaskLeasedV1)
    repo1 = f"{runtime.config.dispatcher.collector_url}/api/v1/repos/builds/{b1['id']}/"
    assert (third.build_id, third.repos) == (b2["id"], [repo1])

    view = await (await client.get(f"/api/v1/chains/{msg.id}")).json()
    assert [(v["nvr"], v["chain_link"], v["after_builds"]) for v in view["links"]] == [
        (NVRS[0], 0, []),
        (NVRS[1], 1, [b0["id"]]),
        (NVRS[2], 2, [b1["id"]]),
    ]
    assert (await client.get("/api/v1/chains/nothing-here")).status == 404
    assert (await client.get("/api/v1/chains/bad%20id")).status == 400


async def test_a_failed_link_fails_its_dependents_at_once_naming_it(runtime, sent) -> None:
    # Link 3 comes after link 2 which comes after link 1; link 4 only after link 1.
    await SERVICE.handle(
        runtime,
        chain(link(NVRS[0]), link(NVRS[1], 0), link(NVRS[2], 1), link("skyline-side-1.0-1", 0)),
    )
    b0, b1, b2, side = await builds(runtime)
    first = await lease_one(runtime, sent)
    await SERVICE.handle(runtime, verified(first))
    # Stored: links 2 and 4 are released, and leased to core-1 (two free slots).
    await SERVICE.handle(runtime, status("core-1", free_slots=2))
    released = of_type(await new_messages(runtime, sent, stored(first)), TaskLeasedV1)
    assert sorted(m.build_id for m in released) == [b1["id"], side["id"]]
    [second] = [m for m in released if m.build_id == b1["id"]]
    before = len(await sent())
    # Link 2 fails on a core host (believed at once).
    await SERVICE.handle(runtime, verified(second, "failed"))
    failed = {
        m.body["build_id"]: m.body["reason"]
        for m in of_type((await sent())[before:], BuildFailedV1)
    }
    assert set(failed) == {b1["id"], b2["id"]}
    assert failed[b2["id"]].startswith(f"chain link {NVRS[1]} (build {b1['id']}) failed: ")
    [t2] = await tasks_of(runtime, b2["id"])
    assert t2["state"] == "failed" and t2["reason"] == failed[b2["id"]]
    states = {b["id"]: b["state"] for b in await builds(runtime)}
    assert states[b2["id"]] == "failed" and states[b0["id"]] == "complete"
    assert states[side["id"]] == "building"  # it does not come after the failed link


async def test_cancelling_a_link_fails_the_rest_of_the_chain(runtime, sent) -> None:
    from services.dispatcher import handlers

    await SERVICE.handle(runtime, chain(link(NVRS[0]), link(NVRS[1], 0), link(NVRS[2], 1)))
    b0, b1, _ = await builds(runtime)
    async with runtime.transaction() as ctx:
        await handlers.fail_build(ctx, b0["id"], "cancelled by alice")
    reasons = [b["reason"] for b in await builds(runtime)]
    assert reasons[1] == f"chain link {NVRS[0]} (build {b0['id']}) failed: cancelled by alice"
    assert reasons[2].startswith(f"chain link {NVRS[1]} (build {b1['id']}) failed: chain link")


@pytest.mark.parametrize(
    ("links", "why"),
    [
        ([link(NVRS[0], 0)], "link 0 comes after link 0, which is not an earlier link"),
        ([link(NVRS[0]), link(NVRS[1], 2), link(NVRS[2])], "link 1 comes after link 2"),
    ],
)
async def test_a_chain_that_is_not_a_dag_in_order_is_refused(runtime, sent, links, why) -> None:
    with pytest.raises(Reject, match=why):
        await SERVICE.handle(runtime, chain(*links))
    assert await builds(runtime) == [] and await sent() == []


async def test_a_chain_for_another_owner_is_refused(runtime, sent) -> None:
    with pytest.raises(Reject, match="mallory may not request builds for owner 'alice'"):
        await SERVICE.handle(runtime, chain(link(NVRS[0]), sender="mallory"))
