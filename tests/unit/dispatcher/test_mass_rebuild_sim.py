"""bench/mass_rebuild_sim.py on a tiny synthetic package set: the simulated mass rebuild never
beats the lower bound, builds every package once, and never before its dependencies."""

from __future__ import annotations

import importlib.util
import itertools
import random
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[3] / "bench" / "mass_rebuild_sim.py"


def load_sim() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mass_rebuild_sim", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def row(name, deps=(), noarch=False, exclusive=(), exclude=(), subpackages=(), lines=150):
    return {
        "name": name,
        "noarch": noarch,
        "exclusive_arch": list(exclusive),
        "exclude_arch": list(exclude),
        "spec_lines": lines,
        "subpackages": list(subpackages),
        "build_requires": [],
        "build_deps": list(deps),
    }


ROWS = [
    row("glibc", lines=3000),
    row("gcc", deps=["glibc"], lines=4000),  # a giant
    row("zlib", deps=["gcc"], subpackages=["zlib-devel"]),
    row("libpng", deps=["zlib-devel", "gcc", "not-in-fedora"]),  # by subpackage; unresolved
    row("python-foo", deps=["python-bar"], noarch=True),
    row("python-bar", deps=["python-foo"], noarch=True),  # a bootstrap loop
    row("java-thing", deps=["libpng"], exclusive=["%{java_arches}"]),
    row("x86-only", deps=["zlib"], exclusive=["x86_64"]),
    row("no-s390", deps=["libpng"], exclude=["s390x"]),
    row("i686-only", exclusive=["%{ix86}"]),  # no tag arch: not built
    row("leaf", deps=["java-thing", "x86-only", "no-s390", "python-foo"], lines=600),
]


@pytest.mark.parametrize("ordering", ["policy", "policy-greedy", "fifo", "cp-priority", "cp-exact"])
def test_every_package_built_once_after_its_dependencies(ordering: str) -> None:
    sim = load_sim()
    rng = random.Random(3)
    workload = sim.load_workload(ROWS, rng, cycles="dfs")
    packages = workload.packages
    assert workload.stats["not_built_no_arch"] == 1
    assert workload.stats["deps_unresolved"] == 1
    assert workload.stats["cycle_edges_broken"] == 1
    names = [p.name for p in packages]
    libpng = packages[names.index("libpng")]
    assert names.index("zlib") in libpng.deps  # zlib-devel resolved to its source package
    assert packages[names.index("x86-only")].arches == ("x86_64",)
    assert packages[names.index("no-s390")].arches == ("x86_64", "aarch64", "ppc64le")
    assert packages[names.index("python-foo")].arches == ("noarch",)

    builders = sim.make_builders(6, rng)
    bounds = sim.lower_bounds(packages, builders)
    lower = max(bounds["critical_path"], bounds["work_capacity"], bounds["per_arch"])
    result = sim.simulate(packages, builders, sim.orderings(packages, builders, rng, 0.3)[ordering])

    assert result.makespan >= lower - 1e-9
    assert sorted(i for i, _, _ in result.built_order) == list(range(len(packages)))
    assert result.leases == sum(len(p.arches) for p in packages)
    ends = {i: end for i, _, end in result.built_order}
    for i, first_start, _ in result.built_order:
        for dep in packages[i].deps:
            assert first_start >= ends[dep], (packages[i].name, packages[dep].name)
    assert 0 < result.busy <= result.slot_minutes
    hosts = {b.view.host: b for b in builders}
    tasks = [(i, a) for i, p in enumerate(packages) for a in p.arches]
    assert len(result.runs) == len(tasks)
    for tid, (host, start, end) in result.runs.items():
        assert tasks[tid][1] in hosts[host].view.arches  # s390x only on s390x, noarch anywhere
        assert end - start == pytest.approx(packages[tasks[tid][0]].work / hosts[host].speed)


def test_scc_cycle_breaking_drops_every_edge_of_a_loop() -> None:
    sim = load_sim()
    workload = sim.load_workload(ROWS, random.Random(3))  # scc: the default
    assert workload.stats["cycle_edges_broken"] == 2  # python-foo <-> python-bar, both ways
    names = [p.name for p in workload.packages]
    assert workload.packages[names.index("python-foo")].deps == []
    assert workload.packages[names.index("python-bar")].deps == []
    assert sim.topo_order(workload.packages)  # no cycle left


def test_explain_follows_the_chain_that_ends_last() -> None:
    sim = load_sim()
    rng = random.Random(3)
    packages = sim.load_workload(ROWS, rng).packages
    builders = sim.make_builders(6, rng)
    ordering = sim.orderings(packages, builders, rng, 0.3)["policy"]
    result = sim.simulate(packages, builders, ordering)
    lines = sim.explain(packages, builders, result, ordering.weights.estimates)
    chain = [
        line.split()[0]
        for line in lines[2 : lines.index(next(ln for ln in lines if "on this chain" in ln))]
    ]
    # The last package to end heads back, link by link, through the dependency that ended last.
    ends = {packages[i].name: end for i, _, end in result.built_order}
    assert ends[chain[-1]] == pytest.approx(result.makespan)
    names = [p.name for p in packages]
    for before, after in itertools.pairwise(chain):
        assert names.index(before) in packages[names.index(after)].deps
    assert packages[names.index(chain[0])].deps == []
    assert any("busy share" in line for line in lines)
