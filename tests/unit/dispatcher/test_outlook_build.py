"""matching.build_outlook, lease_frees_at, batch_end: the outlook the live dispatcher and the
mass-rebuild simulation both decide with."""

from __future__ import annotations

from services.dispatcher import matching
from services.dispatcher.matching import HostSlots


def test_a_lease_frees_at_its_estimated_end_or_if_overdue_at_its_expiry() -> None:
    # 100 s of work at speed 2, leased at 0: ends at 50.
    assert matching.lease_frees_at(10.0, 0.0, 100.0, 2.0, 3600.0) == 50.0
    assert matching.lease_frees_at(10.0, 0.0, 100.0, 2.0, 30.0) == 30.0  # expiry caps it
    assert matching.lease_frees_at(60.0, 0.0, 100.0, 2.0, 3600.0) == 3600.0  # overdue
    assert matching.lease_frees_at(10.0, 0.0, None, 2.0, 3600.0) == 3600.0  # unknown work
    assert matching.lease_frees_at(10.0, 0.0, 100.0, 2.0, 3600.0, finished=True) == 10.0


def test_the_outlook_has_one_entry_per_slot_soonest_first_and_each_entrys_host() -> None:
    hosts = [HostSlots(3.0, 1, [70.0, 40.0]), HostSlots(2.0, 0, [20.0])]
    built = matching.build_outlook(10.0, hosts, 500.0, work_pad=1.5, heavy_share=0.25)
    assert built is not None
    outlook, owners = built
    assert list(outlook.faster) == [(3.0, 10.0), (3.0, 40.0), (3.0, 70.0), (2.0, 20.0)]
    assert owners == [0, 0, 0, 1]
    assert (outlook.fastest, outlook.deadline, outlook.work_pad) == (3.0, 500.0, 1.5)
    assert matching.build_outlook(10.0, [HostSlots(0.0, 1)], 500.0) is None


def test_the_batch_end_is_the_latest_queued_or_running_path_over_every_arch() -> None:
    # A queued path of 300 s at speed 2 ends at now + 150; a running task ending at 400
    # with 100 s after it at speed 1 at 500; one overdue (ended at 5) counts from now.
    assert matching.batch_end(100.0, [(300.0, 2.0)]) == 250.0
    assert matching.batch_end(100.0, [(300.0, 2.0)], [(400.0, 100.0, 1.0)]) == 500.0
    assert matching.batch_end(100.0, [], [(5.0, 50.0, 1.0)]) == 150.0
    assert matching.batch_end(100.0, []) == 100.0


def test_a_faster_slot_free_only_after_the_decline_bound_is_not_waited_for() -> None:
    slow = matching.HostView("slow", "core", frozenset({"x86_64"}), frozenset(), 1, speed=1.0)
    task = matching.TaskView(1, "x86_64", None, False, work=400.0, path=400.0)
    # A host twice as fast frees in 72 s: it would end the task 128 s sooner.
    outlook = matching.Outlook(now=0.0, deadline=100.0, fastest=2.0, faster=[(2.0, 72.0)])
    assert matching.declines(slow, task, outlook)
    # The task's decline bound runs out in 60 s: waiting would be in vain.
    assert not matching.declines(slow, task, outlook, until=60.0)
    assert matching.declines(slow, task, outlook, until=73.0)
