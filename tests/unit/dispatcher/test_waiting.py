"""Tests for matching.why_waiting: the reason a queued task is not running now."""

from __future__ import annotations

import dataclasses

import pytest

from services.dispatcher.matching import HostView, TaskView, why_waiting


def host(
    name: str,
    *,
    arches=("noarch", "x86_64"),
    trust="core",
    owner="infra",
    free=0,
    releases=("f40",),
) -> HostView:
    return HostView(name, trust, frozenset(arches), frozenset(releases), free, owner=owner)


TASK = TaskView(1, "x86_64", None, False)
BUSY = [host(f"h{i}") for i in range(3)]


@pytest.mark.parametrize(
    ("task", "hosts", "reason"),
    [
        (dataclasses.replace(TASK, arch="s390x"), BUSY, "no online s390x host"),
        (dataclasses.replace(TASK, arch="noarch"), [], "no online host"),
        (
            dataclasses.replace(TASK, release="f41"),
            BUSY,
            "no online x86_64 host offers release f41",
        ),
        (TASK, BUSY, "all 3 eligible hosts busy"),
        (TASK, [host("q", trust="quarantined", free=2)], "every online x86_64 host is quarantined"),
        (
            dataclasses.replace(TASK, purpose="tiebreak", min_trust="core"),
            [host("v", trust="trusted", free=2)],
            "waiting for a core x86_64 host (none online)",
        ),
        (
            dataclasses.replace(
                TASK,
                purpose="replica",
                exclude_hosts=frozenset({"a-1"}),
                exclude_owners=frozenset({"alice"}),
            ),
            [host("a-1", owner="alice", free=1), host("a-2", owner="alice", free=1)],
            "waiting for a host of another owner for the replica",
        ),
        (
            dataclasses.replace(
                TASK, failed_hosts=frozenset({"a-1"}), failed_owners=frozenset({"alice"})
            ),
            [host("a-2", owner="alice", free=1)],
            "waiting for a host of another owner to confirm the failure",
        ),
        (
            dataclasses.replace(TASK, failed_hosts=frozenset({"h0"})),
            [host("h0", free=1)],
            "every online x86_64 host has built or failed it already",
        ),
        (
            TASK,
            [*BUSY, host("free", free=2)],
            "waiting its turn (priority class, fair share): 1 eligible hosts free",
        ),
    ],
)
def test_reasons(task: TaskView, hosts: list[HostView], reason: str) -> None:
    assert why_waiting(task, hosts) == reason
