"""Agreement before acceptance: a verified succeeded result becomes one of its task's results,
and the acceptance policy (policy.py, pure) decides on all of them.

`on_result` records the result (with its host's owner and trust at the time, and its
comparison key), gathers the risk signals from the verifier's own records, calls
`policy.decide` and returns what to publish:

- ACCEPT: `task.verified` naming one agreeing result (a core host's, else the earliest),
  every agreeing host, the odd ones out (with the first differences found) and the rule met;
  a not-reproducible verdict is recorded so later official builds of the package on that
  arch are taken from core hosts only.
- REPLICA / TIEBREAK: `task.replicate`, excluding every host and owner heard so far.
- REFUSE: `task.mismatch` (`no_agreement`) for the newest lease.

The randomness of sampling is `random.Random(lease_id)`: a redelivered attestation (its
first transaction rolled back) decides the same.
"""

from __future__ import annotations

import json
import logging
import random
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import asyncpg
from fedora_messaging import message as fm
from skyline_messages import TaskFinishedV1, TaskMismatchV1, TaskReplicateV1, TaskVerifiedV1
from skyline_messages.base import package_of

from services.common.config import VerifierConfig
from services.common.errors import Retry
from services.common.rpmfacts import RpmFacts
from services.registry.standing import Standing
from services.registry.trust import Trust

from . import peers, policy
from .compare import ResultSet, compare_results

log = logging.getLogger(__name__)

# A build time this many times above (or below 1/this of) other hosts' median is an outlier.
OUTLIER_FACTOR = 3.0
_MAX_DETAIL = 2000
_MAX_REASON = 500


@dataclass(frozen=True)
class Earlier:
    """What the verifier already knows that bears on a new result's risk."""

    built_package_before: bool  # the host has an earlier result for this package
    previous_env_digest: str | None  # the env digest of the host's previous result
    other_durations: Sequence[float]  # other hosts' build times for the package and arch


def assess_risk(
    msg: TaskFinishedV1, earlier: Earlier, *, critical: bool, factor: float = OUTLIER_FACTOR
) -> policy.Risk:
    """The risk signals of a result (pure)."""
    outlier = False
    if earlier.other_durations:
        median = statistics.median(earlier.other_durations)
        if median > 0:
            outlier = msg.duration > factor * median or msg.duration < median / factor
    return policy.Risk(
        new_environment=(
            earlier.previous_env_digest is not None
            and earlier.previous_env_digest != msg.env_digest
        ),
        new_package=not earlier.built_package_before,
        build_time_outlier=outlier,
        critical_package=critical,
    )


def as_policy_result(row: Mapping[str, Any]) -> policy.Result:
    return policy.Result(
        host=row["host"],
        owner=row["owner"],
        trust=Trust(row["trust"]),
        digest=row["comparison_key"],
        total_results=row["total_results"],
        consecutive_confirmed=row["consecutive_confirmed"],
        owner_standing=row.get("owner_standing"),
    )


