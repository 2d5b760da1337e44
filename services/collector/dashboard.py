"""The contributors' dashboard as HTML: pure rendering of the stats endpoints' data. No I/O.

Self-contained (inline CSS and SVG, no scripts, fonts or images from elsewhere) so that it
works offline. Host names, owners, N-V-Rs and reasons come from untrusted parties: every
value goes through `e()`, and markup is only ever built from this module's literals.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

PAGES = (  # (path under /dashboard, title, the JSON it shows)
    ("", "Overview", "/api/v1/stats/summary"),
    ("/leaderboard", "Leaderboard", "/api/v1/stats/leaderboard"),
    ("/hosts", "Hosts", "/api/v1/stats/hosts"),
    ("/queue", "Queue", "/api/v1/stats/queue"),
    ("/builds", "Builds", "/api/v1/stats/builds"),
    ("/packages", "Packages", "/api/v1/stats/packages"),
)

_CSS = """
body{font-family:system-ui,sans-serif;margin:0;color:#1d2330;background:#f5f6f8}
header{background:#1d3557;color:#fff;padding:.6em 1.2em}
header a{color:#fff;margin-right:1em;text-decoration:none}
header a.here{font-weight:bold;text-decoration:underline}
main{padding:1em 1.2em;max-width:70em}
table{border-collapse:collapse;background:#fff;margin:.5em 0 1.5em}
th,td{border:1px solid #d0d4dc;padding:.3em .6em;text-align:left}
th{background:#e8ebf0}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.complete{color:#1b7a3a;font-weight:bold}.failed{color:#b3261e;font-weight:bold}
.queued{color:#8a6d00}.json{font-size:.9em}
.engaged{color:#b3261e;font-weight:bold}.released{color:#1b7a3a}
svg{background:#fff;border:1px solid #d0d4dc}
"""


def e(value: Any) -> str:
    """A value as escaped text; missing values as a dash."""
    if value is None:
        return "-"
    return html.escape(str(value), quote=True)


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f} %"


def page(path: str, body: str) -> str:
    """A whole page: navigation, the body, and a link to the JSON it shows."""
    title, json_href = next((t, j) for p, t, j in PAGES if p == path)
    nav = "".join(
        f'<a href="/dashboard{p}"{" class=here" if p == path else ""}>{e(t)}</a>'
        for p, t, _ in PAGES
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>Skyline · {e(title)}</title><style>{_CSS}</style></head><body>"
        f"<header><strong>Skyline</strong> · {nav}</header><main><h1>{e(title)}</h1>"
        f'<p class="json">This page as JSON: <a href="{e(json_href)}">{e(json_href)}</a></p>'
        f"{body}</main></body></html>"
    )


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], cls: str = "") -> str:
    """`rows` hold cells already rendered (escaped) by the caller."""
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(row) + "</tr>" for row in rows)
    if not body:
        body = f'<tr><td colspan="{len(headers)}">nothing yet</td></tr>'
    return f'<table class="{e(cls)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def td(value: Any, numeric: bool = False) -> str:
    return f'<td class="n">{e(value)}</td>' if numeric else f"<td>{e(value)}</td>"


def builds_chart(series: Sequence[Mapping[str, Any]], width: int = 720, height: int = 160) -> str:
    """Builds per hour as an inline SVG bar chart, oldest hour on the left."""
    if not series:
        return ""
    top = max(max(int(s["builds"]) for s in series), 1)
    bar = width / len(series)
    plot = height - 20  # room for the hour labels
    bars = []
    for i, s in enumerate(series):
        n = int(s["builds"])
        h = plot * n / top
        x, y = i * bar, plot - h
        hour = str(s["hour"])[11:16]
        bars.append(
            f'<rect x="{x + 1:.1f}" y="{y:.1f}" width="{bar - 2:.1f}" height="{h:.1f}"'
            f' fill="#457b9d"><title>{e(hour)} UTC: {n} build(s)</title></rect>'
        )
        if i % 3 == 0:
            bars.append(f'<text x="{x + 1:.1f}" y="{height - 5}" font-size="10">{e(hour)}</text>')
    return (
        f'<svg id="builds-per-hour" xmlns="http://www.w3.org/2000/svg" width="{width}"'
        f' height="{height}" role="img" aria-label="builds per hour, last {len(series)} hours">'
        f'{"".join(bars)}<text x="4" y="12" font-size="11">max {top}/h</text></svg>'
    )


def leaderboard_tables(board: Mapping[str, Sequence[Mapping[str, Any]]]) -> str:
    tally = ("Credit", "Valid rate", "Accepted", "Refused", "Results", "Build hours")

    def cells(r: Mapping[str, Any]) -> list[str]:
        return [
            td(r["credit"], True),
            td(percent(r["valid_rate"]), True),
            td(r["accepted"], True),
            td(r["refused"], True),
            td(r["results"], True),
            td(r["build_hours"], True),
        ]

    owners = table(
        ("#", "Owner", "Hosts", *tally),
        (
            [td(r["rank"], True), td(r["owner"]), td(r["hosts"], True), *cells(r)]
            for r in board["owners"]
        ),
        "owners",
    )
    hosts = table(
        ("#", "Host", "Owner", *tally),
        ([td(r["rank"], True), td(r["host"]), td(r["owner"]), *cells(r)] for r in board["hosts"]),
        "hosts",
    )
    return f"<h2>Owners</h2>{owners}<h2>Hosts</h2>{hosts}"


def builds_table(builds: Sequence[Mapping[str, Any]]) -> str:
    def agreed(b: Mapping[str, Any]) -> str:
        parts = [
            f"{e(t.get('arch'))}: {e(', '.join(map(str, t.get('agreeing', []))))}"
            f" <small>({e(t.get('rule'))})</small>"
            for t in b["tasks"]
        ]
        return "<td>" + ("<br>".join(parts) or "-") + "</td>"

    return table(
        ("Build", "N-V-R", "Owner", "Verdict", "Hosts that agreed", "Reason", "Finished"),
        (
            [
                td(b["build_id"], True),
                td(b["nvr"]),
                td(b["owner"]),
                f'<td class="{e(b["verdict"])}">{e(b["verdict"])}</td>',
                agreed(b),
                td(b["reason"]),
                td(b["finished_at"]),
            ]
            for b in builds
        ),
        "builds",
    )


def throttle_text(t: Mapping[str, Any]) -> str:
    if not t.get("known"):
        return '<span class="released">not engaged (never announced)</span>'
    if t["engaged"]:
        return (
            f'<span class="engaged">engaged</span> since {e(t["changed_at"])}: '
            f"{e(percent(t['bad_rate']))} bad results (threshold {e(percent(t['threshold']))})"
        )
    return f'<span class="released">released</span> since {e(t["changed_at"])}'


def overview(
    summary: Mapping[str, Any],
    board: Mapping[str, Sequence[Mapping[str, Any]]],
    builds: Sequence[Mapping[str, Any]],
) -> str:
    b = summary["builds"]
    facts = table(
        ("Figure", "Value"),
        [
            [td("Builds per hour (mean, last 24 h)"), td(summary["mean_builds_per_hour"], True)],
            [
                td("Builds complete / failed / open"),
                td(f"{b['complete']} / {b['failed']} / {b['open']}", True),
            ],
            [td("Disagreement rate"), td(percent(summary["disagreement_rate"]), True)],
            [td("Throttle"), f"<td>{throttle_text(summary['throttle'])}</td>"],
        ],
        "summary",
    )
    chart = builds_chart(summary["builds_per_hour"])
    return page(
        "",
        f"{facts}<h2>Builds per hour</h2>{chart}{leaderboard_tables(board)}"
        f"<h2>Recent builds</h2>{builds_table(builds)}",
    )


def leaderboard(board: Mapping[str, Sequence[Mapping[str, Any]]]) -> str:
    return page("/leaderboard", leaderboard_tables(board))


def hosts(listing: Mapping[str, Any]) -> str:
    by_arch = listing["by_arch"]
    trusts = sorted({t for counts in by_arch.values() for t in counts})
    arch_table = table(
        ("Arch", *trusts),
        (
            [td(arch), *(td(counts.get(t, 0), True) for t in trusts)]
            for arch, counts in by_arch.items()
        ),
        "by-arch",
    )
    host_table = table(
        ("Host", "Owner", "State", "Trust", "Arches", "Last seen"),
        (
            [
                td(h["host"]),
                td(h["owner"]),
                td(h["state"]),
                td(h["trust"]),
                td(", ".join(h["arches"])),
                td(h["seen_at"]),
            ]
            for h in listing["hosts"]
        ),
        "hosts",
    )
    return page("/hosts", f"<h2>By arch and trust</h2>{arch_table}<h2>Every host</h2>{host_table}")


def queue(q: Mapping[str, Any]) -> str:
    if not q.get("available"):
        return page("/queue", f"<p>The queue is unavailable: {e(q.get('error'))}.</p>")
    tasks = table(
        ("Task state", "Tasks"),
        ([td(s), td(n, True)] for s, n in sorted(q["tasks"].items())),
        "tasks",
    )
    capacity = table(
        ("Host", "State", "Trust", "Open leases", "Free slots", "Max slots"),
        (
            [
                td(h.get("host")),
                td(h.get("state")),
                td(h.get("trust")),
                td(h.get("open_leases"), True),
                td(h.get("free_slots"), True),
                td(h.get("max_slots"), True),
            ]
            for h in q["hosts"]
        ),
        "capacity",
    )
    return page(
        "/queue",
        "<p>As the dispatcher counts it now.</p>"
        f"<h2>Tasks</h2>{tasks}<h2>Host capacity</h2>{capacity}",
    )


def builds(listing: Sequence[Mapping[str, Any]]) -> str:
    return page("/builds", builds_table(listing))


def packages(listing: Sequence[Mapping[str, Any]]) -> str:
    return page(
        "/packages",
        table(
            (
                "Package",
                "Builds",
                "Complete",
                "Failed",
                "Mean build s",
                "Mean task s",
                "Max task s",
                "Tasks verified",
                "Reproduced",
                "Not reproducible on",
            ),
            (
                [
                    td(p["package"]),
                    td(p["builds"], True),
                    td(p["complete"], True),
                    td(p["failed"], True),
                    td(p["mean_build_seconds"], True),
                    td(p["mean_task_seconds"], True),
                    td(p["max_task_seconds"], True),
                    td(p["tasks_verified"], True),
                    td(p["tasks_reproduced"], True),
                    td(", ".join(p["not_reproducible_arches"]) or None),
                ]
                for p in listing
            ),
            "packages",
        ),
    )
