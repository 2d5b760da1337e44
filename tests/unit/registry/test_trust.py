"""Tests for services.registry.trust: promotion, demotion, quarantine, admin-only core."""

from __future__ import annotations

import pytest

from services.registry.trust import (
    Evidence,
    HostTrust,
    Trust,
    TrustConfig,
    record_confirmed,
    record_odd_one_out,
    record_unconfirmed,
    set_by_admin,
)

CFG = TrustConfig()
EV = Evidence("task-1", "sha256:abc", ("other-host",))


def confirm(state: HostTrust, n: int, cfg: TrustConfig = CFG) -> tuple[HostTrust, list]:
    moves = []
    for _ in range(n):
        state, move = record_confirmed(state, EV, cfg)
        if move:
            moves.append(move)
    return state, moves


def test_new_host_is_promoted_after_n_confirmed_results_with_reason_and_evidence() -> None:
    state = HostTrust("v1", "alice")
    state, moves = confirm(state, CFG.promote_after - 1)
    assert state.level == Trust.UNTRUSTED and moves == []
    state, moves = confirm(state, 1)
    assert state.level == Trust.TRUSTED
    [move] = moves
    assert (move.old, move.new, move.by) == (Trust.UNTRUSTED, Trust.TRUSTED, "policy")
    assert "10 consecutive" in move.reason and move.evidence == EV
    assert state.consecutive_confirmed == 0  # the record restarts at the new level


def test_promotion_threshold_is_configurable() -> None:
    state, moves = confirm(HostTrust("v1", "alice"), 3, TrustConfig(promote_after=3))
    assert state.level == Trust.TRUSTED and len(moves) == 1


def test_unconfirmed_results_count_but_do_not_promote() -> None:
    state = HostTrust("v1", "alice")
    for _ in range(50):
        state = record_unconfirmed(state)
    assert state.level == Trust.UNTRUSTED and state.total_results == 50


def test_confirmation_needs_the_confirming_hosts() -> None:
    with pytest.raises(ValueError):
        record_confirmed(HostTrust("v1", "alice"), Evidence("t", "d"), CFG)


def test_trusted_odd_one_out_drops_to_untrusted_then_quarantined_on_a_repeat() -> None:
    state = HostTrust("t1", "bob", Trust.TRUSTED, total_results=500)
    state, move = record_odd_one_out(state, EV, CFG)
    assert (move.old, move.new) == (Trust.TRUSTED, Trust.UNTRUSTED)
    assert state.total_results == 0 and state.odd_one_out == 1 and move.evidence == EV
    state, _ = confirm(state, CFG.promote_after)
    assert state.level == Trust.TRUSTED
    state, move = record_odd_one_out(state, EV, CFG)
    assert (move.old, move.new) == (Trust.TRUSTED, Trust.QUARANTINED)


def test_untrusted_odd_one_out_is_quarantined() -> None:
    state, move = record_odd_one_out(HostTrust("v1", "eve"), EV, CFG)
    assert state.level == Trust.QUARANTINED and move.new == Trust.QUARANTINED


def test_demotion_targets_are_configurable_and_bounded() -> None:
    cfg = TrustConfig(demote_trusted_to=Trust.QUARANTINED)
    state, _ = record_odd_one_out(HostTrust("t1", "bob", Trust.TRUSTED), EV, cfg)
    assert state.level == Trust.QUARANTINED
    with pytest.raises(ValueError):
        TrustConfig(demote_trusted_to=Trust.CORE)


def test_core_is_never_reached_or_left_by_the_policy() -> None:
    state = HostTrust("t1", "bob", Trust.TRUSTED)
    state, moves = confirm(state, 1000)
    assert state.level == Trust.TRUSTED and moves == []
    core = HostTrust("c1", "fedora", Trust.CORE)
    after, move = record_odd_one_out(core, EV, CFG)
    assert after.level == Trust.CORE and move.old == move.new == Trust.CORE


def test_admin_sets_core_with_its_name_and_reason() -> None:
    state, move = set_by_admin(HostTrust("t1", "bob", Trust.TRUSTED), Trust.CORE, "admin", "ops")
    assert state.level == Trust.CORE and (move.by, move.reason) == ("admin", "ops")
    with pytest.raises(ValueError):
        set_by_admin(state, Trust.TRUSTED, "", "no admin")
