"""Agreement before acceptance, end to end: real rpmbuild, RabbitMQ and PostgreSQL, and builder
processes of different owners: an untrusted volunteer (vol-1, owner vera), a trusted one
(trusted-1, owner tom, trusted by an admin), a core host (local-builder-1, whose key is in the
registry's core_keys) and a cheat (cheat-1, owner mallory: the real agent with every build
tampered, tests/cheat_builder.py).

Which hosts are online decides who gets each lease, so each test takes hosts on and off line:
the first lease goes to the only host online, and the replicas to the hosts started after the
verifier asked for them.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from skyline_messages import (
    BuildCompleteV1,
    BuildStoredV1,
    HostTrustV1,
    TaskFinishedV1,
    TaskLeasedV1,
    TaskReplicateV1,
    TaskVerifiedV1,
)

from services.cli.localsystem import LocalSystem
from services.common.rpmfiles import make_srpm, sha256_file
from tests.e2e.test_walking_skeleton import build_id_of, publish, request_body, request_message
from tests.system import LEASE_SECONDS, Tap, open_tap
from tests.tampering import BACKDOOR

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
CORE = "local-builder-1"
BUILDERS: dict[str, dict[str, object]] = {
    CORE: {},
    "vol-1": {"owner": "vera"},
    "trusted-1": {"owner": "tom"},
    "cheat-1": {"owner": "mallory", "program": [str(REPO / "tests" / "cheat_builder.py")]},
}
SPEC = """\
Name:           {name}
Version:        1.0
Release:        1
Summary:        Skyline agreement test package
License:        MIT
BuildArch:      noarch
{preamble}
%description
Test package.

%install
mkdir -p %{{buildroot}}%{{_datadir}}/%{{name}}
echo hello > %{{buildroot}}%{{_datadir}}/%{{name}}/hello
{install}
%files
%{{_datadir}}/%{{name}}

%changelog
* Mon Jan 01 2024 Skyline Developers <skyline@example.invalid> - 1.0-1
- Initial package
"""


def package(tmp: Path, name: str, preamble: str = "", install: str = "") -> Path:
    spec = tmp / name / f"{name}.spec"
    spec.parent.mkdir(parents=True)
    spec.write_text(SPEC.format(name=name, preamble=preamble, install=install))
    return make_srpm(spec, tmp / name / "out")


@pytest.fixture(scope="module")
def farm() -> Iterator[LocalSystem]:
    state = Path(tempfile.mkdtemp(prefix="skyline-agreement-"))
    local = LocalSystem(state, fast_db=True)
    try:
        local.up(builders=1, progress=lambda line: None, lease_seconds=LEASE_SECONDS)
        yield local
    finally:
        local.down(progress=lambda line: None)
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture
async def farm_tap(farm: LocalSystem) -> AsyncIterator[Tap]:
    async with open_tap(farm.monitor_url) as seen:
        yield seen


async def get_json(url: str, **headers: str) -> dict:
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as reply:
        assert reply.status == 200, await reply.text()
        return await reply.json()


async def queue_drained(farm: LocalSystem, queue: str, timeout: float = 60) -> None:
    """Wait until `queue` has no message ready or unacknowledged (its consumer handled all).
    rabbitmqctl answers from the queue itself, not from the management plugin's stale stats."""
    for _ in range(int(timeout * 2)):
        out = await asyncio.to_thread(
            farm.rabbitmq.ctl, "list_queues", "--quiet", "--no-table-headers", "name", "messages"
        )
        counts = dict(line.split("\t") for line in out.splitlines() if "\t" in line)
        if counts.get(queue) == "0":
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"{queue} still holds messages: {counts.get(queue)}")


async def online_only(farm: LocalSystem, *hosts: str, timeout: float = 90) -> None:
    """Stop every other builder and start these; wait until these are online and the
    dispatcher counts no free slot on any other host (a started host may be busy at once)."""
    for host in farm.builder_names():
        if host not in hosts:
            await asyncio.to_thread(farm.stop_process, host)
    for host in hosts:
        farm.start_builder(host, **BUILDERS[host])  # type: ignore[arg-type]
    queue_url = f"{farm.url('dispatcher')}/api/v1/queue"
    for _ in range(int(timeout * 5)):
        others = {
            h["host"]
            for h in (await get_json(queue_url))["hosts"]
            if h["free_slots"] > 0 and h["host"] not in hosts
        }
        online = all([await asyncio.to_thread(farm.host_online, h) for h in hosts])
        if online and not others:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"wanted only {hosts} online; others still free: {others}")


