"""Tests for services.verifier.policy: each default rule, sampling, independence, quorum."""

from __future__ import annotations

import random

import pytest

from services.registry.trust import Trust
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
NO_RISK = Risk()


class Fixed(random.Random):
    """A random source that always draws the same value."""

    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


NEVER = Fixed(0.999999)  # never below a rate < 1: not sampled
ALWAYS = Fixed(0.0)  # always sampled


def r(host: str, owner: str, trust: Trust, digest: str = "good", total: int = 0) -> Result:
    return Result(host, owner, trust, digest, total_results=total)


def test_untrusted_result_always_needs_an_independent_trusted_replica() -> None:
    d = decide([r("v1", "alice", Trust.UNTRUSTED)], BuildKind.SCRATCH, NO_RISK, CFG, NEVER)
    assert d.action == Action.REPLICA
    assert d.min_trust == Trust.TRUSTED
    assert d.exclude_owners == {"alice"}


def test_same_owner_agreement_is_not_independent() -> None:
    results = [r("v1", "alice", Trust.UNTRUSTED), r("v2", "alice", Trust.TRUSTED)]
    d = decide(results, BuildKind.SCRATCH, NO_RISK, CFG, NEVER)
    assert d.action == Action.REPLICA
    assert d.exclude_owners == {"alice"}


def test_two_untrusted_owners_agreeing_do_not_vouch_for_each_other() -> None:
    results = [r("v1", "alice", Trust.UNTRUSTED), r("v2", "bob", Trust.UNTRUSTED)]
    d = decide(results, BuildKind.SCRATCH, NO_RISK, CFG, NEVER)
    assert d.action == Action.REPLICA
    assert d.exclude_owners == {"alice", "bob"}


def test_untrusted_result_accepted_once_an_independent_trusted_host_agrees() -> None:
    results = [r("v1", "alice", Trust.UNTRUSTED), r("t1", "bob", Trust.TRUSTED)]
    d = decide(results, BuildKind.SCRATCH, NO_RISK, CFG, NEVER)
    assert (d.action, d.rule, d.digest) == (Action.ACCEPT, "agreement", "good")
    assert d.agreeing == ("v1", "t1")


def test_trusted_result_sampled_or_accepted_by_the_random_source() -> None:
    one = [r("t1", "bob", Trust.TRUSTED, total=10_000)]
    assert decide(one, BuildKind.SCRATCH, NO_RISK, CFG, ALWAYS).action == Action.REPLICA
    d = decide(one, BuildKind.SCRATCH, NO_RISK, CFG, NEVER)
    assert (d.action, d.rule, d.agreeing) == (Action.ACCEPT, "trusted-sampled-out", ("t1",))


def test_sampling_is_deterministic_for_a_seeded_source() -> None:
    one = [r("t1", "bob", Trust.TRUSTED, total=50)]
    runs = [
        [decide(one, BuildKind.SCRATCH, NO_RISK, CFG, rng).action for _ in range(200)]
        for rng in (random.Random(7), random.Random(7))
    ]
    assert runs[0] == runs[1]
    assert Action.REPLICA in runs[0] and Action.ACCEPT in runs[0]


def test_sampling_rate_falls_with_the_record_and_never_below_the_floor() -> None:
    rates = [
        sampling_rate(r("t", "o", Trust.TRUSTED, total=n), NO_RISK, CFG)
        for n in (0, 10, 100, 1000, 10**9)
    ]
    assert rates[0] == pytest.approx(CFG.sample_start)
    assert rates == sorted(rates, reverse=True) and len(set(rates)) == len(rates)
    assert rates[-1] >= CFG.sample_floor > 0


@pytest.mark.parametrize(
    "risk",
    [
        Risk(new_environment=True),
        Risk(new_package=True),
        Risk(build_time_outlier=True),
        Risk(critical_package=True),
    ],
)
def test_each_risk_signal_raises_the_rate(risk: Risk) -> None:
    old = r("t", "o", Trust.TRUSTED, total=10_000)
    assert sampling_rate(old, risk, CFG) > sampling_rate(old, NO_RISK, CFG)


def test_risk_raises_the_rate_but_caps_at_one() -> None:
    every = Risk(True, True, True, True)
    assert sampling_rate(r("t", "o", Trust.TRUSTED), every, CFG) == 1.0


def test_risk_makes_a_sample_happen_that_would_not_otherwise() -> None:
    one = [r("t1", "bob", Trust.TRUSTED, total=10_000)]
    draw = Fixed(0.2)  # above the floor rate, below floor + critical-package weight
    assert decide(one, BuildKind.SCRATCH, NO_RISK, CFG, draw).action == Action.ACCEPT
    risky = Risk(critical_package=True)
    assert decide(one, BuildKind.SCRATCH, risky, CFG, draw).action == Action.REPLICA


