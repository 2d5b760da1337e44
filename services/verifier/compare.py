"""RPM-aware comparison of two hosts' result sets for the same task (issue 6). Pure.

Equal result-set digests are the fast path. Otherwise `compare_results` compares the RPMs'
facts (`services.common.rpmfacts`, which reads them and says what is left out: only what
honest rebuilds vary in, never file digests) RPM by RPM and names the first differences.
`rpmfacts.comparison_key` is equal for two result sets exactly when this comparison agrees.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from services.common.rpmfacts import DEP_KINDS, FileFacts, RpmFacts

__all__ = ["Comparison", "Difference", "ResultSet", "compare_results"]

# Bounds on evidence, so a flag's evidence stays readable and small whatever the input.
DEFAULT_MAX_DIFFERENCES = 50
_MAX_VALUE_CHARS = 200


@dataclass(frozen=True)
class ResultSet:
    """One host's result for a task: its result-set digest and the facts of its RPMs."""

    digest: str
    rpms: Sequence[RpmFacts] = ()


@dataclass(frozen=True)
class Difference:
    rpm: str  # NEVRA, or "result set" for set-level differences
    what: str  # e.g. "file /usr/bin/x: digest", "requires", "header PREIN"
    a: str  # value on side a ("" when absent), bounded
    b: str

    def __str__(self) -> str:
        return f"{self.rpm}: {self.what}: a={self.a!r} b={self.b!r}"


@dataclass(frozen=True)
class Comparison:
    verdict: Literal["agree", "differ"]
    identical: bool  # agreed on the fast path (equal result-set digests)
    differences: tuple[Difference, ...] = ()  # at most max_differences
    omitted: int = 0  # differences found beyond the bound

    @property
    def agree(self) -> bool:
        return self.verdict == "agree"

    def evidence(self) -> list[str]:
        """Human-readable lines for a fraud flag's evidence."""
        lines = [str(d) for d in self.differences]
        if self.omitted:
            lines.append(f"... and {self.omitted} more differences")
        return lines


def _bound(value: str) -> str:
    if len(value) <= _MAX_VALUE_CHARS:
        return value
    return value[: _MAX_VALUE_CHARS - 3] + "..."


@dataclass
class _Collector:
    limit: int
    found: list[Difference] = field(default_factory=list)
    omitted: int = 0

    def add(self, rpm_name: str, what: str, a: object, b: object) -> None:
        if len(self.found) < self.limit:
            self.found.append(Difference(rpm_name, what, _bound(str(a)), _bound(str(b))))
        else:
            self.omitted += 1


def _by_nevra(rpms: Sequence[RpmFacts], side: str, out: _Collector) -> dict[str, RpmFacts]:
    seen: dict[str, RpmFacts] = {}
    for r in rpms:
        if r.nevra in seen:
            out.add("result set", f"duplicate RPM on side {side}", r.nevra, "")
        seen[r.nevra] = r
    return seen


def _compare_rpm(a: RpmFacts, b: RpmFacts, out: _Collector) -> None:
    n = a.nevra
    for path in sorted(a.files.keys() | b.files.keys()):
        fa, fb = a.files.get(path), b.files.get(path)
        if fa is None or fb is None:
            out.add(n, f"file {path}", "present" if fa else "absent", "present" if fb else "absent")
            continue
        for name in FileFacts.__dataclass_fields__:
            va, vb = getattr(fa, name), getattr(fb, name)
            if va != vb:
                if name == "mode":
                    va, vb = oct(va), oct(vb)
                out.add(n, f"file {path}: {name}", va, vb)
    for kind in DEP_KINDS:
        da, db = a.deps.get(kind, frozenset()), b.deps.get(kind, frozenset())
        for entry in sorted(da - db):
            out.add(n, f"{kind}s", entry, "")
        for entry in sorted(db - da):
            out.add(n, f"{kind}s", "", entry)
    for tag in sorted(a.tags.keys() | b.tags.keys()):
        ta, tb = a.tags.get(tag), b.tags.get(tag)
        if ta != tb:
            out.add(n, f"header {tag}", ta or "", tb or "")


def compare_results(
    a: ResultSet, b: ResultSet, *, max_differences: int = DEFAULT_MAX_DIFFERENCES
) -> Comparison:
    """Do two results for the same task agree? Pure; `rpms` is read only if digests differ."""
    if a.digest == b.digest:
        return Comparison("agree", identical=True)
    out = _Collector(limit=max_differences)
    ra, rb = _by_nevra(a.rpms, "a", out), _by_nevra(b.rpms, "b", out)
    for nevra in sorted(ra.keys() | rb.keys()):
        if nevra not in rb:
            out.add("result set", "RPM", nevra, "")
        elif nevra not in ra:
            out.add("result set", "RPM", "", nevra)
        else:
            _compare_rpm(ra[nevra], rb[nevra], out)
    if not a.rpms and not b.rpms:
        # Different digests yet no RPM facts: nothing shows they are equivalent.
        out.add("result set", "digest", a.digest, b.digest)
    if out.found or out.omitted:
        return Comparison("differ", False, tuple(out.found), out.omitted)
    return Comparison("agree", identical=False)
