"""Pure trust transitions of builder hosts (no I/O).

Levels: every new host is `untrusted`; it earns `trusted` after `promote_after` consecutive
results that a host of another owner confirmed (BOINC uses 10); a host that is the odd one out
of a settled disagreement drops (trusted -> untrusted, untrusted -> quarantined, both
configurable); `core` and leaving `quarantined` are admin decisions only. Every function
returns the new state and, when the level changes (or an admin acts), a `Transition` carrying
its reason and evidence, which the registry stores, publishes (`host.trust`) and lists.
"""

from __future__ import annotations

import dataclasses
from enum import StrEnum


class Trust(StrEnum):
    UNTRUSTED = "untrusted"
    TRUSTED = "trusted"
    CORE = "core"
    QUARANTINED = "quarantined"


# Order used for "at least this trust" (quarantined ranks below everything).
TRUST_RANK = {Trust.QUARANTINED: 0, Trust.UNTRUSTED: 1, Trust.TRUSTED: 2, Trust.CORE: 3}


def at_least(level: Trust, minimum: Trust) -> bool:
    return TRUST_RANK[level] >= TRUST_RANK[minimum]


@dataclasses.dataclass(frozen=True)
class TrustConfig:
    # Consecutive independently confirmed results that make an untrusted host trusted.
    promote_after: int = 10
    # Where a trusted host goes when it is the odd one out of a settled disagreement.
    demote_trusted_to: Trust = Trust.UNTRUSTED
    # Where an untrusted host goes when it is the odd one out: it never earned trust.
    demote_untrusted_to: Trust = Trust.QUARANTINED
    # Odd-one-out count (over the host's life) at which it is quarantined whatever its level:
    # one disagreement may be a fault, a repeat is a pattern (a cheat would re-earn trust).
    quarantine_after: int = 2

    def __post_init__(self) -> None:
        if self.promote_after < 1 or self.quarantine_after < 1:
            raise ValueError("promote_after and quarantine_after must be at least 1")
        for level in (self.demote_trusted_to, self.demote_untrusted_to):
            if level not in (Trust.UNTRUSTED, Trust.QUARANTINED):
                raise ValueError(f"cannot demote to {level}")


@dataclasses.dataclass(frozen=True)
class HostTrust:
    """A host's level and record; the record restarts at every level change."""

    host: str
    owner: str
    level: Trust = Trust.UNTRUSTED
    consecutive_confirmed: int = 0  # results confirmed by another owner, none disputed since
    total_results: int = 0  # results at this level, confirmed or not
    odd_one_out: int = 0  # settled disagreements it lost, over its life (never reset)


@dataclasses.dataclass(frozen=True)
class Evidence:
    task_id: str
    digest: str  # the comparison key of this host's result
    # Hosts whose results agreed (confirmation) or the settled winners (odd one out).
    others: tuple[str, ...] = ()
    detail: str = ""


@dataclasses.dataclass(frozen=True)
class Transition:
    host: str
    old: Trust
    new: Trust
    reason: str
    evidence: Evidence | None = None
    by: str = "policy"  # "policy" or the admin who decided


def _moved(state: HostTrust, new: Trust) -> HostTrust:
    return dataclasses.replace(state, level=new, consecutive_confirmed=0, total_results=0)


def record_unconfirmed(state: HostTrust) -> HostTrust:
    """A result accepted without a replica (sampling let it through): counts, confirms nothing."""
    return dataclasses.replace(state, total_results=state.total_results + 1)


def record_confirmed(
    state: HostTrust, evidence: Evidence, config: TrustConfig
) -> tuple[HostTrust, Transition | None]:
    """A host of another owner agreed with this host's result."""
    if not evidence.others:
        raise ValueError("a confirmation needs the confirming hosts")
    new = dataclasses.replace(
        state,
        consecutive_confirmed=state.consecutive_confirmed + 1,
        total_results=state.total_results + 1,
    )
    if new.level == Trust.UNTRUSTED and new.consecutive_confirmed >= config.promote_after:
        reason = f"{new.consecutive_confirmed} consecutive results confirmed by other owners"
        return _moved(new, Trust.TRUSTED), Transition(
            state.host, state.level, Trust.TRUSTED, reason, evidence
        )
    return new, None


def record_odd_one_out(
    state: HostTrust, evidence: Evidence, config: TrustConfig
) -> tuple[HostTrust, Transition]:
    """The host disagreed with a settled result (a core host and another owner agreed)."""
    if state.level == Trust.CORE:
        # Core is an admin decision both ways: record the event, leave the level to admins.
        return state, Transition(
            state.host, state.level, state.level, "core host was the odd one out", evidence
        )
    if state.level == Trust.QUARANTINED:
        return state, Transition(
            state.host, state.level, state.level, "quarantined host odd one out again", evidence
        )
    count = state.odd_one_out + 1
    if count >= config.quarantine_after:
        new = Trust.QUARANTINED
    elif state.level == Trust.TRUSTED:
        new = config.demote_trusted_to
    else:
        new = config.demote_untrusted_to
    reason = f"odd one out of a settled disagreement while {state.level} ({count} so far)"
    moved = dataclasses.replace(_moved(state, new), odd_one_out=count)
    return moved, Transition(state.host, state.level, new, reason, evidence)


def set_by_admin(
    state: HostTrust, new: Trust, admin: str, reason: str
) -> tuple[HostTrust, Transition]:
    """The only way to or from `core`, and out of `quarantined`."""
    if not admin or not reason:
        raise ValueError("an admin decision names the admin and its reason")
    return _moved(state, new), Transition(state.host, state.level, new, reason, None, by=admin)
