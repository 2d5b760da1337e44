"""The real acceptance policy and trust transitions driven by a simulated host population.

Population: 2 core hosts (owner `fedora`), 24 honest volunteers of 16 owners and varied speed
(a host's share of all leases, replicas and tie-breaks included, follows its speed: core
hosts too have finite capacity), a package set with Zipf popularity of which 10%
are not reproducible (every honest build differs) and 5% critical. Two cheats: a new host that
tampers every build from its 3rd build, joining half-way, and a "sleeper" that behaves until
trusted and then tampers 5% of its builds. Every result goes through
`services.verifier.policy.decide`; replicas and tie-breaks are leased to eligible hosts until
it accepts or refuses; agreements and odd ones out go through `services.registry.trust`.
Official builds' first lease goes to a free core host (as the dispatcher does), else to a
volunteer; a freed core slot goes to a waiting official build before a scratch one
(--core-kept 0 models first come, first served instead). Risk signals: a package the host
never built, a critical package, an environment change (0.2% of builds), a build-time
outlier (2% of builds, honest or tampered alike: tampering is not assumed to be slower).

Prints, for the shipped defaults and for uniform 10% sampling side by side: extra builds spent
on replicas and tie-breaks (steady state = second half of the run, scratch and official), the
share of official builds whose first lease went to a core host, the
builds each cheat took to be caught, honest hosts flagged, tampered results accepted (official
without core/quorum agreement; scratch), and over --runs runs the share in which the sleeper
was caught within 1,000 of its builds.

    .venv/bin/python bench/trust_simulation.py [--builds N] [--runs N] [--seed N] [--core-kept N]
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import math
import random
import statistics
import time
from typing import Any

from services.registry import trust as tr
from services.registry.trust import Trust
from services.verifier import policy as pol

PACKAGES = 3000
NOT_REPRODUCIBLE = 0.10
CRITICAL = 0.05
OFFICIAL_SHARE = 0.10
SLEEPER_TAMPER = 0.05
# Core capacity (in leases) that other leases leave free for official builds' first leases:
# a core slot that frees goes to a waiting official build before any scratch one (--core-kept).
CORE_KEPT = 1.0
TRUST_CONFIG = tr.TrustConfig()
UNIFORM = pol.PolicyConfig(
    sample_start=0.10,
    sample_floor=0.10,
    risk_new_environment=0.0,
    risk_new_package=0.0,
    risk_build_time_outlier=0.0,
    risk_critical_package=0.0,
)


@dataclasses.dataclass
class Host:
    state: tr.HostTrust
    speed: float
    role: str = "honest"  # honest | new-cheat | sleeper
    built: set[int] = dataclasses.field(default_factory=set)
    builds: int = 0  # primary builds so far
    tampered: int = 0
    caught_at: int | None = None  # its build number when first the odd one out
    trusted_at: int | None = None  # its build number when it became trusted
    tampered_before_caught: int = 0
    env_changed: bool = False
    times_caught: int = 0


class World:
    def __init__(
        self, config: pol.PolicyConfig, rng: random.Random, core_kept: float = CORE_KEPT
    ) -> None:
        self.config = config
        self.core_kept = core_kept
        self.rng = rng
        weights = [1 / (i + 1) ** 0.8 for i in range(PACKAGES)]
        self.pkg_cum = list(itertools.accumulate(weights))
        self.nr = {i for i in range(PACKAGES) if rng.random() < NOT_REPRODUCIBLE}
        self.critical = {i for i in range(PACKAGES) if rng.random() < CRITICAL}
        self.nr_known: set[int] = set()
        self.hosts: dict[str, Host] = {}
        for i in range(2):
            self.add(f"core{i}", "fedora", 3.0, Trust.CORE)
        for i in range(24):
            self.add(f"vol{i}", f"owner{i % 16}", rng.lognormvariate(0, 0.6), Trust.UNTRUSTED)
        self.primary = 0
        self.extra = 0
        self.counts = {"primary-official": 0, "extra-official": 0, "primary-scratch": 0}
        self.counts["extra-scratch"] = 0
        self.leases = 0  # every lease: first builds, replicas and tie-breaks
        self.core_leases = 0
        self.official_to_core = 0  # official builds whose first lease went to a core host
        self.honest_flagged: set[str] = set()
        self.tampered_official = 0  # accepted as official without core/quorum agreement
        self.tampered_scratch = 0

    def add(self, name: str, owner: str, speed: float, level: Trust, role: str = "honest") -> Host:
        host = Host(tr.HostTrust(name, owner, level), speed, role)
        self.hosts[name] = host
        return host

    def core_credit(self) -> float:
        """Free core capacity, in leases: the core hosts take a share of all leases in
        proportion to their speed, as every host does, and no more."""
        live = [h for h in self.hosts.values() if h.state.level != Trust.QUARANTINED]
        core = sum(h.speed for h in live if h.state.level == Trust.CORE)
        return core / sum(h.speed for h in live) * (self.leases + 1) - self.core_leases

    def pick(self, pool: list[Host], prefer_core: bool = False) -> Host | None:
        """A free host of `pool`, by speed. `prefer_core` (an official build's first lease)
        takes a free core host first, as the dispatcher does; other leases leave `core_kept`
        of core capacity to official builds, which come first on core hosts. A busy core host
        is skipped unless only core hosts are eligible (a tie-break then waits for one)."""
        cores = [h for h in pool if h.state.level == Trust.CORE]
        others = [h for h in pool if h.state.level != Trust.CORE]
        keep = 0.0 if prefer_core or not others else self.core_kept
        if cores and (not others or self.core_credit() >= 1 + keep):
            pool = cores if prefer_core or not others else pool
        else:
            pool = others
        if not pool:
            return None
        host = self.rng.choices(pool, weights=[h.speed for h in pool])[0]
        self.lease(host)
        return host

    def lease(self, host: Host) -> None:
        self.leases += 1
        self.core_leases += host.state.level == Trust.CORE

    def build_result(self, host: Host, pkg: int, primary: bool) -> str:
        if primary:
            host.builds += 1
        tamper = (host.role == "new-cheat" and host.builds >= 3) or (
            host.role == "sleeper"
            and host.state.level == Trust.TRUSTED
            and self.rng.random() < SLEEPER_TAMPER
        )
        if tamper and primary:
            host.tampered += 1
        if tamper and primary:
            return f"{pkg}-evil-{host.state.host}"
        if pkg in self.nr:
            return f"{pkg}-{self.rng.random()}"
        return f"{pkg}-ok"

    def result(self, host: Host, pkg: int, digest: str) -> pol.Result:
        s = host.state
        return pol.Result(
            s.host, s.owner, s.level, digest, s.total_results, s.consecutive_confirmed
        )

    def one_build(self, primary_host: Host | None = None, official: bool | None = None) -> None:
        rng = self.rng
        pkg = rng.choices(range(PACKAGES), cum_weights=self.pkg_cum)[0]
        if official is None:
            official = rng.random() < OFFICIAL_SHARE
        kind = pol.BuildKind.OFFICIAL if official else pol.BuildKind.SCRATCH
        live = [h for h in self.hosts.values() if h.state.level != Trust.QUARANTINED]
        if primary_host is not None:
            host = primary_host
            self.lease(host)
        else:
            picked = self.pick(live, prefer_core=official)
            assert picked is not None
            host = picked
            if official and host.state.level == Trust.CORE:
                self.official_to_core += 1
        if host.state.level == Trust.QUARANTINED:
            return
        self.primary += 1
        self.counts[f"primary-{kind}"] += 1
        risk = pol.Risk(
            new_environment=host.env_changed,
            new_package=pkg not in host.built,
            build_time_outlier=rng.random() < 0.02,
            critical_package=pkg in self.critical,
        )
        host.env_changed = rng.random() < 0.002
        primary_build = host.builds + 1
        digests = {host.state.host: self.build_result(host, pkg, primary=True)}
        results = [self.result(host, pkg, digests[host.state.host])]
        used = {host.state.host}
        while True:
            d = pol.decide(
                results, kind, risk, self.config, rng, not_reproducible=pkg in self.nr_known
            )
            if d.action in (pol.Action.REPLICA, pol.Action.TIEBREAK):
                assert d.min_trust is not None
                pool = [
                    h
                    for h in live
                    if tr.at_least(h.state.level, d.min_trust)
                    and h.state.owner not in d.exclude_owners
                    and h.state.host not in used
                ]
                other = self.pick(pool)
                if other is None:
                    break
                used.add(other.state.host)
                self.extra += 1
                self.counts[f"extra-{kind}"] += 1
                digest = self.build_result(other, pkg, primary=False)
                digests[other.state.host] = digest
                results.append(self.result(other, pkg, digest))
                continue
            break
        host.built.add(pkg)
        if d.action != pol.Action.ACCEPT:
            return
        if d.not_reproducible:
            self.nr_known.add(pkg)
        if d.digest is not None and "-evil-" in d.digest:
            if official and d.rule not in ("core", "quorum"):
                self.tampered_official += 1
            elif not official:
                self.tampered_scratch += 1
        self.apply_trust(d, results, pkg, host, primary_build)

    def apply_trust(
        self, d: pol.Decision, results: list[pol.Result], pkg: int, primary: Host, build: int
    ) -> None:
        group = [r for r in results if r.host in d.agreeing]
        owners = {r.owner for r in group}
        for r in group:
            h = self.hosts[r.host]
            if h.state.level == Trust.CORE:
                continue
            others = tuple(o.host for o in group if o.owner != r.owner)
            if len(owners) >= 2 and others:
                ev = tr.Evidence(str(pkg), r.digest, others)
                h.state, moved = tr.record_confirmed(h.state, ev, TRUST_CONFIG)
                if moved is not None and h.trusted_at is None:
                    h.trusted_at = h.builds
            else:
                h.state = tr.record_unconfirmed(h.state)
        for name in d.odd_ones_out:
            h = self.hosts[name]
            ev = tr.Evidence(str(pkg), "", d.agreeing, "odd one out")
            h.state, _ = tr.record_odd_one_out(h.state, ev, TRUST_CONFIG)
            h.times_caught += 1
            if h.role == "honest":
                self.honest_flagged.add(name)
            elif h.caught_at is None:
                h.caught_at = h.builds if h is not primary else build
                h.tampered_before_caught = h.tampered


def population_run(
    config: pol.PolicyConfig, builds: int, seed: int, core_kept: float = CORE_KEPT
) -> dict[str, Any]:
    world = World(config, random.Random(seed), core_kept)
    sleeper = world.add("sleeper", "mallory", 1.0, Trust.UNTRUSTED, "sleeper")
    half = builds // 2
    steady: tuple[int, int, dict[str, int], int, int, int] | None = None
    new_cheat = None
    for b in range(builds):
        if b == half:
            steady = (
                world.primary,
                world.extra,
                dict(world.counts),
                world.leases,
                world.core_leases,
                world.official_to_core,
            )
            new_cheat = world.add("newcheat", "eve", 1.0, Trust.UNTRUSTED, "new-cheat")
        world.one_build()
    assert steady is not None and new_cheat is not None
    p0, e0, c0, l0, cl0, oc0 = steady
    c = {k: v - c0[k] for k, v in world.counts.items()}
    return {
        "extra_total": world.extra / world.primary,
        "extra_steady": (world.extra - e0) / (world.primary - p0),
        "extra_steady_scratch": c["extra-scratch"] / max(1, c["primary-scratch"]),
        "extra_steady_official": c["extra-official"] / max(1, c["primary-official"]),
        "official_to_core": (world.official_to_core - oc0) / max(1, c["primary-official"]),
        "core_lease_share": (world.core_leases - cl0) / (world.leases - l0),
        "new_cheat": (new_cheat.caught_at, new_cheat.tampered_before_caught, new_cheat.builds),
        "sleeper": (sleeper.caught_at, sleeper.tampered_before_caught, sleeper.builds),
        "sleeper_caught": f"{sleeper.times_caught} times, {sleeper.tampered} tampered builds",
        "honest_flagged": len(world.honest_flagged),
        "tampered_official": world.tampered_official,
        "tampered_scratch": world.tampered_scratch,
    }


def sleeper_run(config: pol.PolicyConfig, seed: int, limit: int = 1000) -> Host:
    """A steady-state population (honest hosts trusted with long records); the sleeper joins
    and is the primary host of its own (scratch) builds; replicas come from the population."""
    world = World(config, random.Random(seed))
    for h in world.hosts.values():
        if h.state.level == Trust.UNTRUSTED:
            records = int(world.rng.uniform(500, 5000))
            h.state = dataclasses.replace(h.state, level=Trust.TRUSTED, total_results=records)
            h.built = set(range(int(PACKAGES * 0.6)))
    sleeper = world.add("sleeper", "mallory", 1.0, Trust.UNTRUSTED, "sleeper")
    while sleeper.trusted_at is None or (
        sleeper.builds - sleeper.trusted_at < limit and sleeper.caught_at is None
    ):
        # Scratch only: official builds are always replicated (quorum), so this is the
        # cheat's best case and the figure comparable to "uniform 10% needs ~920 builds".
        world.one_build(primary_host=sleeper, official=False)
    return sleeper


def _builds(n: float) -> str:
    return ">1000" if n == math.inf else f"{n:.0f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--builds", type=int, default=50_000, help="builds per population run")
    ap.add_argument("--runs", type=int, default=200, help="sleeper runs for the 1,000 figure")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--core-kept",
        type=float,
        default=CORE_KEPT,
        help="core capacity (leases) kept for official builds; 0: first come, first served",
    )
    args = ap.parse_args()
    if not (100 <= args.builds <= 2_000_000 and 1 <= args.runs <= 100_000):
        ap.error("--builds in 100..2,000,000, --runs in 1..100,000")
    if not 0 <= args.core_kept <= 100:
        ap.error("--core-kept in 0..100")
    start = time.monotonic()
    rows: dict[str, dict[str, str]] = {}
    for name, config in (("risk-weighted (default)", pol.PolicyConfig()), ("uniform 10%", UNIFORM)):
        pop = population_run(config, args.builds, args.seed, args.core_kept)
        caught = []
        tampered = []
        for run in range(args.runs):
            s = sleeper_run(config, args.seed * 100_003 + run)
            assert s.trusted_at is not None
            caught.append(None if s.caught_at is None else s.caught_at - s.trusted_at)
            tampered.append(s.tampered_before_caught)
        within = sum(c is not None and c <= 1000 for c in caught) / args.runs
        # Over every run: one not caught within its 1,000 builds ranks last, shown as such.
        ranked = sorted(math.inf if c is None else c for c in caught)
        nc_at, nc_tampered, _ = pop["new_cheat"]
        sl_at, sl_tampered, sl_builds = pop["sleeper"]
        rows[name] = {
            "extra builds, whole run": f"{pop['extra_total']:.1%}",
            "extra builds, steady state": f"{pop['extra_steady']:.1%}",
            "  of which scratch builds": f"{pop['extra_steady_scratch']:.1%}",
            "  of which official builds": f"{pop['extra_steady_official']:.1%}",
            "official builds leased to core first": f"{pop['official_to_core']:.1%}",
            "core hosts' share of all leases (= capacity)": f"{pop['core_lease_share']:.1%}",
            "new cheat caught at its build (tampered)": f"{nc_at} ({nc_tampered})",
            "sleeper (population) caught at build": f"{sl_at} ({sl_tampered}) of {sl_builds}",
            "sleeper (population): caught, re-earned trust": str(pop["sleeper_caught"]),
            f"sleeper caught within 1,000 builds once trusted ({args.runs} runs)": f"{within:.1%}",
            "  median / p99 builds to catch": (
                f"{_builds(statistics.median(ranked))} / "
                f"{_builds(ranked[int(0.99 * (len(ranked) - 1))])}"
            ),
            "  tampered builds before caught (mean)": f"{statistics.mean(tampered):.1f}",
            "honest hosts flagged": str(pop["honest_flagged"]),
            "tampered official accepted w/o core/quorum": str(pop["tampered_official"]),
            "tampered scratch accepted (sampled out)": str(pop["tampered_scratch"]),
        }
    names = list(rows)
    width = max(len(k) for k in rows[names[0]])
    print(f"{'':{width}}  " + "  ".join(f"{n:>24}" for n in names))
    for key in rows[names[0]]:
        print(f"{key:{width}}  " + "  ".join(f"{rows[n][key]:>24}" for n in names))
    print(
        f"({args.builds} builds per population run, seed {args.seed}, "
        f"core capacity kept for official builds {args.core_kept:g}, "
        f"{time.monotonic() - start:.1f} s)"
    )


if __name__ == "__main__":
    main()
