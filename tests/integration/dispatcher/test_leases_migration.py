"""Migration 0005 (leases): the leases the tasks table named before it are backfilled."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from services.common import db
from services.common.config import Config

pytestmark = pytest.mark.integration

MIGRATIONS = Path(__file__).parents[3] / "services" / "dispatcher" / "migrations"


@pytest.fixture(autouse=True)
def collector() -> None:
    """No dispatcher runtime here (conftest's would apply every migration first)."""


async def test_existing_leases_are_backfilled(config: Config, tmp_path: Path) -> None:
    before, upto = tmp_path / "before", tmp_path / "upto"  # later migrations are not this test's
    before.mkdir()
    upto.mkdir()
    for file in sorted(MIGRATIONS.glob("*.sql")):
        if file.name < "0005":
            shutil.copy(file, before)
        if file.name < "0007":
            shutil.copy(file, upto)
    pool = await db.create_pool(config.database_url, "dispatcher")
    try:
        await db.migrate(pool, "dispatcher", before)
        await pool.execute(
            "INSERT INTO hosts (host, owner, state, trust, arches, releases, free_slots, seen_at)"
            " VALUES ('b1', 'bob', 'online', 'untrusted', '{noarch}', '{}', 1, now());"
            " INSERT INTO builds (request_id, owner, nvr, srpm_url, srpm_sha256, scratch, priority)"
            " VALUES ('r1', 'alice', 'p-1-1', 'http://x/p-1-1.src.rpm', 'a', true, 1);"
            " INSERT INTO tasks (build_id, arch, priority, state, host, lease_id, lease_expires)"
            " VALUES (1, 'noarch', 1, 'leased', 'b1', gen_random_uuid(), now()),"
            " (1, 'x86_64', 1, 'stored', 'gone', gen_random_uuid(), now()),"
            " (1, 'aarch64', 1, 'queued', NULL, NULL, NULL)"
        )
        assert await db.migrate(pool, "dispatcher", upto) == [
            "0005_leases.sql",
            "0006_scheduling.sql",
        ]
        rows = await pool.fetch(
            "SELECT t.arch, l.host, l.owner, l.purpose, l.state, l.lease_id = t.lease_id AS same"
            " FROM leases l JOIN tasks t ON t.id = l.task_id ORDER BY t.id"
        )
        assert [tuple(r) for r in rows] == [
            ("noarch", "b1", "bob", "build", "open", True),
            ("x86_64", "gone", "", "build", "accepted", True),
        ]
        task = await pool.fetchrow("SELECT * FROM tasks WHERE arch = 'aarch64'")
        assert (task["purpose"], task["min_trust"], task["waiting"]) == ("build", None, None)
        # 0006: tasks carry their build's owner and class (priority 1: a mass rebuild), and
        # hosts count their open leases.
        assert (task["owner"], task["class"], task["scratch"]) == ("alice", 2, True)
        host = await pool.fetchrow("SELECT * FROM hosts WHERE host = 'b1'")
        assert (host["open_leases"], host["spare"], host["build_arches"]) == (1, 0, ["noarch"])
    finally:
        await pool.close()
