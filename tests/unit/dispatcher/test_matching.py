"""Tests for services.dispatcher.matching: which host may build which task."""

from __future__ import annotations

import pytest

from services.dispatcher.matching import (
    HostView,
    TaskView,
    assign,
    can_build,
    claims,
    core_claims,
    free_slots,
    pick_host,
)


def host(
    name: str = "h1",
    *,
    trust: str = "core",
    arches: tuple[str, ...] = ("noarch", "x86_64"),
    releases: tuple[str, ...] = ("f40",),
    slots: int = 1,
    owner: str = "infra",
) -> HostView:
    return HostView(name, trust, frozenset(arches), frozenset(releases), slots, owner=owner)


def task(
    task_id: int = 1,
    *,
    arch: str = "x86_64",
    release: str | None = None,
    scratch: bool = False,
    failed_hosts: tuple[str, ...] = (),
    failed_owners: tuple[str, ...] = (),
    purpose: str = "build",
    min_trust: str | None = None,
    exclude_hosts: tuple[str, ...] = (),
    exclude_owners: tuple[str, ...] = (),
) -> TaskView:
    return TaskView(
        task_id,
        arch,
        release,
        scratch,
        failed_hosts=frozenset(failed_hosts),
        failed_owners=frozenset(failed_owners),
        purpose=purpose,
        min_trust=min_trust,
        exclude_hosts=frozenset(exclude_hosts),
        exclude_owners=frozenset(exclude_owners),
    )


@pytest.mark.parametrize(
    ("arches", "arch", "ok"),
    [
        (("x86_64",), "x86_64", True),
        (("x86_64",), "aarch64", False),
        (("x86_64",), "noarch", False),  # noarch only goes to hosts that advertise it
        (("noarch", "aarch64"), "noarch", True),
        (("noarch",), "x86_64", False),
        (("noarch", "aarch64", "x86_64"), "aarch64", True),
    ],
)
def test_arch_matching(arches: tuple[str, ...], arch: str, ok: bool) -> None:
    assert can_build(host(arches=arches), task(arch=arch)) is ok


@pytest.mark.parametrize(
    ("release", "ok"), [(None, True), ("f40", True), ("f41", False), ("", False)]
)
def test_release_matching(release: str | None, ok: bool) -> None:
    assert can_build(host(releases=("f40", "el9")), task(release=release)) is ok


def test_no_release_requested_matches_a_host_without_releases() -> None:
    assert can_build(host(releases=()), task(release=None))
    assert not can_build(host(releases=()), task(release="f40"))


@pytest.mark.parametrize(
    ("trust", "scratch", "ok"),
    [
        ("core", False, True),
        ("core", True, True),
        # A volunteer's result counts only once the verifier found independent agreement.
        ("trusted", False, True),
        ("trusted", True, True),
        ("untrusted", False, True),
        ("untrusted", True, True),
        ("quarantined", False, False),
        ("quarantined", True, False),
        ("wizard", True, False),  # a level unknown here: never trusted with a lease
    ],
)
def test_any_host_but_a_quarantined_one_may_build(trust: str, scratch: bool, ok: bool) -> None:
    assert can_build(host(trust=trust), task(scratch=scratch)) is ok


# Replicas and tie-breaks (task.replicate): (host trust, host name, host owner) against
# (min_trust, excluded hosts, excluded owners).
@pytest.mark.parametrize(
    ("trust", "name", "owner", "min_trust", "exclude_hosts", "exclude_owners", "ok"),
    [
        ("untrusted", "b1", "bob", "untrusted", ("a1",), ("alice",), True),
        ("untrusted", "a2", "alice", "untrusted", ("a1",), ("alice",), False),  # same owner
        ("untrusted", "a1", "alice", "untrusted", ("a1",), (), False),  # same host
        ("core", "a1", "infra", None, ("a1",), (), False),  # excluded host, even core
        ("untrusted", "b1", "bob", "trusted", ("a1",), ("alice",), False),
        ("trusted", "b1", "bob", "trusted", ("a1",), ("alice",), True),
        ("core", "c1", "infra", "trusted", ("a1",), ("alice",), True),
        ("trusted", "b1", "bob", "core", ("a1",), ("alice",), False),
        ("core", "c1", "infra", "core", ("a1", "b1"), ("alice", "bob"), True),
        ("core", "c1", "infra", "core", (), ("infra",), False),  # excluded owner, even core
        ("quarantined", "b1", "bob", None, (), (), False),
        ("quarantined", "b1", "bob", "untrusted", (), (), False),
        ("untrusted", "b1", "bob", None, (), (), True),
    ],
)
def test_replica_eligibility(
    trust: str,
    name: str,
    owner: str,
    min_trust: str | None,
    exclude_hosts: tuple[str, ...],
    exclude_owners: tuple[str, ...],
    ok: bool,
) -> None:
    for scratch in (False, True):
        replica = task(
            scratch=scratch,
            purpose="replica",
            min_trust=min_trust,
            exclude_hosts=exclude_hosts,
            exclude_owners=exclude_owners,
        )
        assert can_build(host(name, trust=trust, owner=owner), replica) is ok


