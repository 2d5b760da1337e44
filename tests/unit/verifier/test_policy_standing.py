"""The owner's standing in the verifier's sampling (policy.standing_minimum, sampling_rate)."""

from __future__ import annotations

import random

import pytest

from services.registry.standing import Standing
from services.registry.trust import Trust
from services.verifier.agreement import as_policy_result, owner_standing
from services.verifier.policy import (
    Action,
    BuildKind,
    PolicyConfig,
    Result,
    Risk,
    decide,
    sampling_rate,
)

CFG = PolicyConfig()


class Draw(random.Random):
    def random(self) -> float:
        return 0.3  # above a veteran's own rate, below sample_probation


VETERAN = 10_000  # results on record: the trusted host's own rate is near the floor


def trusted(standing: str | None, total: int = VETERAN) -> Result:
    return Result("t1", "alice", Trust.TRUSTED, "k", total_results=total, owner_standing=standing)


@pytest.mark.parametrize(
    ("standing", "expected"),
    [
        (None, None),  # the registry did not say: the default
        (Standing.GOOD, None),
        (Standing.SPONSORED, CFG.sample_sponsored),
        (Standing.PROBATION, CFG.sample_probation),
        (Standing.SUSPENDED, CFG.sample_probation),
    ],
)
def test_a_veteran_hosts_rate_by_its_owners_standing(standing, expected) -> None:
    default = sampling_rate(trusted(None), Risk(), CFG)
    assert default < CFG.sample_sponsored  # near the floor
    rate = sampling_rate(trusted(standing), Risk(), CFG)
    assert rate == (default if expected is None else expected)


def test_the_standing_is_a_minimum_not_a_cap() -> None:
    # A newly trusted host is sampled at sample_start (0.5) anyway; risk adds to it.
    new = trusted(Standing.SPONSORED, total=0)
    assert sampling_rate(new, Risk(), CFG) == sampling_rate(trusted(None, total=0), Risk(), CFG)
    risky = Risk(new_environment=True)
    assert sampling_rate(trusted(Standing.PROBATION), risky, CFG) > CFG.sample_probation


def test_probation_owner_is_replicated_where_a_good_one_is_not() -> None:
    draw = Draw(0)
    good = decide([trusted(Standing.GOOD)], BuildKind.SCRATCH, Risk(), CFG, draw)
    assert good.action == Action.ACCEPT
    probation = decide([trusted(Standing.PROBATION)], BuildKind.SCRATCH, Risk(), CFG, draw)
    assert probation.action == Action.REPLICA
    assert probation.reason == "sampled at rate 0.500"


def test_standing_settings_are_bounded() -> None:
    with pytest.raises(ValueError):
        PolicyConfig(sample_probation=1.5)
    with pytest.raises(ValueError):
        PolicyConfig(sample_sponsored=-0.1)


@pytest.mark.parametrize(
    ("registry_says", "kept"),
    [
        ("probation", "probation"),
        ("good", "good"),
        ("bogus", None),
        (None, None),
        (3, None),
        (["probation"], None),
    ],
)
def test_only_a_known_standing_from_the_registry_is_kept(registry_says, kept) -> None:
    host = {"host": "t1", "owner": "alice"}
    if registry_says is not None:
        host["owner_standing"] = registry_says
    assert owner_standing(host) == kept


def test_results_rows_carry_the_standing_to_the_policy() -> None:
    row = {
        "host": "t1",
        "owner": "alice",
        "trust": "trusted",
        "comparison_key": "k",
        "total_results": 3,
        "consecutive_confirmed": 1,
        "owner_standing": "sponsored",
    }
    assert as_policy_result(row).owner_standing == "sponsored"
    del row["owner_standing"]  # a row from before the column: the default
    assert as_policy_result(row).owner_standing is None
