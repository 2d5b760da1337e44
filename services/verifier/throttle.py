"""The farm-wide throttle: when to engage and release it (pure: no I/O).

The verifier counts each non-core host's settled result once, by its lease, as good or bad:

- bad: an odd one out of a settled disagreement (task.verified `odd_ones_out`), or a result
  refused for what the host built (BAD_REFUSALS: wrong package or arch, a broken RPM, another
  SRPM, uploads unlike the attestation);
- good: a result that agreed in an accepted verdict (task.verified `agreeing`).

Failed builds, unsettled tasks, unauthenticated or replayed attestations and refusals that
say nothing about the build (unknown lease, missing upload, quarantined host) count neither
way. Core hosts' good results are left out: while the throttle is engaged only core hosts
build, and their results must not release it on the volunteers' behalf.

The window is the newest `window_results` outcomes of the last `window_seconds`. The throttle
engages when at least `min_results` are in it, the bad share reaches `engage_rate` and the bad
results come from at least `min_bad_owners` owners (one owner's hosts cannot stop every
volunteer: they are the registry's quarantine's business); it is
released when the share falls below `release_rate` (lower: it does not flap around one
threshold), or when fewer than `min_results` are left to judge: engaged, volunteers get no new
leases, so the bad results age out and the throttle acts as a cool-down of one window.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from enum import StrEnum

from skyline_messages import TaskVerifiedV1

from services.registry.trust import Trust

from .checks import PACKAGE_REASONS

# Refusals that blame the build itself (checks.py), not the bus, the collector or the lease.
BAD_REFUSALS = frozenset({*PACKAGE_REASONS, "srpm_mismatch", "digest_mismatch"})


@dataclasses.dataclass(frozen=True)
class ThrottleConfig:
    engage_rate: float = 0.25  # bad share of the window that engages the throttle
    release_rate: float = 0.10  # bad share under which it is released (<= engage_rate)
    min_results: int = 20  # outcomes the window needs before it engages
    window_seconds: int = 3600  # outcomes older than this are forgotten
    window_results: int = 200  # and only the newest this many count
    min_bad_owners: int = 2  # owners whose hosts the bad results come from, at least

    def __post_init__(self) -> None:
        if not 0 <= self.release_rate <= self.engage_rate <= 1 or self.engage_rate == 0:
            raise ValueError("need 0 <= throttle_release_rate <= throttle_engage_rate <= 1")
        if self.min_results < 1 or self.window_seconds < 1:
            raise ValueError("throttle_min_results and throttle_window_seconds must be >= 1")
        if self.window_results < self.min_results:
            raise ValueError("throttle_window_results must be >= throttle_min_results")
        if self.min_bad_owners < 1:
            raise ValueError("throttle_min_bad_owners must be >= 1")


@dataclasses.dataclass(frozen=True)
class Window:
    bad: int
    total: int
    bad_owners: int  # distinct owners of the hosts whose results were bad

    @property
    def rate(self) -> float:
        return self.bad / self.total if self.total else 0.0


class Change(StrEnum):
    ENGAGE = "engage"
    RELEASE = "release"


def decide(engaged: bool, window: Window, config: ThrottleConfig) -> Change | None:
    """The change the window calls for, or None to stay as it is."""
    enough = window.total >= config.min_results
    if not engaged:
        several = window.bad_owners >= config.min_bad_owners
        return Change.ENGAGE if enough and several and window.rate >= config.engage_rate else None
    if not enough or window.rate < config.release_rate:
        return Change.RELEASE
    return None


def reason(change: Change, window: Window, config: ThrottleConfig) -> str:
    """Why, in words (the message's `reason`, shown by the collector and the dispatcher)."""
    share = f"{window.bad} of the last {window.total} results bad ({window.rate:.0%})"
    if window.bad:
        share += f" from {window.bad_owners} owner{'s' if window.bad_owners != 1 else ''}"
    if change == Change.ENGAGE:
        return f"{share}, at or above {config.engage_rate:.0%}"
    if window.total < config.min_results:
        return f"{share}: fewer than {config.min_results} in {config.window_seconds} s to judge"
    return f"{share}, below {config.release_rate:.0%}"


def refusal_outcome(reason: str, trust: str | None) -> bool | None:
    """An authenticated lease holder's refused result: True (bad) or None (not counted)."""
    if reason not in BAD_REFUSALS or trust == Trust.CORE:
        return None
    return True


Outcome = tuple[bool, str]  # (bad, the host's owner)


def verdict_outcomes(msg: TaskVerifiedV1, owners: Mapping[str, str]) -> dict[str, Outcome]:
    """The outcomes of an accepted task.verified, by lease id. `owners` names the owner
    of each of the task's results by lease id (an odd one out's is not in the message).

    An odd one out counts whatever its trust (a core host that the tie-break outvoted built
    something wrong too); agreeing core results do not count."""
    outcomes = {
        str(a["lease_id"]): (False, str(a["owner"]))
        for a in msg.agreeing
        if a.get("trust") != Trust.CORE
    }
    for odd in msg.odd_ones_out:
        lease_id = str(odd["lease_id"])
        outcomes[lease_id] = (True, owners.get(lease_id, f"host {odd['host']}"))
    return outcomes
