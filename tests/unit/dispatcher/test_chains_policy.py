"""Chain builds' pure policy (services/dispatcher/chains.py)."""

from __future__ import annotations

from services.dispatcher import chains


def link(name: str, *after: int) -> dict:
    return {"srpm_url": f"https://h/{name}.src.rpm", "after": list(after)}


def test_links_may_come_only_after_earlier_links() -> None:
    assert chains.refusal([link("a-1-1"), link("b-1-1", 0), link("c-1-1", 0, 1)]) is None
    assert chains.refusal([link("a-1-1", 0)]) == (
        "link 0 comes after link 0, which is not an earlier link"
    )
    assert chains.refusal([link("a-1-1"), link("b-1-1", 5)]).startswith("link 1 comes after link 5")


def test_a_link_must_name_an_srpm() -> None:
    assert chains.refusal([link("a-1-1"), {"srpm_url": "https://h/x.rpm"}]) == (
        "link 1: 'https://h/x.rpm' is not an N-V-R.src.rpm file name"
    )
    assert chains.link_nvr("https://h/p/foo-bar-1.2-3.fc41.src.rpm") == "foo-bar-1.2-3.fc41"
    assert chains.link_nvr("https://h/foo-1.2-3.x86_64.rpm") is None


def test_waiting_names_the_links_waited_for() -> None:
    assert chains.waiting(["a-1-1"]) == "waiting for chain link a-1-1"
    assert chains.waiting([f"p{i}-1-1" for i in range(5)]) == (
        "waiting for chain link p0-1-1, p1-1-1, p2-1-1 and 2 more"
    )


def test_a_failed_links_reason_names_it_and_stays_bounded() -> None:
    assert chains.failed_because("a-1-1", 7, "noarch build failed on core-1") == (
        "chain link a-1-1 (build 7) failed: noarch build failed on core-1"
    )
    long = chains.failed_because("a-1-1", 7, "x" * 5000)
    assert len(long) == chains.REASON_MAX and long.endswith("…")
