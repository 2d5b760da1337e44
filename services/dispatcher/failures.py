"""When a failed build counts as failed: pure policy, no I/O.

A volunteer could fail every build it is given (or be broken), so one untrusted host's word
is not enough: the task is built again on a host of another owner. An honest package failure
fails everywhere, so that costs one extra build.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Sequence
from typing import Any


@dataclasses.dataclass(frozen=True)
class Failure:
    """One host's verified report that the task failed, with who owned it then."""

    host: str
    owner: str
    trust: str

    def entry(self) -> dict[str, str]:
        return dataclasses.asdict(self)


def confirmed(failures: Sequence[Failure]) -> bool:
    """Whether these reports fail the build.

    A core host (the infrastructure's own) is believed at once; otherwise two hosts of two
    different owners must agree, so no single volunteer, however many hosts it enrols, can
    fail a build alone.
    """
    return any(f.trust == "core" for f in failures) or len({f.owner for f in failures}) >= 2


def describe(failures: Iterable[Failure]) -> str:
    """The hosts, for a build.failed reason: "b1 (owner alice, untrusted) and b2 (…)"."""
    return " and ".join(f"{f.host} (owner {f.owner}, {f.trust})" for f in failures)


def parse(value: str | list[dict[str, Any]]) -> list[Failure]:
    """The failures column (jsonb, as asyncpg returns it: text) as Failure objects."""
    entries = json.loads(value) if isinstance(value, str) else value
    return [Failure(e["host"], e["owner"], e["trust"]) for e in entries]
