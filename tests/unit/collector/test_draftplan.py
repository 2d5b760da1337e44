"""Which results make a build's Koji draft, how a draft is recognised, the hub's version."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from services.collector import draftplan, kojidrafthub, kojimeta

T0 = datetime.datetime(2026, 5, 1, tzinfo=datetime.UTC)


def _lease(task: int, host: str, state: str = "open", minute: int = 0, **kw: Any) -> dict:
    return {
        "task_id": task,
        "lease_id": f"{task}-{host}",
        "host": host,
        "state": state,
        "finished": kw.get("finished", True),
        "cleaned": kw.get("cleaned", False),
        "leased_at": T0 + datetime.timedelta(minutes=minute),
    }


def test_a_waiting_task_gives_its_first_result_from_a_host_the_verifier_named() -> None:
    leases = [
        _lease(1, "unchecked", minute=0),  # its result never passed the verifier's checks
        _lease(1, "a", minute=1),
        _lease(1, "b", minute=2),  # the replica
    ]
    chosen = draftplan.choose_leases(leases, {"1": ["a", "b"]})
    assert chosen[1]["host"] == "a"


def test_an_accepted_task_gives_its_stored_result() -> None:
    leases = [_lease(1, "a", minute=0), _lease(2, "c", "stored", minute=1), _lease(2, "d")]
    chosen = draftplan.choose_leases(leases, {"1": ["a"]})
    assert (chosen[1]["host"], chosen[2]["host"]) == ("a", "c")


@pytest.mark.parametrize(
    "leases",
    [
        [_lease(1, "a"), _lease(2, "c")],  # task 2 neither accepted nor waiting
        [_lease(1, "a", finished=False)],  # no attested result
        [_lease(1, "a", cleaned=True)],  # its uploads are gone
        [_lease(1, "a", "failed")],
        [],
    ],
)
def test_a_draft_waits_while_a_task_has_no_result(leases: list[dict]) -> None:
    with pytest.raises(draftplan.NotReady):
        draftplan.choose_leases(leases, {"1": ["a"]})


def test_a_noarch_file_built_by_every_arch_is_kept_once() -> None:
    def row(task: int, arch: str, name: str, stored: bool) -> dict:
        return {"task_id": task, "task_arch": arch, "name": name, "stored": stored}

    rows = [
        row(1, "x86_64", "a-1-1.noarch.rpm", False),
        row(1, "x86_64", "build.log", False),
        row(2, "aarch64", "a-1-1.noarch.rpm", True),  # stored first: the one kept
        row(2, "aarch64", "build.log", True),
    ]
    kept = draftplan.unique_files(rows)
    assert [(r["task_id"], r["name"]) for r in kept] == [
        (1, "build.log"),
        (2, "a-1-1.noarch.rpm"),
        (2, "build.log"),
    ]
    assert draftplan.rpm_arch("a-1-1.fc41.noarch.rpm", "x86_64") == "noarch"
    assert draftplan.rpm_arch("a-1-1.src.rpm", "x86_64") == "src"
    assert draftplan.rpm_arch("build.log", "aarch64") == "aarch64"


PLAN = kojimeta.Plan(
    build_id=5,
    nvr="hello-1.0-1",
    owner="alice",
    start_time=1.0,
    end_time=2.0,
    buildroots=[kojimeta.Buildroot(1, "x86_64", "h1", {})],
    outputs=[kojimeta.Output("hello-1.0-1.x86_64.rpm", "p/a.rpm", "a" * 64, 10, "x86_64", 1)],
)


def test_draft_metadata_and_recognition() -> None:
    assert kojimeta.metadata(PLAN, "skyline", "1", True)["build"]["draft"] is True
    assert "draft" not in kojimeta.metadata(PLAN, "skyline", "1")["build"]
    extra = {"skyline": {"build_id": 5, "files": PLAN.digests}}
    draft = {"id": 9, "draft": True, "state": 1, "cg_name": "skyline", "extra": extra}
    assert kojimeta.is_draft_of(PLAN, draft, "skyline")
    assert not kojimeta.is_draft_of(PLAN, {**draft, "draft": False}, "skyline")
    assert not kojimeta.is_draft_of(PLAN, {**draft, "state": 0}, "skyline")  # still building
    assert not kojimeta.is_draft_of(PLAN, draft, "another-cg")
    other = {"skyline": {"build_id": 5, "files": {"hello-1.0-1.x86_64.rpm": "b" * 64}}}
    assert not kojimeta.is_draft_of(PLAN, {**draft, "extra": other}, "skyline")


@pytest.mark.parametrize(
    ("version", "parsed", "drafts"),
    [("1.35.3", (1, 35, 3), True), ("1.34rc1", (1, 34), True), ("1.33.1", (1, 33, 1), False)],
)
def test_hub_versions(version: str, parsed: tuple[int, ...], drafts: bool) -> None:
    assert kojidrafthub.parse_version(version) == parsed
    assert (parsed >= kojidrafthub.MIN_VERSION) is drafts
