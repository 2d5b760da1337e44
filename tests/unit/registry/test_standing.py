"""Owner standing and the sponsorship tree (services/registry/standing.py, owners.tree)."""

from __future__ import annotations

import pytest

from services.registry import owners
from services.registry.standing import (
    Standing,
    StandingConfig,
    host_limit,
    may_enrol,
    may_sponsor,
    standing,
)

CONFIG = StandingConfig()


def test_no_fraud_keeps_the_base_standing() -> None:
    assert standing(Standing.GOOD, 0, 0, CONFIG) == Standing.GOOD
    assert standing(Standing.SPONSORED, 0, 0, CONFIG) == Standing.SPONSORED


def test_frauds_count_fully_against_the_owner_and_half_against_its_sponsor() -> None:
    assert standing(Standing.GOOD, 1, 0, CONFIG) == Standing.PROBATION
    assert standing(Standing.GOOD, 2, 0, CONFIG) == Standing.SUSPENDED
    assert standing(Standing.GOOD, 0, 1, CONFIG) == Standing.PROBATION  # 0.5 points
    assert standing(Standing.GOOD, 0, 3, CONFIG) == Standing.PROBATION  # 1.5 points
    assert standing(Standing.GOOD, 0, 4, CONFIG) == Standing.SUSPENDED  # 2 points
    lenient = StandingConfig(sponsor_weight=0.25, probation_at=1.0)
    assert standing(Standing.GOOD, 0, 3, lenient) == Standing.GOOD


def test_what_each_standing_may_do() -> None:
    assert [may_sponsor(s) for s in Standing] == [True, False, False, False]
    assert [may_enrol(s) for s in Standing] == [True, True, True, False]


def test_host_limit_override() -> None:
    assert host_limit(None, 20) == 20
    assert host_limit(3, 20) == 3
    assert host_limit(0, 20) == 0


@pytest.mark.parametrize(
    "bad", [{"sponsor_weight": -1}, {"probation_at": 0}, {"probation_at": 3, "suspend_at": 2}]
)
def test_bad_settings_are_refused(bad: dict) -> None:
    with pytest.raises(ValueError):
        StandingConfig(**bad)


def test_the_tree_nests_owners_under_their_sponsors() -> None:
    rows = [
        {"name": "admin-made", "sponsor": None},
        {"name": "bob", "sponsor": "admin-made"},
        {"name": "carol", "sponsor": "bob"},
        {"name": "dave", "sponsor": "admin-made"},
        {"name": "eve", "sponsor": None},
    ]
    tree = owners.tree(rows)

    def names(nodes: list) -> list:
        return [(n["name"], names(n["sponsored"])) for n in nodes]

    assert names(tree) == [
        ("admin-made", [("bob", [("carol", [])]), ("dave", [])]),
        ("eve", []),
    ]
