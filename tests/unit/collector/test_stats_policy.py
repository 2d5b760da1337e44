"""Statistics policy and the dashboard's rendering: pure functions, no I/O."""

from __future__ import annotations

import datetime
import html.parser

from services.collector import dashboard, stats

NOW = datetime.datetime(2026, 1, 2, 10, 30, tzinfo=datetime.UTC)
XSS = '<script>alert("x")</script>'


def test_credit_is_for_accepted_hours_only_and_never_negative() -> None:
    assert stats.credit(1.5) == 150.0
    assert stats.credit(0) == 0.0
    assert stats.credit(-3) == 0.0


def test_valid_rate_is_none_until_something_was_judged() -> None:
    assert stats.rate(0, 0) is None
    assert stats.rate(3, 1) == 0.75
    assert stats.rate(0, 2) == 0.0


def test_hourly_series_fills_empty_hours_and_ends_with_the_current_hour() -> None:
    counts = {
        datetime.datetime(2026, 1, 2, 10, tzinfo=datetime.UTC): 4,
        datetime.datetime(2026, 1, 2, 8, tzinfo=datetime.UTC): 2,
        datetime.datetime(2026, 1, 1, 1, tzinfo=datetime.UTC): 9,  # older than the window
    }
    series = stats.hourly_series(counts, NOW, hours=4)
    assert series == [
        {"hour": "2026-01-02T07:00:00+00:00", "builds": 0},
        {"hour": "2026-01-02T08:00:00+00:00", "builds": 2},
        {"hour": "2026-01-02T09:00:00+00:00", "builds": 0},
        {"hour": "2026-01-02T10:00:00+00:00", "builds": 4},
    ]
    assert stats.per_hour(series) == 1.5


def test_hosts_by_arch_counts_each_arch_by_trust() -> None:
    hosts = [
        {"arches": ["x86_64", "noarch"], "trust": "trusted"},
        {"arches": ["x86_64"], "trust": "untrusted"},
        {"arches": ["aarch64"], "trust": "trusted"},
    ]
    assert stats.hosts_by_arch(hosts) == {
        "aarch64": {"trusted": 1},
        "noarch": {"trusted": 1},
        "x86_64": {"trusted": 1, "untrusted": 1},
    }


class _Tags(html.parser.HTMLParser):
    """Every start tag of a page, to prove no injected element got through."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.tags.append(tag)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(page: str) -> _Tags:
    parser = _Tags()
    parser.feed(page)
    return parser


def _row(name: str) -> dict:
    return {
        "rank": 1,
        "credit": 12.5,
        "valid_rate": 0.5,
        "accepted": 1,
        "refused": 1,
        "results": 2,
        "build_hours": 0.13,
        "host": name,
        "owner": name,
        "hosts": 1,
    }


def test_untrusted_names_are_text_never_markup() -> None:
    board = {"owners": [_row(XSS)], "hosts": [_row(XSS)]}
    builds = [
        {
            "build_id": 7,
            "nvr": f"{XSS}-1-1",
            "owner": XSS,
            "scratch": False,
            "verdict": "complete",
            "reason": XSS,
            "tasks": [{"task_id": 1, "arch": XSS, "agreeing": [XSS, "b2"], "rule": XSS}],
            "queued_at": None,
            "finished_at": None,
        }
    ]
    summary = {
        "builds_per_hour": stats.hourly_series({}, NOW),
        "mean_builds_per_hour": 0.0,
        "builds": {"open": 0, "complete": 1, "failed": 0},
        "disagreement_rate": None,
        "throttle": {
            "engaged": True,
            "known": True,
            "bad_rate": 0.5,
            "threshold": 0.2,
            "changed_at": XSS,
        },
    }
    page = dashboard.overview(summary, board, builds)
    parsed = _parse(page)
    assert "script" not in parsed.tags
    assert "<script>" not in page
    assert XSS in "".join(parsed.text)  # shown, as text


def test_the_queue_page_escapes_what_the_dispatcher_said() -> None:
    page = dashboard.queue(
        {"available": True, "tasks": {XSS: 1}, "hosts": [{"host": XSS, "state": XSS}]}
    )
    assert "script" not in _parse(page).tags
    unavailable = dashboard.queue({"available": False, "error": XSS})
    assert "script" not in _parse(unavailable).tags


def test_every_page_links_to_its_json_and_loads_nothing_from_elsewhere() -> None:
    page = dashboard.hosts({"hosts": [], "by_arch": {}})
    assert '<a href="/api/v1/stats/hosts">' in page
    for outside in ("http://", "https://", "<script", "<link", "@import"):
        assert outside not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")


def test_the_chart_has_a_bar_per_hour_scaled_to_the_busiest() -> None:
    series = [
        {"hour": f"2026-01-02T0{h}:00:00+00:00", "builds": n} for h, n in enumerate([0, 2, 4])
    ]
    svg = dashboard.builds_chart(series, width=300, height=120)
    assert svg.count("<rect") == 3
    assert 'height="100.0"' in svg  # the busiest hour fills the plot (120 - 20 for labels)
    assert 'height="50.0"' in svg
