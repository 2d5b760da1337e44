"""The mass rebuild's progress line and summary (services/cli/massrebuild.py)."""

from __future__ import annotations

from typing import Any

from services.cli import massrebuild


def build(nvr: str, state: str, reason: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"nvr": nvr, "state": state, "reason": reason, "waiting": [], "tasks": [], **extra}


def test_summary_counts_outcomes_and_says_why() -> None:
    summary = massrebuild.summarize(
        [
            build("a-1-1", "complete"),
            build("b-1-1", "complete"),
            build("c-1-1", "failed", "noarch build failed on core-1"),
            build("d-1-1", "building", waiting=["s390x: no online s390x host"]),
            build("e-1-1", "building", waiting=["s390x: no online s390x host"]),
            build("f-1-1", "building", tasks=[{"state": "leased"}]),
            build("g-1-1", "building", tasks=[{"state": "queued"}]),
            None,
        ]
    )
    assert summary.line() == "built 2, failed 1, waiting 5"
    assert not summary.done
    assert summary.report() == [
        "built 2, failed 1, waiting 5",
        "failed:",
        "  c-1-1: noarch build failed on core-1",
        "waiting:",
        "  2: no online s390x host",
        "  1: building",
        "  1: queued for a host",
        "  1: not queued by the dispatcher yet",
    ]


def test_done_when_nothing_waits() -> None:
    summary = massrebuild.summarize([build("a-1-1", "complete"), build("b-1-1", "failed")])
    assert summary.done and summary.report() == [
        "built 1, failed 1, waiting 0",
        "failed:",
        "  b-1-1: no reason given",
    ]