def chosen(agreeing: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    """The agreeing result to store: a core host's, else the earliest (rows are in order)."""
    return next((r for r in agreeing if r["trust"] == Trust.CORE), agreeing[0])


def verified_message(
    decision: policy.Decision,
    rows: Sequence[Mapping[str, Any]],
    attested: TaskFinishedV1,
    details: Mapping[str, str],
) -> TaskVerifiedV1:
    """task.verified for an ACCEPT (pure). `rows` are the task's results in order,
    `attested` the attestation of `chosen(...)`, `details` the differences found per
    odd one out's lease."""
    agreeing = _agreeing_rows(decision, rows)
    odd = [r for r in rows if r["host"] in decision.odd_ones_out]
    body = {
        **attested.result_fields(),
        "comparison_key": decision.digest,
        "rule": decision.rule,
        "agreeing": [
            {"host": r["host"], "owner": r["owner"], "trust": r["trust"], "lease_id": _id(r)}
            for r in agreeing
        ],
        "odd_ones_out": [
            {
                "host": r["host"],
                "lease_id": _id(r),
                "comparison_key": r["comparison_key"],
                "detail": details.get(_id(r), "its comparison key differs")[:_MAX_DETAIL],
            }
            for r in odd
        ],
        "not_reproducible": decision.not_reproducible,
    }
    return TaskVerifiedV1(body=body)


def replicate_message(
    decision: policy.Decision, rows: Sequence[Mapping[str, Any]], newest: TaskFinishedV1
) -> TaskReplicateV1:
    """task.replicate for a REPLICA or TIEBREAK (pure)."""
    assert decision.min_trust is not None
    return TaskReplicateV1(
        body={
            "task_id": newest.task_id,
            "build_id": newest.build_id,
            "arch": newest.arch,
            "nvr": newest.nvr,
            "purpose": "tiebreak" if decision.action == policy.Action.TIEBREAK else "replica",
            "reason": decision.reason[:_MAX_REASON],
            "min_trust": str(decision.min_trust),
            "exclude_owners": sorted(decision.exclude_owners),
            "exclude_hosts": sorted({r["host"] for r in rows}),
            "results": len(rows),
        }
    )


def refusal_message(decision: policy.Decision, newest: TaskFinishedV1) -> TaskMismatchV1:
    return TaskMismatchV1.refusing(newest, "no_agreement", decision.reason)


def _id(row: Mapping[str, Any]) -> str:
    return str(row["lease_id"])


def _agreeing_rows(
    decision: policy.Decision, rows: Sequence[Mapping[str, Any]]
) -> list[Mapping[str, Any]]:
    hosts = set(decision.agreeing)
    return [r for r in rows if r["comparison_key"] == decision.digest and r["host"] in hosts]


async def on_result(
    conn: asyncpg.Connection,
    http: aiohttp.ClientSession,
    config: VerifierConfig,
    msg: TaskFinishedV1,
    host: Mapping[str, Any],
    lease: Mapping[str, Any],
    facts: Sequence[RpmFacts],
    key: str,
) -> list[fm.Message]:
    """Record a verified succeeded result and decide on its task; the messages to publish.

    `facts` are its RPMs' facts and `key` their comparison key."""
    # One task's results are decided one at a time, each seeing the ones before it.
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"verifier-task:{msg.task_id}"
    )
    package = package_of(msg.nvr)
    risk = assess_risk(
        msg,
        await _earlier(conn, msg, package),
        critical=package in config.critical_packages,
    )
    await _record(conn, msg, host, key, package)
    rows = [
        dict(r)
        for r in await conn.fetch(
            "SELECT * FROM results WHERE task_id = $1 ORDER BY received_at, lease_id",
            msg.task_id,
        )
    ]
    if any(r["decision"] == policy.Action.ACCEPT for r in rows):
        log.info("task %s was accepted already; result from %s kept", msg.task_id, msg.host)
        return []
    # The newest result last, as decide expects.
    rows.sort(key=lambda r: _id(r) == msg.lease_id)
    not_reproducible = bool(
        await conn.fetchval(
            "SELECT true FROM not_reproducible WHERE package = $1 AND arch = $2",
            package,
            msg.arch,
        )
    )
    kind = policy.BuildKind.SCRATCH if lease["scratch"] else policy.BuildKind.OFFICIAL
    decision = policy.decide(
        [as_policy_result(r) for r in rows],
        kind,
        risk,
        config.policy,
        random.Random(msg.lease_id),
        not_reproducible=not_reproducible,
    )
    log.info(
        "task %s (%s): %s after %d result(s): %s",
        msg.task_id,
        msg.arch,
        decision.action,
        len(rows),
        decision.reason,
    )
    await conn.execute(
        "UPDATE results SET decision = $2 WHERE lease_id = $1::uuid",
        msg.lease_id,
        str(decision.action),
    )
    if decision.action == policy.Action.ACCEPT:
        return [await _accept(conn, http, config, decision, rows, msg, facts, package)]
    if decision.action == policy.Action.REFUSE:
        return [refusal_message(decision, msg)]
    return [replicate_message(decision, rows, msg)]


