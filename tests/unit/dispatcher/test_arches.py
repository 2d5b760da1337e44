"""Tests for services.dispatcher.arches: Koji's arch compatibility over hosts x tasks."""

from __future__ import annotations

import pytest
from skyline_messages.base import ARCHES

from services.dispatcher import arches

# What a host advertises -> the task arches it builds (every other one of ARCHES it does not).
TABLE = [
    (("noarch", "x86_64"), {"noarch", "x86_64"}),
    (("x86_64",), {"noarch", "x86_64"}),  # noarch anywhere, advertised or not
    (("noarch", "x86_64", "i686"), {"noarch", "x86_64", "i686"}),  # offers i686: builds it
    (("i686",), {"noarch", "i686"}),  # an i686 host does not build x86_64
    (("i686", "x86_64"), {"noarch", "x86_64", "i686"}),  # order does not matter
    (("amd64", "i686"), {"noarch", "x86_64", "i686"}),  # Koji's alias for x86_64
    (("aarch64",), {"noarch", "aarch64"}),
    (("aarch64", "i686"), {"noarch", "aarch64"}),  # i686 on aarch64 is emulation: ignored
    (("aarch64", "armv7hl"), {"noarch", "aarch64"}),  # Koji: aarch64 runs no armv7hl
    (("armv7hl",), {"noarch", "armv7hl"}),
    (("s390x",), {"noarch", "s390x"}),
    (("x86_64", "s390x"), {"noarch", "x86_64"}),  # s390x only on s390x
    (("ppc64le",), {"noarch", "ppc64le"}),
    (("riscv64",), {"noarch", "riscv64"}),
    (("noarch",), {"noarch"}),
    ((), {"noarch"}),
]


@pytest.mark.parametrize(("advertised", "builds"), TABLE)
@pytest.mark.parametrize("task_arch", ARCHES)
def test_host_arches_by_task_arches(
    advertised: tuple[str, ...], builds: set[str], task_arch: str
) -> None:
    assert (task_arch in arches.buildable(advertised)) == (task_arch in builds)


def test_the_primary_arch_is_the_most_capable_advertised_one() -> None:
    assert arches.primary(["noarch", "i686", "x86_64"]) == "x86_64"
    assert arches.primary(["noarch"]) is None
    # Unrelated arches: the first advertised one is the machine's.
    assert arches.primary(["s390x", "x86_64"]) == "s390x"
    assert arches.primary(["aarch64", "armv7hl"]) == "aarch64"
    assert "i686" in arches.compatible("x86_64")
