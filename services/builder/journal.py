"""The agent's journal: what it promised the dispatcher, kept on disk across restarts.

A lease is journaled before its delivery is acked, and its signed `task.finished` before it is
published, so a crash loses neither the work nor the exact message to re-send.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

KEEP_SECONDS = 7 * 86400  # far beyond any lease, so a redelivery still finds its entry
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class Journal:
    """One JSON file per lease under <workdir>/journal, replaced atomically on every change.

    An entry is {"lease": <lease body>, "state": "accepted" | "finished" | "expired",
    "finished": {"id": <message id>, "body": <signed body>}, "published": bool}.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, lease_id: str) -> Path:
        # The schema already checks this; the journal must never write outside its folder.
        if not UUID_RE.fullmatch(lease_id):
            raise ValueError(f"not a lease id: {lease_id!r}")
        return self.root / f"{lease_id}.json"

    def load(self, lease_id: str) -> dict[str, Any] | None:
        return self._read(self.path(lease_id))

    def save(self, lease_id: str, entry: Mapping[str, Any]) -> None:
        path = self.path(lease_id)
        tmp = path.with_suffix(".tmp")
        self.root.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w") as f:
            json.dump(entry, f, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())  # the entry must survive a power cut that follows the ack
        os.replace(tmp, path)

    def entries(self) -> Iterator[tuple[str, dict[str, Any]]]:
        for path in sorted(self.root.glob("*.json")):
            entry = self._read(path)
            if entry is not None:
                yield path.stem, entry

    def prune(self, older_than: float) -> int:
        """Drop settled entries (sent attestations, expired leases) not touched for a while."""
        cutoff = datetime.datetime.now().timestamp() - older_than
        dropped = 0
        for lease_id, entry in self.entries():
            settled = entry.get("state") == "expired" or (
                entry.get("state") == "finished" and entry.get("published")
            )
            path = self.path(lease_id)
            if settled and path.stat().st_mtime < cutoff:
                path.unlink(missing_ok=True)
                dropped += 1
        return dropped

    @staticmethod
    def _read(path: Path) -> dict[str, Any] | None:
        try:
            entry = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except ValueError:
            log.error("journal entry %s is unreadable; ignoring it", path)
            return None
        return entry if isinstance(entry, dict) else None
