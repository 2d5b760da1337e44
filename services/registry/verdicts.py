"""What an accepted task means for each host's trust (pure: no I/O).

The verifier's `task.verified` names the hosts whose results agreed and the odd ones out of a
settled disagreement. Each agreeing host whose result a host of another owner agreed with is
confirmed; one accepted on a single owner's word (sampling let it through) is counted but
confirms nothing; each odd one out loses trust. Core hosts are graded by admins, not by peers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from enum import StrEnum

from .trust import (
    Evidence,
    HostTrust,
    Transition,
    Trust,
    TrustConfig,
    record_confirmed,
    record_odd_one_out,
    record_unconfirmed,
)


class Kind(StrEnum):
    CONFIRMED = "confirmed"
    UNCONFIRMED = "unconfirmed"
    ODD_ONE_OUT = "odd_one_out"


@dataclasses.dataclass(frozen=True)
class Outcome:
    host: str
    kind: Kind
    evidence: Evidence


def outcomes(
    task_id: str,
    comparison_key: str,
    agreeing: Sequence[Mapping[str, str]],
    odd_ones_out: Sequence[Mapping[str, str]],
) -> list[Outcome]:
    """One outcome per host named by the verdict, in host-name order (the order rows are
    locked in, so two verdicts never wait for each other's rows the other way round)."""
    owner_of: dict[str, str] = {}
    for agreed in agreeing:
        owner_of.setdefault(agreed["host"], agreed["owner"])
    winners = tuple(owner_of)
    found: dict[str, Outcome] = {}
    for odd in odd_ones_out:
        evidence = Evidence(task_id, odd["comparison_key"], winners, odd["detail"])
        found.setdefault(odd["host"], Outcome(odd["host"], Kind.ODD_ONE_OUT, evidence))
    for host, owner in owner_of.items():
        if host in found:  # never both winner and loser: the loss is what matters
            continue
        others = tuple(h for h, o in owner_of.items() if o != owner)
        kind = Kind.CONFIRMED if others else Kind.UNCONFIRMED
        found[host] = Outcome(host, kind, Evidence(task_id, comparison_key, others))
    return [found[host] for host in sorted(found)]


def apply(
    state: HostTrust, outcome: Outcome, config: TrustConfig
) -> tuple[HostTrust, Transition | None]:
    """The host's new record, and its transition when there is one to store and publish."""
    if outcome.kind == Kind.ODD_ONE_OUT:
        # Also for a core host: its level stays, but admins must hear of the disagreement.
        return record_odd_one_out(state, outcome.evidence, config)
    if state.level == Trust.CORE:
        return state, None
    if outcome.kind == Kind.CONFIRMED:
        return record_confirmed(state, outcome.evidence, config)
    return record_unconfirmed(state), None
