"""The throttle in matching (can_build, why_waiting) and who may announce it."""

from __future__ import annotations

import dataclasses

import pytest

from services.common import principals
from services.dispatcher.matching import (
    HostView,
    TaskView,
    Throttle,
    can_build,
    why_waiting,
)

ENGAGED = Throttle(engaged=True, bad_rate=0.3, results=40)
WAITING = "throttled (bad-result rate 30% over the last 40 results): only core hosts build"


def host(name: str, trust: str, free: int = 1, owner: str = "alice") -> HostView:
    return HostView(name, trust, frozenset({"noarch", "x86_64"}), frozenset({"f40"}), free, owner)


TASK = TaskView(1, "x86_64", None, scratch=True)
CORE = host("core-1", "core", owner="fedora")
VOLUNTEERS = [host("t1", "trusted"), host("u1", "untrusted", owner="bob")]


@pytest.mark.parametrize("volunteer", VOLUNTEERS, ids=lambda h: h.trust)
def test_engaged_throttle_keeps_new_work_off_non_core_hosts(volunteer) -> None:
    assert can_build(volunteer, TASK)
    assert can_build(volunteer, TASK, Throttle())  # released: as before
    assert not can_build(volunteer, TASK, ENGAGED)
    assert can_build(CORE, TASK, ENGAGED)


@pytest.mark.parametrize(
    ("hosts", "throttle", "reason"),
    [
        # Only volunteers free: the throttle is why.
        (VOLUNTEERS, ENGAGED, WAITING),
        # A core host too, but busy: still the throttle (volunteers could have built it).
        ([*VOLUNTEERS, dataclasses.replace(CORE, free_slots=0)], ENGAGED, WAITING),
        # A free core host: the task only waits its turn.
        (
            [*VOLUNTEERS, CORE],
            ENGAGED,
            "waiting its turn (priority class, fair share): 1 eligible hosts free",
        ),
        # Released: as before.
        (
            VOLUNTEERS,
            Throttle(),
            "waiting its turn (priority class, fair share): 2 eligible hosts free",
        ),
        # Rules before the throttle still come first.
        ([host("a", "trusted")], ENGAGED, WAITING),
        ([], ENGAGED, "no online x86_64 host"),
    ],
)
def test_why_waiting_names_the_throttle(hosts, throttle, reason) -> None:
    assert why_waiting(TASK, hosts, throttle) == reason


def test_the_reason_without_a_count_from_an_older_verifier() -> None:
    assert Throttle(engaged=True, bad_rate=0.5).waiting == (
        "throttled (bad-result rate 50%): only core hosts build"
    )


@pytest.mark.parametrize("topic", ["skyline.throttle.engaged", "skyline.throttle.released"])
def test_only_the_verifier_may_announce_the_throttle(topic) -> None:
    body = {"bad_rate": 0.5, "threshold": 0.25, "window_seconds": 3600}
    assert principals.check_sender(topic, topic, "skyline-verifier", body) == "skyline-verifier"
    for user in ("skyline-dispatcher", "skyline-registry", "host-b1", "alice", None):
        with pytest.raises(principals.Refused):
            principals.check_sender(topic, topic, user, body)
    with pytest.raises(principals.Refused):  # nor on another routing key
        principals.check_sender(topic, f"{topic}.x", "skyline-verifier", body)
