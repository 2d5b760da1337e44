"""The registry's SQL for trust: each host's level and record, and its transitions."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import asyncpg
from skyline_messages import HostTrustV1

from .trust import HostTrust, Transition, Trust

POLICY_AGENT = "registry"  # who `by` names for the policy's own transitions


def host_trust(row: asyncpg.Record) -> HostTrust:
    return HostTrust(
        host=row["host"],
        owner=row["owner"],
        level=Trust(row["trust"]),
        consecutive_confirmed=row["consecutive_confirmed"],
        total_results=row["total_results"],
        odd_one_out=row["odd_one_out"],
    )


def record_view(row: asyncpg.Record) -> dict[str, int]:
    return {k: row[k] for k in ("consecutive_confirmed", "total_results", "odd_one_out")}


async def lock_host(conn: asyncpg.Connection, host: str) -> asyncpg.Record | None:
    """The host's row, locked until the transaction ends: one trust change at a time."""
    return await conn.fetchrow("SELECT * FROM hosts WHERE host = $1 FOR UPDATE", host)


async def save(conn: asyncpg.Connection, state: HostTrust) -> asyncpg.Record:
    return await conn.fetchrow(
        "UPDATE hosts SET trust = $2, consecutive_confirmed = $3, total_results = $4,"
        " odd_one_out = $5 WHERE host = $1 RETURNING *",
        state.host,
        str(state.level),
        state.consecutive_confirmed,
        state.total_results,
        state.odd_one_out,
    )


def _by(transition: Transition) -> str:
    return POLICY_AGENT if transition.by == "policy" else transition.by


def _evidence(transition: Transition) -> dict[str, Any] | None:
    if transition.evidence is None:
        return None
    evidence = dataclasses.asdict(transition.evidence)
    evidence["others"] = list(evidence["others"])
    return evidence


async def record_transition(conn: asyncpg.Connection, transition: Transition) -> asyncpg.Record:
    evidence = _evidence(transition)
    return await conn.fetchrow(
        "INSERT INTO trust_transitions (host, old_level, new_level, reason, evidence, decided_by)"
        " VALUES ($1, $2, $3, $4, $5::jsonb, $6) RETURNING *",
        transition.host,
        str(transition.old),
        str(transition.new),
        transition.reason,
        None if evidence is None else json.dumps(evidence),
        _by(transition),
    )


async def transitions(conn: asyncpg.Connection, host: str, limit: int) -> list[asyncpg.Record]:
    """The host's newest `limit` transitions, newest first."""
    return await conn.fetch(
        "SELECT * FROM trust_transitions WHERE host = $1 ORDER BY id DESC LIMIT $2", host, limit
    )


def transition_view(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "old": row["old_level"],
        "new": row["new_level"],
        "reason": row["reason"],
        "evidence": None if row["evidence"] is None else json.loads(row["evidence"]),
        "by": row["decided_by"],
        "at": row["at"].isoformat(),
    }


def trust_message(owner: str, transition: Transition) -> HostTrustV1:
    body: dict[str, Any] = {
        "host": transition.host,
        "owner": owner,
        "old": str(transition.old),
        "new": str(transition.new),
        "reason": transition.reason,
        "by": _by(transition),
    }
    if (evidence := _evidence(transition)) is not None:
        body["evidence"] = evidence
    return HostTrustV1(body=body)
