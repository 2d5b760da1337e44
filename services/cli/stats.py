"""`skyline stats [VIEW]`: the collector's statistics (GET /api/v1/stats/<view>), as a table
or, with `--json`, exactly the JSON the collector serves."""

from __future__ import annotations

import argparse
from typing import Any

from . import common

# Each view and the columns its table shows (the JSON has everything).
TABLES: dict[str, tuple[str, list[str]]] = {
    "leaderboard": ("hosts", ["rank", "host", "owner", "credit", "valid_rate", "accepted"]),
    "hosts": ("hosts", ["host", "owner", "state", "trust", "arches", "seen_at"]),
    "builds": ("builds", ["build_id", "nvr", "owner", "state"]),
    "packages": ("packages", ["package", "builds", "complete", "failed", "tasks_reproduced"]),
}
VIEWS = ("summary", "leaderboard", "hosts", "queue", "builds", "packages")
LIMITED = ("leaderboard", "builds", "packages")


def table(rows: list[dict[str, Any]], columns: list[str]) -> list[str]:
    """Rows as aligned text columns (lists joined with commas, None as '-')."""

    def cell(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, list):
            return ",".join(str(v) for v in value)
        return str(value)

    cells = [[cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return lines if rows else [lines[0], "(none)"]


def human(view: str, data: Any) -> list[str]:
    if view == "summary":
        throttle = data.get("throttle") or {}
        state = "engaged" if throttle.get("engaged") else "released"
        builds = ", ".join(f"{k} {v}" for k, v in sorted((data.get("builds") or {}).items()))
        return [
            f"builds: {builds or 'none'}",
            f"builds per hour (24 h mean): {data.get('mean_builds_per_hour')}",
            f"tasks judged: {data.get('tasks_judged')},"
            f" disagreement rate: {data.get('disagreement_rate')}",
            f"throttle: {state}" + (f" ({throttle['reason']})" if throttle.get("reason") else ""),
        ]
    if view == "queue":
        if not data.get("available", True):
            return ["the dispatcher's queue is unavailable (the collector cannot ask it)"]
        tasks = ", ".join(f"{k} {v}" for k, v in sorted((data.get("tasks") or {}).items()))
        return [f"tasks: {tasks or 'none'}", f"waiting: {len(data.get('waiting') or [])}"]
    key, columns = TABLES[view]
    rows = data.get(key, []) if isinstance(data, dict) else data
    if view == "leaderboard":
        owners = data.get("owners", [])
        return [
            "owners:",
            *table(owners, ["rank", "owner", "hosts", "credit", "valid_rate"]),
            "hosts:",
            *table(rows, columns),
        ]
    return table(rows, columns)


def cmd_stats(args: argparse.Namespace) -> int:
    config = common.load(args)
    if args.limit is not None and not 1 <= args.limit <= 500:
        raise common.CliError(f"--limit must be from 1 to 500, not {args.limit}")
    params = {"limit": str(args.limit)} if args.limit and args.view in LIMITED else None
    url = f"{common.collector_url(config)}/api/v1/stats/{args.view}"

    async def get() -> Any:
        async with common.session(config) as http:
            return await common.call(
                http, "GET", url, params=params, what=f"asking the collector for {args.view}"
            )

    data = common.run(get())
    common.emit(args, data, lambda d: human(args.view, d))
    return common.OK


def register(commands: Any) -> None:
    s = commands.add_parser("stats", help="the farm's statistics (the collector's dashboard)")
    s.add_argument("view", nargs="?", default="summary", choices=VIEWS, help="default: summary")
    s.add_argument("--limit", type=int, help="rows (1-500) for leaderboard, builds, packages")
    common.add_json(s)
    s.set_defaults(func=cmd_stats)
