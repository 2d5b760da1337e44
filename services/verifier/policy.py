"""Acceptance policy: pure decision on a task's results (no I/O).

`decide` looks at every result in for one task (build x arch), the newest last, and answers:

- ACCEPT: a result may be stored; `digest` names it, `agreeing` the hosts that vouch for it
  and `rule` the policy met ("core", "quorum", "agreement", "trusted-sampled-out",
  "not-reproducible").
- REPLICA: build it again on a host of another owner (`exclude_owners`) of at least
  `min_trust`.
- TIEBREAK: results disagree; a core host of another owner builds it.
- REFUSE: nothing of it is stored.

Defaults (issue 6): an untrusted host's result always needs an agreeing replica from another
owner; a trusted host's result is replicated by sampling at a rate that falls with its record,
never below `sample_floor` (nor, for a host whose owner is on probation or only sponsored,
below `sample_probation` or `sample_sponsored`: registry standing.py), and rises with risk; an
official build needs a core host's result or a quorum of agreeing results from independent
owners; a disagreement is settled by a core tie-break: the odd ones out are those the core host
and another owner agreed against, and when the core host agrees with no one the package is not
reproducible (nobody blamed, the core result stands). "Agree" means equal comparison keys
(`Result.digest`): the RPM-aware comparison that computes them lives elsewhere. Randomness
comes in as a parameter.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from enum import StrEnum

from services.registry.standing import Standing
from services.registry.trust import Trust, at_least


class BuildKind(StrEnum):
    OFFICIAL = "official"
    SCRATCH = "scratch"


class Action(StrEnum):
    ACCEPT = "accept"
    REPLICA = "replica"
    TIEBREAK = "tiebreak"
    REFUSE = "refuse"


@dataclasses.dataclass(frozen=True)
class Risk:
    new_environment: bool = False  # the host's build environment changed since its record
    new_package: bool = False  # this host never built this package
    build_time_outlier: bool = False  # build time far from other hosts' for this package
    critical_package: bool = False  # widely installed or security-relevant


@dataclasses.dataclass(frozen=True)
class Result:
    host: str
    owner: str
    trust: Trust
    digest: str  # comparison key: equal keys agree
    total_results: int = 0  # the host's record at its trust level
    consecutive_confirmed: int = 0
    owner_standing: str | None = None  # its owner's standing (None: the registry did not say)


@dataclasses.dataclass(frozen=True)
class PolicyConfig:
    # Agreeing results from distinct owners that accept an official build without a core host.
    official_quorum: int = 2
    # Minimum trust of the replica asked for an untrusted or sampled result.
    replica_min_trust: Trust = Trust.TRUSTED
    # Sampling of a trusted host's result: `sample_start` for a newly trusted host, falling
    # as floor + (start - floor) * halving / (halving + total_results); never below the floor.
    sample_start: float = 0.5
    sample_floor: float = 0.05
    sample_halving: int = 30
    # Added to the rate for each risk signal (then capped at 1).
    risk_new_environment: float = 0.5
    risk_new_package: float = 0.02
    risk_build_time_outlier: float = 0.3
    risk_critical_package: float = 0.2
    # The least sampling rate of a trusted host whose owner is on probation (or suspended),
    # or only sponsored (no admin vouched for it yet); an owner in good standing: no minimum.
    sample_probation: float = 0.5
    sample_sponsored: float = 0.1
    # Results per task after which, still unsettled, the task is refused.
    max_results: int = 5

    def __post_init__(self) -> None:
        if self.official_quorum < 2:
            raise ValueError("official_quorum needs at least 2 independent results")
        if not 0 < self.sample_floor <= self.sample_start <= 1:
            raise ValueError("need 0 < sample_floor <= sample_start <= 1")
        if not (0 <= self.sample_sponsored <= 1 and 0 <= self.sample_probation <= 1):
            raise ValueError("sample_probation and sample_sponsored must be between 0 and 1")
        if self.sample_halving < 1 or self.max_results < 3:
            raise ValueError("sample_halving >= 1 and max_results >= 3")


@dataclasses.dataclass(frozen=True)
class Decision:
    action: Action
    reason: str
    rule: str = ""
    digest: str | None = None  # ACCEPT: the result to store
    agreeing: tuple[str, ...] = ()  # ACCEPT: hosts whose results are that result
    min_trust: Trust | None = None  # REPLICA/TIEBREAK: minimum trust of the next host
    exclude_owners: frozenset[str] = frozenset()  # REPLICA/TIEBREAK: owners already heard
    # Settled disagreement: hosts to report to the registry as the odd ones out.
    odd_ones_out: tuple[str, ...] = ()
    not_reproducible: bool = False


def sampling_rate(result: Result, risk: Risk, config: PolicyConfig) -> float:
    """Replication probability of a trusted host's lone result."""
    c = config
    rate = c.sample_floor + (c.sample_start - c.sample_floor) * c.sample_halving / (
        c.sample_halving + result.total_results
    )
    rate += c.risk_new_environment * risk.new_environment
    rate += c.risk_new_package * risk.new_package
    rate += c.risk_build_time_outlier * risk.build_time_outlier
    rate += c.risk_critical_package * risk.critical_package
    return min(1.0, max(rate, standing_minimum(result.owner_standing, config)))


