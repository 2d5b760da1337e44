"""`skyline watch` reports only what changed: tasks, leases (replicas), waits, verdicts."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from services.cli.common import CliError
from services.cli.progress import build_ref, changes, status_lines


def build(**task_changes: Any) -> dict[str, Any]:
    task = {
        "task_id": 11,
        "arch": "noarch",
        "state": "leased",
        "host": "b1",
        "reason": None,
        "files": [],
        "waiting": None,
        "agreeing": [],
        "rule": None,
        "leases": [{"lease_id": "L1", "host": "b1", "purpose": "build", "state": "open"}],
        **task_changes,
    }
    return {
        "build_id": 7,
        "nvr": "hello-1.0-1",
        "owner": "alice",
        "state": "building",
        "reason": None,
        "scratch": False,
        "tasks": [task],
    }


def test_first_call_shows_everything_then_only_changes() -> None:
    seen: dict[str, Any] = {}
    first = [e["text"] for e in changes(build(), seen)]
    assert first == [
        "build 7: hello-1.0-1 by alice (1 task(s))",
        "  task 11 noarch: leased on b1",
        "  task 11 noarch: build lease to b1: open",
    ]
    assert changes(build(), seen) == []

    replica = build(waiting="waiting for agreement: 1 of 2 results")
    replica["tasks"][0]["leases"].append(
        {"lease_id": "L2", "host": "b2", "purpose": "replica", "state": "open"}
    )
    texts = [e["text"] for e in changes(replica, seen)]
    assert texts == [
        "  task 11 noarch: replica lease to b2: open",
        "  task 11 noarch: waiting: waiting for agreement: 1 of 2 results",
    ]

    done = copy.deepcopy(replica)
    done["state"] = "complete"
    done["tasks"][0].update(
        state="accepted", agreeing=[{"host": "b1"}, {"host": "b2"}], rule="two-agree"
    )
    events = changes(done, seen)
    assert [e["event"] for e in events] == ["task", "verdict", "end"]
    assert events[1]["text"] == "  task 11 noarch: accepted, agreed by b1, b2 (two-agree)"
    assert events[2]["text"] == "build 7 complete"


def test_status_lines_end_with_the_state() -> None:
    assert status_lines(build())[-1] == "build 7 building"


def test_status_shows_a_queued_tasks_critical_path_figures() -> None:
    queued = build(state="queued", host=None, leases=[], work=120.4, path=300.0)
    lines = status_lines(queued)
    assert "  task 11 noarch: estimated work 120 s, path 300 s" in lines
    assert lines[-1] == "build 7 building"
    unknown_path = build(state="queued", host=None, leases=[], work=None, path=42.0)
    assert "  task 11 noarch: estimated work unknown, path 42 s" in status_lines(unknown_path)
    # No history (null), or no longer queued: nothing to say.
    for task in (
        build(state="queued", host=None, leases=[], work=None, path=None),
        build(work=120.0, path=300.0),
    ):
        assert not any("estimated" in line for line in status_lines(task))


@pytest.mark.parametrize("bad", ["abc", "-1", "7; rm", "1" * 30])
def test_bad_build_reference(bad: str) -> None:
    with pytest.raises(CliError, match="is not a build number or a request id"):
        build_ref(bad)


def test_build_reference_by_number_or_request_id() -> None:
    assert build_ref("42") == (42, None)
    rid = "0e5f6a3c-1b2d-4e5f-8a9b-0c1d2e3f4a5b"
    assert build_ref(rid.upper()) == (None, rid)