@pytest.mark.parametrize(
    ("scratch", "purpose", "expected"),
    [
        (False, "build", "core"),  # an official build's own lease: a free core host first
        (True, "build", "volunteer"),  # scratch: the most free slots
        (False, "replica", "volunteer"),  # a replica's constraints say who; no preference
        (False, "tiebreak", "volunteer"),
    ],
)
def test_official_builds_prefer_a_free_core_host(scratch: bool, purpose: str, expected: str):
    hosts = [host("volunteer", trust="untrusted", owner="bob", slots=8), host("core", slots=1)]
    for task_id in range(1, 10):
        picked = pick_host(task(task_id, scratch=scratch, purpose=purpose), hosts)
        assert picked.host == expected


def test_official_builds_go_to_volunteers_when_no_core_host_is_free() -> None:
    hosts = [host("core", slots=0), host("volunteer", trust="untrusted", owner="bob")]
    assert pick_host(task(), hosts).host == "volunteer"
    arm_core = host("core", arches=("aarch64",), slots=4)  # a core host that cannot build it
    assert pick_host(task(), [arm_core, hosts[1]]).host == "volunteer"


@pytest.mark.parametrize("slots", [0, -1])
def test_no_free_slot_no_build(slots: int) -> None:
    assert not can_build(host(slots=slots), task())
    assert pick_host(task(), [host(slots=slots)]) is None


def test_pick_host_prefers_the_most_free_slots() -> None:
    hosts = [host("a", slots=1), host("b", slots=3), host("c", slots=2)]
    for task_id in range(1, 20):
        assert pick_host(task(task_id), hosts).host == "b"


def test_pick_host_skips_ineligible_hosts() -> None:
    hosts = [host("big", arches=("aarch64",), slots=10), host("small", slots=1)]
    assert pick_host(task(arch="x86_64"), hosts).host == "small"
    assert pick_host(task(arch="s390x"), hosts) is None
    assert pick_host(task(), []) is None


def test_pick_host_ties_are_deterministic_and_spread() -> None:
    hosts = [host(f"h{i}", slots=2) for i in range(4)]
    picks = [pick_host(task(task_id), hosts).host for task_id in range(1, 101)]
    # Same inputs, same answer (no randomness; order of the host list does not matter).
    assert picks == [pick_host(task(t), list(reversed(hosts))).host for t in range(1, 101)]
    # ...but equal hosts share the work rather than one taking every task.
    assert len(set(picks)) == 4
    assert max(picks.count(h.host) for h in hosts) < 60


def test_assign_uses_one_slot_per_lease() -> None:
    only = host(slots=1)
    leases = assign([task(1), task(2)], [only])
    assert [(t.task_id, h.host) for t, h in leases] == [(1, "h1")]
    assert only.free_slots == 0


def test_assign_fills_every_slot_and_no_more() -> None:
    hosts = [host("a", slots=2), host("b", slots=1)]
    leases = assign([task(i) for i in range(1, 6)], hosts)
    assert len(leases) == 3
    per_host = {h: sum(1 for _, x in leases if x.host == h) for h in ("a", "b")}
    assert per_host == {"a": 2, "b": 1}
    assert [h.free_slots for h in hosts] == [0, 0]


