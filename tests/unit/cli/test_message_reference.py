"""docs/messages.md is generated from the schema classes and must match them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from skyline_messages import __all__ as CLASS_NAMES

from services.common.principals import RULES

REPO = Path(__file__).resolve().parents[3]
SCRIPT = REPO / "scripts" / "message-reference"


def test_committed_reference_is_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, cwd=REPO
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_topic_has_its_sender_fields_and_example() -> None:
    text = (REPO / "docs" / "messages.md").read_text()
    assert len(CLASS_NAMES) == len(RULES)
    for topic in RULES:
        assert f"## `{topic}`" in text
    request = text.split("## `skyline.build.request`")[1].split("\n## ")[0]
    assert "sent by: the packager named by the routing key" in request
    assert "routing key: `skyline.build.request.<owner>`" in request
    assert "| `srpm_sha256` | string | yes |" in request
    assert "| `priority` | integer 0-1000 |  |" in request
    assert '"owner": "alice"' in request  # the example body
    leased = text.split("## `skyline.task.leased`")[1].split("\n## ")[0]
    assert "sent by: the dispatcher (broker user `skyline-dispatcher`)" in leased