def standing_minimum(owner_standing: str | None, config: PolicyConfig) -> float:
    """The least sampling rate the owner's standing asks for (0: none)."""
    if owner_standing in (Standing.PROBATION, Standing.SUSPENDED):
        return config.sample_probation
    if owner_standing == Standing.SPONSORED:
        return config.sample_sponsored
    return 0.0


def _owners(results: Sequence[Result]) -> frozenset[str]:
    return frozenset(r.owner for r in results)


def _accept(rule: str, reason: str, group: Sequence[Result], **kw: object) -> Decision:
    return Decision(
        Action.ACCEPT,
        reason,
        rule=rule,
        digest=group[0].digest,
        agreeing=tuple(r.host for r in group),
        **kw,  # type: ignore[arg-type]
    )


def decide(
    results: Sequence[Result],
    kind: BuildKind,
    risk: Risk,
    config: PolicyConfig,
    rng: random.Random,
    *,
    not_reproducible: bool = False,
) -> Decision:
    """Decide on a task once its newest result (`results[-1]`) is in.

    `not_reproducible`: the package is known not to be reproducible on this arch, so its
    official builds are taken from core hosts only.
    """
    if not results:
        raise ValueError("decide needs at least one result")
    if results[-1].trust == Trust.QUARANTINED:
        return Decision(Action.REFUSE, f"{results[-1].host} is quarantined")
    heard = [r for r in results if r.trust != Trust.QUARANTINED]
    groups: dict[str, list[Result]] = {}
    for r in heard:
        groups.setdefault(r.digest, []).append(r)
    cores = [r for r in heard if r.trust == Trust.CORE]
    exclude = _owners(heard)

    if len(groups) > 1:
        return _settle(heard, groups, cores, config, not_reproducible)

    group = heard
    if cores:
        return _accept("core", "a core host built it", group)
    independent = len(_owners(group)) >= 2
    vouched = any(at_least(r.trust, config.replica_min_trust) for r in group)
    if kind == BuildKind.OFFICIAL:
        if not_reproducible:
            return Decision(
                Action.REPLICA,
                "not reproducible: official builds come from core hosts only",
                min_trust=Trust.CORE,
                exclude_owners=exclude,
            )
        if len(_owners(group)) >= config.official_quorum and vouched:
            return _accept("quorum", f"{len(_owners(group))} owners agree", group)
        return _replica("official build needs a core host or a quorum", exclude, config, heard)
    if independent and vouched:
        return _accept("agreement", "an independent host agrees", group)
    if any(r.trust != Trust.TRUSTED for r in group):
        # An untrusted result needs another owner's agreement, even beside a trusted one of
        # its own owner.
        return _replica("untrusted result needs an independent replica", exclude, config, heard)
    rate = sampling_rate(group[-1], risk, config)
    if rng.random() < rate:
        return _replica(f"sampled at rate {rate:.3f}", exclude, config, heard)
    return _accept("trusted-sampled-out", f"not sampled at rate {rate:.3f}", group)


def _replica(
    reason: str, exclude: frozenset[str], config: PolicyConfig, heard: Sequence[Result]
) -> Decision:
    if len(heard) >= config.max_results:
        return Decision(Action.REFUSE, f"no agreement after {len(heard)} results")
    return Decision(
        Action.REPLICA, reason, min_trust=config.replica_min_trust, exclude_owners=exclude
    )


def _settle(
    heard: Sequence[Result],
    groups: dict[str, list[Result]],
    cores: Sequence[Result],
    config: PolicyConfig,
    not_reproducible: bool,
) -> Decision:
    """Results disagree: a core tie-break decides who is the odd one out."""
    # The tie-break must be independent of the disputants; other core hosts (often one
    # owner, the distribution) are independent of the volunteers and of each other.
    tiebreak = Decision(
        Action.TIEBREAK,
        f"{len(groups)} different results",
        min_trust=Trust.CORE,
        exclude_owners=_owners([r for r in heard if r.trust != Trust.CORE]),
    )
    if not cores:
        return tiebreak if len(heard) < config.max_results else _refuse_unsettled(heard)
    core_group = groups[cores[-1].digest]
    core_votes = sum(r.trust == Trust.CORE for r in core_group)
    if not_reproducible:
        return _accept(
            "not-reproducible", "known not reproducible: the core result stands", core_group
        )
    if len(_owners(core_group)) >= 2 or core_votes >= 2:
        odd = tuple(r.host for r in heard if r.digest != core_group[0].digest)
        return _accept(
            "core",
            "a core host and another owner agree",
            core_group,
            odd_ones_out=odd,
        )
    if len(heard) - len(core_group) >= 2 or len(groups) >= 3:
        # The core host agrees with none of two or more others: honest builds differ.
        return _accept(
            "not-reproducible",
            "the core tie-break agrees with no other result",
            core_group,
            not_reproducible=True,
        )
    # One core against one other: a second core host decides (non-reproducible packages
    # would otherwise blame an honest host).
    return tiebreak if len(heard) < config.max_results else _refuse_unsettled(heard)


def _refuse_unsettled(heard: Sequence[Result]) -> Decision:
    return Decision(Action.REFUSE, f"no settled agreement after {len(heard)} results")
