"""Which task architectures a host builds, as Koji defines compatibility: pure, no I/O.

A host advertises the Koji arch names it offers (the builder's `arches`: by default "noarch"
and its machine's arch). What it builds:

- noarch anywhere: every host builds noarch tasks, advertised or not (Koji builds noarch on
  whatever host the tag's arches give it);
- its primary (machine) arch: the first advertised arch that no other advertised one runs
  natively by Koji's compatibility chains (`koji.arch.getArchList`): x86_64 of "i686, x86_64"
  (builders advertise their machine's arch first, after noarch: config._native_arches);
- another advertised arch only if the primary runs it natively by that chain: an x86_64 host
  that offers i686 builds i686 (x86_64 -> athlon -> i686 -> ...), one that does not offer it
  does not (its kernel may lack 32-bit support, or its buildroots the i686 repositories).
  An arch outside the chain (i686 on aarch64, s390x on x86_64) is emulation, not a native
  build: ignored. So s390x only ever builds on an s390x host.

Names are canonicalized the Koji way first (amd64 -> x86_64 through koji.arch's table), so a
host that says "amd64" is an x86_64 host.
"""

from __future__ import annotations

from collections.abc import Iterable

import koji.arch

NOARCH = "noarch"


def canonical(arch: str) -> str:
    """Koji's aliases resolved (amd64 and ia32e are x86_64); any other name unchanged."""
    return (
        {"amd64": "x86_64", "ia32e": "x86_64"}.get(arch, arch) if arch in koji.arch.arches else arch
    )


def compatible(arch: str) -> list[str]:
    """What an `arch` machine runs natively, most capable first (koji.arch.getArchList)."""
    return koji.arch.getArchList(canonical(arch))


def primary(advertised: Iterable[str]) -> str | None:
    """The host's machine arch: the first advertised one that no other advertised arch runs
    natively (x86_64 of x86_64 and i686, in either order); noarch alone is no machine."""
    machine = [canonical(a) for a in advertised if a != NOARCH]
    for arch in machine:
        if not any(other != arch and arch in compatible(other) for other in machine):
            return arch
    return None


def buildable(advertised: Iterable[str]) -> frozenset[str]:
    """Every task arch a host advertising `advertised` may build."""
    advertised = [canonical(a) for a in advertised]
    main = primary(advertised)
    if main is None:
        return frozenset({NOARCH})
    native = set(compatible(main))
    return frozenset({NOARCH, main} | {a for a in advertised if a in native})
