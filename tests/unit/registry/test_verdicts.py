"""What a task.verified means for each named host's trust (services/registry/verdicts.py)."""

from __future__ import annotations

from services.registry.trust import Evidence, HostTrust, Trust, TrustConfig
from services.registry.verdicts import Kind, Outcome, apply, outcomes

KEY = "k" * 64


def agreed(host: str, owner: str) -> dict[str, str]:
    return {"host": host, "owner": owner, "trust": "untrusted", "lease_id": "0" * 32}


def odd(host: str, key: str = "x" * 64) -> dict[str, str]:
    return {"host": host, "lease_id": "1" * 32, "comparison_key": key, "detail": "differs"}


def test_hosts_of_other_owners_confirm_each_other_not_their_own() -> None:
    found = outcomes(
        "7", KEY, [agreed("b", "bob"), agreed("a1", "alice"), agreed("a2", "alice")], []
    )
    assert found == [
        Outcome("a1", Kind.CONFIRMED, Evidence("7", KEY, ("b",))),
        Outcome("a2", Kind.CONFIRMED, Evidence("7", KEY, ("b",))),
        Outcome("b", Kind.CONFIRMED, Evidence("7", KEY, ("a1", "a2"))),
    ]


def test_a_single_owners_acceptance_confirms_nobody() -> None:
    found = outcomes("7", KEY, [agreed("a1", "alice"), agreed("a2", "alice")], [])
    assert [(o.host, o.kind) for o in found] == [("a1", Kind.UNCONFIRMED), ("a2", Kind.UNCONFIRMED)]


def test_odd_ones_out_carry_the_winners_and_their_own_key() -> None:
    found = outcomes("7", KEY, [agreed("core-1", "fedora"), agreed("b", "bob")], [odd("a")])
    assert found[0] == Outcome(
        "a", Kind.ODD_ONE_OUT, Evidence("7", "x" * 64, ("core-1", "b"), "differs")
    )
    assert [(o.host, o.kind) for o in found[1:]] == [
        ("b", Kind.CONFIRMED),
        ("core-1", Kind.CONFIRMED),
    ]


def test_a_host_named_twice_is_graded_once_and_a_loss_wins() -> None:
    found = outcomes("7", KEY, [agreed("a", "alice"), agreed("a", "alice")], [odd("a")])
    assert [(o.host, o.kind) for o in found] == [("a", Kind.ODD_ONE_OUT)]


def test_core_hosts_are_not_graded_by_peers() -> None:
    core = HostTrust("c", "fedora", Trust.CORE)
    config = TrustConfig(promote_after=1)
    for kind in (Kind.CONFIRMED, Kind.UNCONFIRMED):
        state, transition = apply(core, Outcome("c", kind, Evidence("7", KEY, ("b",))), config)
        assert (state, transition) == (core, None)
    state, transition = apply(core, Outcome("c", Kind.ODD_ONE_OUT, Evidence("7", KEY)), config)
    assert state == core
    assert transition is not None and transition.old == transition.new == Trust.CORE


def test_apply_promotes_counts_and_demotes() -> None:
    config = TrustConfig(promote_after=2)
    state = HostTrust("a", "alice")
    confirmed = Outcome("a", Kind.CONFIRMED, Evidence("7", KEY, ("b",)))
    state, transition = apply(state, confirmed, config)
    assert transition is None and state.consecutive_confirmed == 1
    state, transition = apply(state, Outcome("a", Kind.UNCONFIRMED, Evidence("8", KEY)), config)
    assert transition is None and (state.consecutive_confirmed, state.total_results) == (1, 2)
    state, transition = apply(state, confirmed, config)
    assert transition is not None and state.level == Trust.TRUSTED
    state, transition = apply(state, Outcome("a", Kind.ODD_ONE_OUT, Evidence("9", KEY)), config)
    assert transition is not None and state.level == Trust.UNTRUSTED