def test_official_build_of_a_trusted_host_needs_a_quorum_whatever_the_sample() -> None:
    one = [r("t1", "bob", Trust.TRUSTED, total=10_000)]
    d = decide(one, BuildKind.OFFICIAL, NO_RISK, CFG, NEVER)
    assert d.action == Action.REPLICA and d.exclude_owners == {"bob"}
    two = [*one, r("t2", "carol", Trust.TRUSTED)]
    d = decide(two, BuildKind.OFFICIAL, NO_RISK, CFG, NEVER)
    assert (d.action, d.rule) == (Action.ACCEPT, "quorum")


def test_official_quorum_is_configurable() -> None:
    cfg = PolicyConfig(official_quorum=3)
    two = [r("t1", "bob", Trust.TRUSTED), r("t2", "carol", Trust.TRUSTED)]
    d = decide(two, BuildKind.OFFICIAL, NO_RISK, cfg, NEVER)
    assert d.action == Action.REPLICA and d.exclude_owners == {"bob", "carol"}
    three = [*two, r("t3", "dave", Trust.UNTRUSTED)]
    d = decide(three, BuildKind.OFFICIAL, NO_RISK, cfg, NEVER)
    assert (d.action, d.rule) == (Action.ACCEPT, "quorum")
    with pytest.raises(ValueError):
        PolicyConfig(official_quorum=1)


def test_official_build_from_a_core_host_is_accepted_alone() -> None:
    d = decide([r("c1", "fedora", Trust.CORE)], BuildKind.OFFICIAL, NO_RISK, CFG, ALWAYS)
    assert (d.action, d.rule, d.agreeing) == (Action.ACCEPT, "core", ("c1",))


def test_known_not_reproducible_official_build_needs_a_core_host() -> None:
    one = [r("t1", "bob", Trust.TRUSTED), r("t2", "carol", Trust.TRUSTED)]
    d = decide(one, BuildKind.OFFICIAL, NO_RISK, CFG, NEVER, not_reproducible=True)
    assert d.action == Action.REPLICA and d.min_trust == Trust.CORE


def test_quarantined_host_is_refused() -> None:
    d = decide([r("q", "eve", Trust.QUARANTINED)], BuildKind.SCRATCH, NO_RISK, CFG, NEVER)
    assert d.action == Action.REFUSE


def test_disagreement_asks_a_core_tiebreak_independent_of_both() -> None:
    results = [r("v1", "eve", Trust.UNTRUSTED, "evil"), r("t1", "bob", Trust.TRUSTED)]
    d = decide(results, BuildKind.SCRATCH, NO_RISK, CFG, NEVER)
    assert d.action == Action.TIEBREAK and d.min_trust == Trust.CORE
    assert d.exclude_owners == {"eve", "bob"}


def test_tiebreak_agreeing_with_one_side_flags_the_odd_one_out() -> None:
    results = [
        r("v1", "eve", Trust.UNTRUSTED, "evil"),
        r("t1", "bob", Trust.TRUSTED),
        r("c1", "fedora", Trust.CORE),
    ]
    d = decide(results, BuildKind.OFFICIAL, NO_RISK, CFG, NEVER)
    assert (d.action, d.digest, d.rule) == (Action.ACCEPT, "good", "core")
    assert d.agreeing == ("t1", "c1") and d.odd_ones_out == ("v1",)
    assert not d.not_reproducible


def test_tiebreak_agreeing_with_neither_means_not_reproducible_and_blames_no_one() -> None:
    results = [
        r("v1", "alice", Trust.UNTRUSTED, "a"),
        r("t1", "bob", Trust.TRUSTED, "b"),
        r("c1", "fedora", Trust.CORE, "c"),
    ]
    d = decide(results, BuildKind.OFFICIAL, NO_RISK, CFG, NEVER)
    assert (d.action, d.digest, d.rule) == (Action.ACCEPT, "c", "not-reproducible")
    assert d.not_reproducible and d.odd_ones_out == ()


def test_one_core_against_one_other_asks_a_second_core_host() -> None:
    results = [r("t1", "bob", Trust.TRUSTED, "b"), r("c1", "fedora", Trust.CORE, "c")]
    d = decide(results, BuildKind.OFFICIAL, NO_RISK, CFG, NEVER)
    assert d.action == Action.TIEBREAK and d.exclude_owners == {"bob"}
    both = [*results, r("c2", "fedora", Trust.CORE, "c")]
    d = decide(both, BuildKind.OFFICIAL, NO_RISK, CFG, NEVER)
    assert (d.action, d.digest, d.odd_ones_out) == (Action.ACCEPT, "c", ("t1",))


def test_unsettled_task_is_refused_after_max_results() -> None:
    results = [r(f"h{i}", f"o{i}", Trust.TRUSTED, f"d{i}") for i in range(CFG.max_results)]
    assert decide(results, BuildKind.SCRATCH, NO_RISK, CFG, NEVER).action == Action.REFUSE
