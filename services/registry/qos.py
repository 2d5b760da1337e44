"""Quality of service of a builder host, from its task outcomes, verdicts and uptime (pure).

Figures (every rate is smoothed towards 1/2 so one early result decides nothing):

- success rate      = (succeeded + 1) / (finished + 2), over the leases it finished;
- valid-result rate = (valid + 1) / (valid + invalid + 2); valid: it agreed with an accepted
  result (task.verified `agreeing`); invalid: it was the odd one out of a settled
  disagreement, or the verifier refused its results for a reason of its own (task.mismatch);
- speed factor      = exp(EWMA of ln(reference / duration)), ratio clamped to [1/10, 10],
  where `duration` is the lease's wall time (the dispatcher's lease to the host's finish, as
  the registry saw them: a host cannot make itself look fast by reporting a small number) and
  `reference` the median of the same package and arch's recent successful builds on other
  hosts; 1 is the farm's pace, 2 twice as fast. No reference, no sample;
- availability      = (online + prior/2) / (observed + prior) over the last `window` seconds
  (observed from enrolment at the earliest), prior = `prior_seconds`;
- MTBF              = online / failures, a failure being a fall silent (online -> offline on
  heartbeat timeout); None without failures. The score uses a smoothed estimate,
  (online + prior) / (failures + 1), as the chance a build of `build_seconds` runs without
  the host failing: reliability = exp(-build_seconds / MTBF estimate).

Score (0..1), the one figure the dispatcher reads (host.status `qos_score`): the weighted
geometric mean of valid-result rate, success rate, reliability, availability and
speed / (1 + speed) (the farm's pace is 1/2), each floored at 0.01. Geometric, so a host bad
at any one thing ranks low whatever else it does well. A new host scores about 0.48.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import statistics
from collections.abc import Sequence

# How much each figure counts in the score (they sum to 1). Wrong results matter most: they
# cost a replica and the host's owner its standing.
WEIGHTS = {
    "valid_result_rate": 0.35,
    "success_rate": 0.20,
    "reliability": 0.15,
    "availability": 0.15,
    "speed": 0.15,
}
MIN_RATIO, MAX_RATIO = 0.1, 10.0  # one odd build moves the speed factor only so far
FLOOR = 0.01


@dataclasses.dataclass(frozen=True)
class QosConfig:
    # Weight of the newest speed sample in the smoothed (exponentially weighted) average.
    speed_alpha: float = 0.2
    # Builds of the same package and arch on other hosts the speed reference is the median of.
    reference_builds: int = 20
    window_seconds: float = 7 * 86400.0  # availability and MTBF look this far back
    prior_seconds: float = 3600.0  # a new host's record counts as this long half available
    build_seconds: float = 3600.0  # the build length reliability is the survival chance of
    refresh_seconds: float = 600.0  # a host's score is recomputed at least this often

    def __post_init__(self) -> None:
        if not 0 < self.speed_alpha <= 1:
            raise ValueError("speed_alpha must be in (0, 1]")
        if self.reference_builds < 1:
            raise ValueError("reference_builds must be at least 1")
        for name in ("window_seconds", "prior_seconds", "build_seconds", "refresh_seconds"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")


@dataclasses.dataclass(frozen=True)
class Counters:
    """What the registry counts per host (table host_qos)."""

    finished: int = 0
    succeeded: int = 0
    valid: int = 0
    invalid: int = 0
    speed_log: float = 0.0  # EWMA of ln(reference / duration); 0 = the farm's pace
    speed_samples: int = 0


@dataclasses.dataclass(frozen=True)
class Uptime:
    online_seconds: float
    observed_seconds: float
    failures: int


@dataclasses.dataclass(frozen=True)
class Qos:
    success_rate: float
    valid_result_rate: float
    speed_factor: float
    availability: float
    mtbf_seconds: float | None
    reliability: float
    score: float

    def view(self) -> dict[str, float | None]:
        return dataclasses.asdict(self)


def smoothed_rate(good: int, total: int) -> float:
    return (good + 1) / (total + 2)


def speed_sample(duration: float, reference: Sequence[float]) -> float | None:
    """ln(reference / duration) for one build, or None when there is nothing to compare."""
    usable = [d for d in reference if d > 0]
    if not usable or duration <= 0:
        return None
    ratio = statistics.median(usable) / duration
    return math.log(min(MAX_RATIO, max(MIN_RATIO, ratio)))


def add_speed_sample(counters: Counters, sample: float, config: QosConfig) -> Counters:
    # The first sample is taken whole: smoothing it towards 0 would hide a slow host for long.
    alpha = 1.0 if counters.speed_samples == 0 else config.speed_alpha
    return dataclasses.replace(
        counters,
        speed_log=(1 - alpha) * counters.speed_log + alpha * sample,
        speed_samples=counters.speed_samples + 1,
    )


def uptime(
    changes: Sequence[tuple[datetime.datetime, str, str, str]],
    state_at_start: str,
    start: datetime.datetime,
    end: datetime.datetime,
) -> Uptime:
    """Online time and failures in [start, end] from state changes (at, old, new, reason),
    oldest first, all after `start`; `state_at_start` is the state the window opens in."""
    online = 0.0
    failures = 0
    state, since = state_at_start, start
    for at, _old, new, reason in changes:
        at = min(max(at, start), end)
        if state == "online":
            online += (at - since).total_seconds()
            if new == "offline" and reason == "silent":
                failures += 1
        state, since = new, at
    if state == "online":
        online += (end - since).total_seconds()
    return Uptime(max(0.0, online), max(0.0, (end - start).total_seconds()), failures)


def compute(counters: Counters, up: Uptime, config: QosConfig) -> Qos:
    success = smoothed_rate(counters.succeeded, counters.finished)
    valid = smoothed_rate(counters.valid, counters.valid + counters.invalid)
    prior = config.prior_seconds
    availability = (up.online_seconds + prior / 2) / (up.observed_seconds + prior)
    mtbf = up.online_seconds / up.failures if up.failures else None
    mtbf_estimate = (up.online_seconds + prior) / (up.failures + 1)
    reliability = math.exp(-config.build_seconds / mtbf_estimate)
    speed = math.exp(counters.speed_log)
    parts = {
        "valid_result_rate": valid,
        "success_rate": success,
        "reliability": reliability,
        "availability": availability,
        "speed": speed / (1 + speed),
    }
    score = math.exp(sum(w * math.log(max(FLOOR, parts[k])) for k, w in WEIGHTS.items()))
    return Qos(
        success_rate=round(success, 4),
        valid_result_rate=round(valid, 4),
        speed_factor=round(speed, 4),
        availability=round(min(1.0, availability), 4),
        mtbf_seconds=None if mtbf is None else round(mtbf, 1),
        reliability=round(reliability, 4),
        # Two decimals: the status is republished only when the score moves by 0.01 or more.
        score=round(min(1.0, score), 2),
    )
