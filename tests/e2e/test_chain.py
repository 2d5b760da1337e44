"""Chain builds through every service, with real rpmbuild in the builders' sandbox: link 2
BuildRequires a file only link 1's RPM provides and builds against the collector's
repository of link 1's stored RPMs; when link 2 fails, link 3 fails at once, naming it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from skyline_messages import BuildChainRequestV1, BuildCompleteV1, BuildFailedV1, TaskLeasedV1

from services.cli.localsystem import LocalSystem
from services.common.bus import Bus
from services.common.rpmfiles import make_srpm
from tests.e2e.test_walking_skeleton import request_body

pytestmark = pytest.mark.e2e

GREETING = "greetings from chain link one"


def spec(name: str, *, needs: str | None = None, fails: bool = False) -> str:
    """A noarch package providing /usr/share/<name>/greeting: its own text, or (`needs`) the
    greeting file of the package it BuildRequires, copied at build time."""
    mine = f"/usr/share/{name}/greeting"
    requires = f"BuildRequires: {needs}\n" if needs else ""
    build = f"cat {needs} > greeting\n" if needs else f"echo '{GREETING}' > greeting\n"
    if fails:
        build += "echo 'skyline-test: failing on purpose'; exit 1\n"
    return f"""Name: {name}
Version: 1.0
Release: 1
Summary: A chain link
License: MIT
BuildArch: noarch
{requires}
%description
A chain link.

%prep

%build
{build}
%install
mkdir -p %{{buildroot}}/usr/share/{name}
cp greeting %{{buildroot}}{mine}

%files
{mine}

%changelog
* Mon Jan 01 2024 Skyline Developers <skyline@example.invalid> - 1.0-1
- Test
"""


def srpm_of(tmp: Path, name: str, **kw: object) -> Path:
    folder = tmp / name
    folder.mkdir()
    (folder / f"{name}.spec").write_text(spec(name, **kw))  # type: ignore[arg-type]
    return make_srpm(folder / f"{name}.spec", folder / "srpm")


async def send_chain(system: LocalSystem, srpms: list[Path]) -> BuildChainRequestV1:
    links = []
    for i, srpm in enumerate(srpms):
        body = await request_body(system, srpm)
        link = {k: body[k] for k in ("srpm_url", "srpm_sha256", "arches")}
        if i:
            link["after"] = [i - 1]
        links.append(link)
    msg = BuildChainRequestV1(
        body={"links": links, "owner": system.owner, "scratch": True},
        topic=BuildChainRequestV1.topic_for(system.owner),
    )
    bus = Bus(system.url_of(system.owner))
    await bus.connect()
    try:
        await bus.publish(msg)
    finally:
        await bus.close()
    return msg


def file_in_rpm(rpm: Path, member: str) -> str:
    """One file's text from an RPM's payload (rpm2cpio's "newc" cpio archive, read here:
    cpio itself is not always installed)."""
    data = subprocess.run(["rpm2cpio", str(rpm)], check=True, capture_output=True).stdout
    at = 0
    while data[at : at + 6] == b"070701":
        fields = [int(data[at + 6 + 8 * i : at + 14 + 8 * i], 16) for i in range(13)]
        size, name_size = fields[6], fields[11]
        name = data[at + 110 : at + 110 + name_size - 1].decode()
        start = (at + 110 + name_size + 3) & ~3
        if name.lstrip(".") == member:
            return data[start : start + size].decode()
        at = (start + size + 3) & ~3
    raise AssertionError(f"{member} is not in {rpm.name}")


async def test_three_link_chain_builds_in_order_against_earlier_links(
    system: LocalSystem, tap, tmp_path: Path
) -> None:
    one = srpm_of(tmp_path, "skyline-chain-one")
    two = srpm_of(tmp_path, "skyline-chain-two", needs="/usr/share/skyline-chain-one/greeting")
    three = srpm_of(tmp_path, "skyline-chain-three", needs="/usr/share/skyline-chain-two/greeting")
    await send_chain(system, [one, two, three])

    done = {}
    for nvr in ("skyline-chain-one-1.0-1", "skyline-chain-two-1.0-1", "skyline-chain-three-1.0-1"):
        done[nvr] = await tap.wait(BuildCompleteV1, timeout=300, nvr=nvr)
    # Link 2's lease named link 1's repository, and its RPM holds link 1's file's text.
    lease2 = await tap.wait(TaskLeasedV1, timeout=5, nvr="skyline-chain-two-1.0-1")
    one_id = done["skyline-chain-one-1.0-1"].body["build_id"]
    assert lease2.body["repos"] == [f"{system.url('collector')}/api/v1/repos/builds/{one_id}/"]
    for nvr, member in (
        ("skyline-chain-two-1.0-1", "/usr/share/skyline-chain-two/greeting"),
        ("skyline-chain-three-1.0-1", "/usr/share/skyline-chain-three/greeting"),
    ):
        [rpm] = [f for f in done[nvr].body["files"] if f["name"].endswith(".noarch.rpm")]
        assert file_in_rpm(system.koji_topdir / rpm["path"], member).strip() == GREETING


async def test_a_failed_link_fails_the_next_one_naming_it(
    system: LocalSystem, tap, tmp_path: Path
) -> None:
    one = srpm_of(tmp_path, "skyline-chain-first")
    bad = srpm_of(
        tmp_path, "skyline-chain-bad", needs="/usr/share/skyline-chain-first/greeting", fails=True
    )
    last = srpm_of(tmp_path, "skyline-chain-last", needs="/usr/share/skyline-chain-bad/greeting")
    await send_chain(system, [one, bad, last])
    failed_bad = await tap.wait(BuildFailedV1, timeout=300, nvr="skyline-chain-bad-1.0-1")
    failed_last = await tap.wait(BuildFailedV1, timeout=30, nvr="skyline-chain-last-1.0-1")
    bad_id = failed_bad.body["build_id"]
    assert failed_last.body["reason"].startswith(
        f"chain link skyline-chain-bad-1.0-1 (build {bad_id}) failed: "
    )
    # The last link was never leased: it failed while it waited.
    assert tap.of(TaskLeasedV1, nvr="skyline-chain-last-1.0-1") == []
