"""Tests for services.dispatcher.failures and quota: when a failure or a refusal counts."""

from __future__ import annotations

import json

import pytest

from services.dispatcher import failures, quota
from services.dispatcher.failures import Failure

A1 = Failure("a1", "alice", "untrusted")
A2 = Failure("a2", "alice", "trusted")
B1 = Failure("b1", "bob", "untrusted")
CORE = Failure("core-1", "infra", "core")


@pytest.mark.parametrize(
    ("reports", "confirmed"),
    [
        ([], False),
        ([A1], False),  # one volunteer's word is not enough
        ([A2], False),  # nor a trusted one's: only the infrastructure's own hosts fail alone
        ([A1, A2], False),  # one owner, however many hosts it enrols
        ([A1, B1], True),  # two owners agree
        ([CORE], True),
        ([A1, CORE], True),
    ],
)
def test_confirmed(reports: list[Failure], confirmed: bool) -> None:
    assert failures.confirmed(reports) is confirmed


def test_describe_names_every_host_and_owner() -> None:
    assert failures.describe([A1, B1]) == (
        "a1 (owner alice, untrusted) and b1 (owner bob, untrusted)"
    )


def test_parse_reads_the_column_back() -> None:
    text = json.dumps([A1.entry(), CORE.entry()])
    assert failures.parse(text) == [A1, CORE]
    assert failures.parse([B1.entry()]) == [B1]
    assert failures.parse("[]") == []


@pytest.mark.parametrize(
    ("active", "refused"), [(0, False), (499, False), (500, True), (900, True)]
)
def test_quota(active: int, refused: bool) -> None:
    reason = quota.refusal("alice", active, 500)
    assert (reason is not None) is refused
    if refused:
        assert reason == f"quota: owner alice already has {active} active builds (at most 500)"
