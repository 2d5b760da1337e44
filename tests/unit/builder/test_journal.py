"""The agent's journal on its own: atomic entries, pruning, and ids that stay in their folder."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from services.builder.journal import Journal

LEASE_A = "3f2b8c1e-9a4d-4e6f-8b7a-1c2d3e4f5a6b"
LEASE_B = "7d1e2f3a-4b5c-4d6e-8f7a-9b0c1d2e3f4a"
LEASE_C = "0a1b2c3d-4e5f-4a6b-8c7d-8e9f0a1b2c3d"


def test_journal_prunes_only_settled_old_entries(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.save(LEASE_A, {"state": "finished", "published": True})
    journal.save(LEASE_B, {"state": "accepted"})
    journal.save(LEASE_C, {"state": "finished", "published": False})
    old = time.time() - 3600
    for lease_id in (LEASE_A, LEASE_B, LEASE_C):
        os.utime(journal.path(lease_id), (old, old))
    assert journal.prune(60) == 1
    assert [lease_id for lease_id, _ in journal.entries()] == sorted([LEASE_B, LEASE_C])
    assert json.loads(journal.path(LEASE_B).read_text()) == {"state": "accepted"}
    with pytest.raises(ValueError):
        journal.path("../../etc/passwd")


def test_save_replaces_atomically_and_skips_unreadable_entries(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal")  # created on the first save
    assert journal.load(LEASE_A) is None
    journal.save(LEASE_A, {"state": "accepted"})
    journal.save(LEASE_A, {"state": "finished", "published": False})
    assert journal.load(LEASE_A) == {"state": "finished", "published": False}
    assert [p.name for p in journal.root.iterdir()] == [f"{LEASE_A}.json"]  # no .tmp left
    journal.path(LEASE_B).write_text("{not json")  # e.g. a disk that filled up mid-write
    journal.path(LEASE_C).write_text("[]")
    assert journal.load(LEASE_B) is None
    assert [lease_id for lease_id, _ in journal.entries()] == [LEASE_A]
