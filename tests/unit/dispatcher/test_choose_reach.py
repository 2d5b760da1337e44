"""handlers.choose looks only at the owners the fair-share interleave can reach (the first
`slots` groups with an eligible task, and core claims anywhere) and chooses exactly what it
chose when it looked at every group."""

from __future__ import annotations

import random
from types import SimpleNamespace
from typing import Any

from services.dispatcher import fairshare, handlers, matching

ARCHES = ("x86_64", "noarch", "aarch64")
TRUSTS = ("core", "trusted", "untrusted", "quarantined")


def scheduling(rng: random.Random) -> Any:
    ctx = SimpleNamespace(
        config=SimpleNamespace(dispatcher=SimpleNamespace(fair_share_half_life=3600.0))
    )
    made = handlers.Pass(ctx)  # type: ignore[arg-type]
    for owner in rng.sample([f"o{i}" for i in range(30)], rng.randrange(0, 6)):
        made.charge(owner, rng.randrange(1, 5))
    return made


def every_group(
    host: matching.HostView,
    pool: dict[tuple[int, str], list[matching.TaskView]],
    keys: dict[str, float],
    made: handlers.Pass,
) -> list[matching.TaskView]:
    """choose as it was: every group looked at (claims first, then the interleave)."""
    order, effective = handlers.group_order(pool, keys, made.terms)
    claimable = {id(t) for t in matching.core_claims(host, [t for g in order for t in pool[g]])}
    claims: list[matching.TaskView] = []
    groups: dict[tuple[int, str], list[matching.TaskView]] = {}
    for group in order:
        for task in pool[group]:
            if len(claims) >= host.free_slots:
                break
            claim = id(task) in claimable
            if not claim and len(groups.get(group, ())) >= host.free_slots:
                continue
            if not matching.can_build(host, task):
                continue
            (claims if claim else groups.setdefault(group, [])).append(task)
    usage = {g: fairshare.usage_at(effective[g], made.now, made.half_life) for g in groups}
    return claims + fairshare.interleave(groups, usage, host.free_slots - len(claims))


def test_choose_picks_what_looking_at_every_group_picks() -> None:
    rng = random.Random(7)
    for _ in range(400):
        owners = [f"o{i}" for i in range(rng.randrange(1, 30))]
        pool: dict[tuple[int, str], list[matching.TaskView]] = {}
        n = 0
        for owner in owners:
            klass = rng.choice((0, 1, 1, 2))
            for _ in range(rng.randrange(1, 8)):
                n += 1
                pool.setdefault((klass, owner), []).append(
                    matching.TaskView(
                        n,
                        rng.choice(ARCHES),
                        None,
                        scratch=rng.random() < 0.5,
                        owner=owner,
                        klass=klass,
                        min_trust=rng.choice((None, None, "trusted", "core")),
                        exclude_hosts=frozenset({"h"} if rng.random() < 0.1 else ()),
                    )
                )
        made = scheduling(rng)
        # Usage keys near now (fairshare.charge_term), so owners' usages differ.
        now_key = made.now / made.half_life
        keys = {o: now_key + rng.uniform(-3.0, 3.0) for o in owners if rng.random() < 0.6}
        host = matching.HostView(
            "h",
            rng.choice(TRUSTS),
            frozenset(rng.sample(ARCHES, rng.randrange(1, 4))),
            frozenset({"f40"}),
            free_slots=rng.randrange(1, 9),
        )
        expected = every_group(
            matching.HostView(**vars(host)), {g: list(t) for g, t in pool.items()}, keys, made
        )
        chosen = handlers.choose(host, pool, keys, made)
        assert [t.task_id for t in chosen] == [t.task_id for t in expected]
