"""A queued task's critical-path figures (`work`, `path`) in the dispatcher's build API and
in `skyline status`, on a real database: null without history."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from skyline_messages import BuildChainRequestV1

from services.cli.progress import status_lines
from services.common.service import Runtime
from services.dispatcher.__main__ import SERVICE
from tests.integration.dispatcher.test_critical_path import build_of, history

pytestmark = pytest.mark.integration


async def builds_by_nvr(client: TestClient) -> dict[str, dict[str, Any]]:
    response = await client.get("/api/v1/builds")
    assert response.status == 200
    return {b["nvr"]: b for b in (await response.json())["builds"]}


async def test_queued_tasks_show_their_work_and_path(runtime: Runtime, client: TestClient) -> None:
    await history(runtime, "skyline-base", 100.0)
    await history(runtime, "skyline-user", 50.0)
    links: list[dict[str, Any]] = [
        {
            "srpm_url": f"http://127.0.0.1:1/sources/{nvr}.src.rpm",
            "srpm_sha256": "a" * 64,
            "arches": ["noarch"],
        }
        for nvr in ("skyline-base-1.0-1", "skyline-user-1.0-1")
    ]
    links[1]["after"] = [0]
    chain = BuildChainRequestV1(
        body={"links": links, "owner": "alice"}, topic=BuildChainRequestV1.topic_for("alice")
    )
    await SERVICE.handle(runtime, chain)
    await SERVICE.handle(runtime, build_of("skyline-new-1-1"))  # no history
    builds = await builds_by_nvr(client)  # no host: every task waits

    [base] = builds["skyline-base-1.0-1"]["tasks"]
    assert base["state"] == "queued"
    assert (base["work"], base["path"]) == (100.0, 150.0)  # then the user link's 50 s
    [user] = builds["skyline-user-1.0-1"]["tasks"]
    assert (user["work"], user["path"]) == (50.0, 50.0)
    [new] = builds["skyline-new-1-1"]["tasks"]
    assert (new["state"], new["work"], new["path"]) == ("queued", None, None)
    # The same figures by build id.
    one = await client.get(f"/api/v1/builds/{builds['skyline-base-1.0-1']['build_id']}")
    assert [(t["work"], t["path"]) for t in (await one.json())["tasks"]] == [(100.0, 150.0)]

    # `skyline status` shows them for a queued task, and says nothing without history.
    label = f"task {base['task_id']} noarch"
    assert f"  {label}: estimated work 100 s, path 150 s" in status_lines(
        builds["skyline-base-1.0-1"]
    )
    assert not any("estimated" in line for line in status_lines(builds["skyline-new-1-1"]))
