"""Headless Chromium (Debian's `chromium` package) for the dashboard's browser tests.

`chromium --headless --dump-dom` prints the DOM after the page loaded, as the browser built
it; `--screenshot` saves what it rendered. Each run gets its own throw-away profile.
"""

from __future__ import annotations

import asyncio
import html.parser
import shutil
import tempfile
from pathlib import Path

import pytest

TIMEOUT = 120.0  # seconds: a cold Chromium start on a busy 2-core machine is slow


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.skip("chromium is not installed (scripts/bootstrap installs it)")
    return found


async def _run(*args: str) -> str:
    with tempfile.TemporaryDirectory(prefix="skyline-chromium-") as profile:
        proc = await asyncio.create_subprocess_exec(
            chromium(),
            "--headless",
            "--no-sandbox",  # tests may run as root, where the sandbox refuses to start
            "--disable-gpu",
            "--no-first-run",
            f"--user-data-dir={profile}",
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise
        if proc.returncode != 0:
            raise AssertionError(f"chromium exited {proc.returncode}: {err.decode()[-2000:]}")
        return out.decode()


async def dump_dom(url: str) -> str:
    return await _run("--dump-dom", url)


async def screenshot(url: str, path: Path, size: str = "1280,1600") -> Path:
    await _run(f"--screenshot={path}", f"--window-size={size}", url)
    assert path.stat().st_size > 0, "chromium wrote an empty screenshot"
    return path


class Tables(html.parser.HTMLParser):
    """The text of each table's cells, by the table's class; and every element's tag."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.tags: list[str] = []
        self._table: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag == "table":
            self._table = dict(attrs).get("class") or ""
            self.tables.setdefault(self._table, [])
        elif tag == "tr" and self._table is not None:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        elif tag == "br" and self._cell is not None:
            self._cell.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None and self._table is not None:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def tables(dom: str) -> Tables:
    parsed = Tables()
    parsed.feed(dom)
    return parsed
