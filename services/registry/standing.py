"""An owner's standing: who vouched for it and what frauds count against it (pure: no I/O).

Like Fedora's packager sponsors: an admin makes an owner (standing `good`: the project vouches
for it), or an owner in good standing invites one (standing `sponsored`: only its sponsor
vouches for it, until an admin raises it to `good`). Each fraud an admin confirms counts 1
against its owner and `sponsor_weight` (1/2) against the owner's sponsor, who vouched for it:

    points = own frauds + sponsor_weight * frauds of the owners it sponsored

and `probation_at` points put an owner on `probation`, `suspend_at` points `suspended`.

What standing decides:
- good: may enrol hosts and sponsor new owners;
- sponsored, probation: may enrol hosts, may not sponsor;
- suspended: may neither (its hosts already enrolled stay: quarantine is the admins' call).

Every host starts `untrusted` whatever its owner's standing: trust is earned by results that
other owners confirm (trust.py). The standing is shown with each host (GET /api/v1/hosts/{host}
`owner_standing`) for the verifier to replicate a sponsored or probation owner's results more
often at first; that rate is the verifier's policy.
"""

from __future__ import annotations

import dataclasses
from enum import StrEnum


class Standing(StrEnum):
    GOOD = "good"
    SPONSORED = "sponsored"
    PROBATION = "probation"
    SUSPENDED = "suspended"


# Standings an admin may set as an owner's base (frauds may lower it further).
BASE_STANDINGS = (Standing.GOOD, Standing.SPONSORED)


@dataclasses.dataclass(frozen=True)
class StandingConfig:
    sponsor_weight: float = 0.5  # what a sponsored owner's fraud counts against its sponsor
    probation_at: float = 0.5  # points at which an owner is on probation (may not sponsor)
    suspend_at: float = 2.0  # points at which an owner may not enrol hosts any more

    def __post_init__(self) -> None:
        if not 0 <= self.sponsor_weight <= 1:
            raise ValueError("sponsor_weight must be between 0 and 1")
        if not 0 < self.probation_at <= self.suspend_at:
            raise ValueError("need 0 < probation_at <= suspend_at")


def points(own_frauds: int, sponsored_frauds: int, config: StandingConfig) -> float:
    return own_frauds + config.sponsor_weight * sponsored_frauds


def standing(
    base: Standing, own_frauds: int, sponsored_frauds: int, config: StandingConfig
) -> Standing:
    score = points(own_frauds, sponsored_frauds, config)
    if score >= config.suspend_at:
        return Standing.SUSPENDED
    if score >= config.probation_at:
        return Standing.PROBATION
    return base


def may_sponsor(level: Standing) -> bool:
    return level == Standing.GOOD


def may_enrol(level: Standing) -> bool:
    return level != Standing.SUSPENDED


def host_limit(override: int | None, default: int) -> int:
    """The most hosts an owner may have enrolled (revoked hosts do not count)."""
    return default if override is None else override
