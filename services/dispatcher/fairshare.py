"""Priority classes and fair share across owners: pure policy, no I/O.

Classes come from the request's existing `priority` (0..1000, default 100; no new schema
field): 500 and above is interactive, 100..499 normal, below 100 mass rebuild. A queued task
of a better class always goes before one of a worse class.

Within a class, the owner with the least decayed usage goes first (then, within an owner,
higher priority, then the oldest task). Usage is charged one unit per lease (a build's length
is not known when it is leased) and halves every `half_life` seconds (OBS uses 4 h). So an
owner who queued 5,000 builds and has been running them has a large usage, and another
owner's single build, whose owner used nothing lately, is next for the first free slot.

Usage is kept as a key, log2 of the sum over charges of units * 2^(t / half_life): every
owner's usage decays at the same rate, so ordering by the key is ordering by usage decayed to
any common moment, and a charge never needs the other owners' rows rewritten. The store adds
charges with the same formula in SQL (store.charge_many).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TypeVar

INTERACTIVE, NORMAL, MASS_REBUILD = 0, 1, 2
CLASS_NAMES = {INTERACTIVE: "interactive", NORMAL: "normal", MASS_REBUILD: "mass rebuild"}

T = TypeVar("T")


def priority_class(priority: int) -> int:
    if priority >= 500:
        return INTERACTIVE
    if priority >= 100:
        return NORMAL
    return MASS_REBUILD


def charge_term(now: float, units: float, half_life: float) -> float:
    """The key of `units` charged at `now` (seconds since the epoch)."""
    return now / half_life + math.log2(units)


def add_key(key: float | None, term: float) -> float:
    """log2(2^key + 2^term), without overflow."""
    if key is None:
        return term
    high, low = max(key, term), min(key, term)
    return high + math.log2(1 + 2 ** (low - high))


def usage_at(key: float | None, now: float, half_life: float) -> float:
    """The decayed usage a key stands for at `now`."""
    if key is None:
        return 0.0
    return 2 ** min(key - now / half_life, 1000.0)


Group = tuple[int, str]  # (priority class, owner)


def interleave(
    candidates: Mapping[Group, Sequence[T]],
    usage: Mapping[Group, float],
    slots: int,
) -> list[T]:
    """Up to `slots` candidates, taking each next one from the group whose usage is least,
    charging it one unit per pick (so one pull spreads over owners as leases would).

    `candidates` maps a group (class, owner) to its tasks in order; groups of a lower class
    always go first (the group's first element is the class), ties by the group's order in
    `candidates` (the caller passes them oldest-first).
    """
    spent = {group: usage.get(group, 0.0) for group in candidates}
    position = {group: 0 for group in candidates}
    order = {group: i for i, group in enumerate(candidates)}
    picked: list[T] = []
    while len(picked) < slots:
        open_groups = [g for g in candidates if position[g] < len(candidates[g])]
        if not open_groups:
            break
        group = min(open_groups, key=lambda g: (g[0], spent[g], order[g]))
        picked.append(candidates[group][position[group]])
        position[group] += 1
        spent[group] += 1.0
    return picked
