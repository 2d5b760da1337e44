"""GET /api/v1/hosts filters: parsed and bounded here, turned into one parameterised query."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

from skyline_messages.base import ARCHES, HOST, USER

from services.common.http import error

from .trust import Trust

DEFAULT_LIMIT = 1000
MAX_LIMIT = 10000
STATES = ("online", "offline", "quarantined")
FILTERS = ("arch", "trust", "owner", "online", "state", "limit", "after")
_HOST = re.compile(HOST["pattern"])
_OWNER = re.compile(USER["pattern"])


@dataclasses.dataclass(frozen=True)
class HostQuery:
    arch: str | None = None
    trust: str | None = None
    owner: str | None = None
    online: bool | None = None
    state: str | None = None
    limit: int = DEFAULT_LIMIT
    after: str | None = None


def parse(query: Mapping[str, str]) -> HostQuery:
    """The filters of a query string; 400 for an unknown or malformed one."""
    unknown = sorted(set(query) - set(FILTERS))
    if unknown:
        raise error(400, f"unknown filter(s) {unknown}: use {', '.join(FILTERS)}")
    arch, trust, owner = query.get("arch"), query.get("trust"), query.get("owner")
    if arch is not None and arch not in ARCHES:
        raise error(400, f"arch must be one of {', '.join(ARCHES)}")
    if trust is not None and trust not in set(Trust):
        raise error(400, f"trust must be one of {', '.join(Trust)}")
    if owner is not None and not _OWNER.match(owner):
        raise error(400, "owner is not an owner name")
    online = query.get("online")
    if online is not None and online not in ("true", "false"):
        raise error(400, "online must be true or false")
    state = query.get("state")
    if state is not None and state not in STATES:
        raise error(400, f"state must be one of {', '.join(STATES)}")
    after = query.get("after")
    if after is not None and not _HOST.match(after):
        raise error(400, "after must be a host name")
    raw = query.get("limit", str(DEFAULT_LIMIT))
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise error(400, f"limit must be an integer from 1 to {MAX_LIMIT}")
    return HostQuery(
        arch, trust, owner, None if online is None else online == "true", state, int(raw), after
    )


def sql(q: HostQuery) -> tuple[Any, ...]:
    """The statement and its arguments (every value a parameter, never spliced in)."""
    where, args = [], []

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    if q.arch is not None:
        where.append(f"{arg(q.arch)} = ANY(arches)")
    if q.trust is not None:
        where.append(f"trust = {arg(q.trust)}")
    if q.owner is not None:
        where.append(f"owner = {arg(q.owner)}")
    if q.online is not None:
        where.append("state = 'online'" if q.online else "state <> 'online'")
    if q.state is not None:
        where.append(f"state = {arg(q.state)}")
    if q.after is not None:
        where.append(f"host > {arg(q.after)}")
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    return (f"SELECT * FROM hosts{clause} ORDER BY host LIMIT {arg(q.limit)}", *args)