def test_assign_respects_priority_order() -> None:
    # Tasks arrive in priority order: with one slot, the first one wins, whatever its id.
    tasks = [task(9), task(1), task(5)]
    leases = assign(tasks, [host(slots=2)])
    assert [t.task_id for t, _ in leases] == [9, 1]


def test_assign_skips_a_task_nobody_can_build_and_goes_on() -> None:
    tasks = [task(1, arch="s390x"), task(2, scratch=False), task(3, arch="noarch", scratch=True)]
    hosts = [host("core", slots=1), host("volunteer", trust="untrusted", slots=1)]
    leases = assign(tasks, hosts)
    assert [(t.task_id, h.host) for t, h in leases] == [(2, "core"), (3, "volunteer")]


def test_assign_leaves_a_replica_queued_when_no_host_meets_its_constraints() -> None:
    hosts = [host("b1", trust="trusted", owner="bob", slots=5)]
    needs_core = task(1, purpose="tiebreak", min_trust="core", exclude_owners=("alice",))
    plain = task(2, scratch=True)
    assert [(t.task_id, h.host) for t, h in assign([needs_core, plain], hosts)] == [(2, "b1")]
    assert hosts[0].free_slots == 4


def test_assign_is_deterministic() -> None:
    def run() -> list[tuple[int, str]]:
        hosts = [host(f"h{i}", slots=2) for i in range(3)]
        return [(t.task_id, h.host) for t, h in assign([task(i) for i in range(1, 7)], hosts)]

    assert run() == run()


def test_a_failed_task_goes_to_neither_that_host_nor_its_owner() -> None:
    failed = task(scratch=True, failed_hosts=("a1",), failed_owners=("alice",))
    alices = [host("a1", owner="alice", slots=9), host("a2", owner="alice", slots=9)]
    assert not any(can_build(h, failed) for h in alices)
    bobs = host("b1", trust="untrusted", owner="bob")
    assert pick_host(failed, [*alices, bobs]) is bobs
    assert assign([failed], alices) == []


# Free slots: the dispatcher's own count


@pytest.mark.parametrize(
    ("advertised", "running", "max_slots", "open_leases", "free"),
    [
        (2, 0, 16, 0, 2),  # the host's own limit (free + running) below its CPUs
        (1024, 0, 4, 0, 4),  # a host claiming 1,024 slots gets what it enrolled
        (1024, 0, 4, 3, 1),
        (2, 0, 2, 2, 0),  # heartbeat sent before the two leases arrived: nothing given back
        (2, 0, 2, 1, 1),
        (0, 2, 2, 2, 0),  # both leases running
        (1, 1, 2, 1, 1),  # one finished and stored, one running
        (1, 1, 2, 2, 0),  # one finished but not yet stored: still counted as leased
        (0, 2, 4, 1, 0),  # the host says it is full (say, stopping): believed
        (3, 0, 4, 6, 0),  # never negative
        (0, 0, 1, 0, 0),
    ],
)
def test_free_slots(advertised: int, running: int, max_slots: int, open_leases: int, free: int):
    assert free_slots(advertised, running, max_slots, open_leases) == free


def test_a_heartbeat_never_gives_back_a_leased_slot() -> None:
    # Whatever a host says, its open leases plus what it may take never exceed its CPUs.
    for advertised in range(0, 20):
        for running in range(0, 20):
            for open_leases in range(0, 6):
                free = free_slots(advertised, running, 4, open_leases)
                assert 0 <= free <= advertised
                assert free + open_leases <= 4 or free == 0


def test_a_core_host_takes_official_builds_own_leases_first() -> None:
    official, scratch = task(1), task(2, scratch=True)
    replica = task(3, purpose="replica", min_trust="trusted")
    tasks = [scratch, replica, official]
    assert core_claims(host("core-1", trust="core"), tasks) == [official]
    # A volunteer claims nothing first: its official result would need a replica anyway.
    assert core_claims(host("vol-1", trust="trusted"), tasks) == []
    # One task at a time, as a pull asks (handlers.choose): the same answer.
    for trust in ("core", "trusted"):
        one = host("h", trust=trust)
        assert [t for t in tasks if claims(one, t)] == core_claims(one, tasks)