async def _accept(
    conn: asyncpg.Connection,
    http: aiohttp.ClientSession,
    config: VerifierConfig,
    decision: policy.Decision,
    rows: Sequence[Mapping[str, Any]],
    msg: TaskFinishedV1,
    facts: Sequence[RpmFacts],
    package: str,
) -> TaskVerifiedV1:
    winner = chosen(_agreeing_rows(decision, rows))
    attested = msg
    if _id(winner) != msg.lease_id:
        stored = await conn.fetchval(
            "SELECT body FROM attestations WHERE lease_id = $1::uuid", winner["lease_id"]
        )
        attested = TaskFinishedV1(body=json.loads(stored))
    details = {}
    if decision.odd_ones_out:
        details = await _differences(http, config, rows, winner, decision, msg, facts)
    if decision.not_reproducible:
        await conn.execute(
            "INSERT INTO not_reproducible (package, arch, task_id) VALUES ($1, $2, $3)"
            " ON CONFLICT DO NOTHING",
            package,
            msg.arch,
            msg.task_id,
        )
    return verified_message(decision, rows, attested, details)


async def _differences(
    http: aiohttp.ClientSession,
    config: VerifierConfig,
    rows: Sequence[Mapping[str, Any]],
    winner: Mapping[str, Any],
    decision: policy.Decision,
    msg: TaskFinishedV1,
    facts: Sequence[RpmFacts],
) -> dict[str, str]:
    """The first differences between the stored result and each odd one out (evidence)."""

    async def result_set(row: Mapping[str, Any]) -> ResultSet | None:
        if _id(row) == msg.lease_id:
            return ResultSet(row["result_digest"], facts)
        try:
            found = await peers.rpm_facts(http, config.collector_url, _id(row))
        except peers.FactsRefused:
            return None
        return None if found is None else ResultSet(row["result_digest"], found)

    ours = await result_set(winner)
    details: dict[str, str] = {}
    for row in rows:
        if row["host"] not in decision.odd_ones_out:
            continue
        theirs = await result_set(row)
        if ours is None or theirs is None:
            continue  # its uploads are gone: the keys still differ
        lines = compare_results(ours, theirs).evidence()
        details[_id(row)] = "; ".join(lines)
    return details


async def _earlier(conn: asyncpg.Connection, msg: TaskFinishedV1, package: str) -> Earlier:
    built = await conn.fetchval(
        "SELECT true FROM results WHERE host = $1 AND package = $2 AND lease_id <> $3::uuid"
        " LIMIT 1",
        msg.host,
        package,
        msg.lease_id,
    )
    previous_env = await conn.fetchval(
        "SELECT env_digest FROM results WHERE host = $1 AND lease_id <> $2::uuid"
        " ORDER BY received_at DESC LIMIT 1",
        msg.host,
        msg.lease_id,
    )
    durations = await conn.fetch(
        "SELECT duration FROM results WHERE package = $1 AND arch = $2 AND host <> $3"
        " ORDER BY received_at DESC LIMIT 100",
        package,
        msg.arch,
        msg.host,
    )
    return Earlier(bool(built), previous_env, [r["duration"] for r in durations])


async def _record(
    conn: asyncpg.Connection,
    msg: TaskFinishedV1,
    host: Mapping[str, Any],
    key: str,
    package: str,
) -> None:
    try:
        trust = Trust(host.get("trust", Trust.UNTRUSTED))
    except ValueError:
        raise Retry(f"the registry names an unknown trust level for {msg.host}") from None
    await conn.execute(
        "INSERT INTO results (lease_id, task_id, build_id, host, owner, trust, total_results,"
        " consecutive_confirmed, comparison_key, result_digest, env_digest, duration, package,"
        " arch, owner_standing) VALUES ($1::uuid, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12,"
        " $13, $14, $15) ON CONFLICT DO NOTHING",
        msg.lease_id,
        msg.task_id,
        msg.build_id,
        msg.host,
        str(host["owner"]),
        str(trust),
        int(host.get("total_results", 0)),
        int(host.get("consecutive_confirmed", 0)),
        key,
        msg.result_digest,
        msg.env_digest,
        msg.duration,
        package,
        msg.arch,
        owner_standing(host),
    )


def owner_standing(host: Mapping[str, Any]) -> str | None:
    """The registry's `owner_standing` of the host if it is one it defines, else None."""
    value = host.get("owner_standing")
    return value if isinstance(value, str) and value in {str(s) for s in Standing} else None