@pytest.fixture(scope="module")
def trusted_host(farm: LocalSystem) -> str:
    """trusted-1, enrolled as any volunteer and then trusted by an admin."""
    asyncio.run(trust_by_admin(farm))
    return "trusted-1"


async def trust_by_admin(farm: LocalSystem) -> None:
    await online_only(farm, "trusted-1")
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{farm.url('registry')}/api/v1/hosts/trusted-1/trust",
            json={"trust": "trusted", "reason": "known volunteer of the test farm"},
            headers={"Authorization": f"Bearer {farm.secret('registry-admin-token')}"},
        ) as reply,
    ):
        assert reply.status == 200, await reply.text()


async def until_waiting_says(farm: LocalSystem, build_id: int, text: str) -> None:
    """Wait until the dispatcher's status of the build gives `text` as why a task waits."""
    url = f"{farm.url('dispatcher')}/api/v1/builds/{build_id}"
    for _ in range(300):
        status = await get_json(url)
        if any(text in (t.get("waiting") or "") for t in status["tasks"]):
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"build {build_id} never said {text!r}: {status}")


async def submit(farm: LocalSystem, srpm: Path, *, scratch: bool) -> tuple[int, object]:
    request = request_message(farm, await request_body(farm, srpm, scratch=scratch))
    await publish(farm, request)
    return await build_id_of(farm, request), request


def agreeing(complete: BuildCompleteV1) -> tuple[set[str], str]:
    (task,) = complete.tasks
    return set(task["agreeing"]), str(task["rule"])  # type: ignore[call-overload]


async def test_official_build_from_a_volunteer_waits_for_an_independent_replica(
    farm: LocalSystem, farm_tap: Tap, trusted_host: str, tmp_path: Path
) -> None:
    srpm = package(tmp_path, "skyline-official")
    await online_only(farm, "vol-1")
    build_id, _ = await submit(farm, srpm, scratch=False)
    first = await farm_tap.wait(TaskLeasedV1, timeout=60, build_id=build_id)
    assert first.body["host"] == "vol-1"
    replicate = await farm_tap.wait(TaskReplicateV1, timeout=120, build_id=build_id)
    assert replicate.body["purpose"] == "replica"
    assert "vera" in replicate.body["exclude_owners"]
    assert replicate.body["min_trust"] in ("trusted", "core")
    # Waiting, and saying so; nothing of the lone result is stored.
    await until_waiting_says(farm, build_id, "waiting for agreement")
    assert farm_tap.of(BuildStoredV1, build_id=build_id) == []

    await online_only(farm, "vol-1", trusted_host)
    complete = await farm_tap.wait(BuildCompleteV1, timeout=180, build_id=build_id)
    hosts, rule = agreeing(complete)
    assert hosts == {"vol-1", "trusted-1"}
    assert rule == "quorum"
    replica = farm_tap.of(TaskLeasedV1, build_id=build_id, host="trusted-1")
    assert [m.body.get("purpose") for m in replica] == ["replica"]
    # Stored once: one build.stored, one file, with the digest both hosts attested.
    (stored,) = farm_tap.of(BuildStoredV1, build_id=build_id)
    (rpm,) = [f for f in stored.body["files"] if f["name"].endswith(".noarch.rpm")]
    attested = {
        f["sha256"]
        for m in farm_tap.of(TaskFinishedV1, build_id=build_id)
        for f in m.body["files"]
        if f["name"] == rpm["name"]
    }
    assert attested == {rpm["sha256"]}
    assert sha256_file(farm.koji_topdir / rpm["path"]) == rpm["sha256"]


async def test_cheat_is_caught_at_its_first_tampered_build(
    farm: LocalSystem, farm_tap: Tap, trusted_host: str, tmp_path: Path
) -> None:
    srpm = package(tmp_path, "skyline-bait")
    await online_only(farm, "cheat-1")
    build_id, _ = await submit(farm, srpm, scratch=True)
    await farm_tap.wait(TaskReplicateV1, timeout=120, build_id=build_id, purpose="replica")
    await online_only(farm, "cheat-1", trusted_host)
    tiebreak = await farm_tap.wait(
        TaskReplicateV1, timeout=180, build_id=build_id, purpose="tiebreak"
    )
    assert tiebreak.body["min_trust"] == "core"
    assert farm_tap.of(BuildStoredV1, build_id=build_id) == []
    await online_only(farm, trusted_host, CORE)

    complete = await farm_tap.wait(BuildCompleteV1, timeout=180, build_id=build_id)
    hosts, rule = agreeing(complete)
    assert hosts == {"trusted-1", CORE} and rule == "core"
    verified = await farm_tap.wait(TaskVerifiedV1, build_id=build_id, status="succeeded")
    assert [o["host"] for o in verified.body["odd_ones_out"]] == ["cheat-1"]
    assert BACKDOOR in verified.body["odd_ones_out"][0]["detail"]
    # Nothing of the cheat's is stored: the stored RPM has no backdoor.
    (stored,) = farm_tap.of(BuildStoredV1, build_id=build_id)
    assert stored.body["host"] != "cheat-1"
    (rpm,) = [f for f in stored.body["files"] if f["name"].endswith(".noarch.rpm")]
    listing = subprocess.run(
        ["rpm", "-qpl", str(farm.koji_topdir / rpm["path"])],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert BACKDOOR not in listing
    # Flagged, and its trust dropped: published, and listed by the registry.
    drop = await farm_tap.wait(HostTrustV1, timeout=60, host="cheat-1")
    assert (drop.body["old"], drop.body["new"]) == ("untrusted", "quarantined")
    history = await get_json(f"{farm.url('registry')}/api/v1/hosts/cheat-1/trust")
    assert history["trust"] == "quarantined"


async def test_builds_differing_only_in_build_time_and_host_agree(
    farm: LocalSystem, farm_tap: Tap, trusted_host: str, tmp_path: Path
) -> None:
    # Overrides the builder's reproducible settings: the real time and a random build host.
    preamble = (
        "%global use_source_date_epoch_as_buildtime 0\n"
        "%global _buildhost %(head -c8 /proc/sys/kernel/random/uuid).example\n"
    )
    srpm = package(tmp_path, "skyline-varies", preamble=preamble)
    await online_only(farm, "vol-1")
    build_id, _ = await submit(farm, srpm, scratch=True)
    await farm_tap.wait(TaskReplicateV1, timeout=120, build_id=build_id)
    await online_only(farm, "vol-1", trusted_host)
    complete = await farm_tap.wait(BuildCompleteV1, timeout=180, build_id=build_id)
    assert agreeing(complete)[0] == {"vol-1", "trusted-1"}
    digests = {m.body["result_digest"] for m in farm_tap.of(TaskFinishedV1, build_id=build_id)}
    assert len(digests) == 2, "the two builds were byte-identical: nothing was compared"
    verified = await farm_tap.wait(TaskVerifiedV1, build_id=build_id, status="succeeded")
    assert verified.body.get("odd_ones_out", []) == []


async def test_package_writing_the_build_time_is_recorded_not_reproducible(
    farm: LocalSystem, farm_tap: Tap, trusted_host: str, tmp_path: Path
) -> None:
    stamp = "date +%%s%%N > %{buildroot}%{_datadir}/%{name}/stamp\n"
    srpm = package(tmp_path, "skyline-stamp", install=stamp)
    await online_only(farm, "vol-1")
    build_id, _ = await submit(farm, srpm, scratch=True)
    await farm_tap.wait(TaskReplicateV1, timeout=120, build_id=build_id, purpose="replica")
    await online_only(farm, "vol-1", trusted_host)
    await farm_tap.wait(TaskReplicateV1, timeout=180, build_id=build_id, purpose="tiebreak")
    await online_only(farm, "vol-1", trusted_host, CORE)
    complete = await farm_tap.wait(BuildCompleteV1, timeout=180, build_id=build_id)
    assert agreeing(complete) == ({CORE}, "not-reproducible")
    verified = await farm_tap.wait(TaskVerifiedV1, build_id=build_id, status="succeeded")
    assert verified.body["not_reproducible"] is True
    assert verified.body.get("odd_ones_out", []) == []
    (stored,) = farm_tap.of(BuildStoredV1, build_id=build_id)
    assert stored.body["host"] == CORE
    # Nobody blamed: once the registry has taken the verdict in, no trust changed.
    await queue_drained(farm, "skyline.registry")
    assert [m for m in farm_tap.of(HostTrustV1) if m.body["host"] in ("vol-1", "trusted-1")] == []
    for host, level in (("vol-1", "untrusted"), ("trusted-1", "trusted")):
        assert (await get_json(f"{farm.url('registry')}/api/v1/hosts/{host}"))["trust"] == level
