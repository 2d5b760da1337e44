"""`skyline mass-rebuild --tag` against a real Koji hub and a real broker: the latest builds
of the tag become build requests at mass-rebuild priority, for their SRPMs as the hub serves
them."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest
from skyline_messages import BuildRequestV1

from services.cli import massrebuild
from services.cli.submit import SubmitError
from services.common.config import Config
from services.common.rpmfiles import sha256_file
from services.common.testing import build_test_package
from tests.kojihub import KojiHub
from tests.system import open_tap

pytestmark = pytest.mark.integration


def import_and_tag(hub: KojiHub, tmp: Path, tag: str, srpms: list[Path]) -> None:
    """Import SRPMs with the stock koji CLI, then tag them as an admin would."""
    session = hub.session()
    session.createTag(tag)
    for srpm in srpms:
        done = hub.cli(tmp, "import", "--create-build", str(srpm))
        assert done.returncode == 0, done.stdout + done.stderr
        name = srpm.name.rsplit("-", 2)[0]
        session.packageListAdd(tag, name, owner=hub.admin[0])
        session.tagBuildBypass(tag, srpm.name.removesuffix(".src.rpm"))


async def test_mass_rebuild_from_a_tag_requests_its_builds_sources(
    koji_hub: KojiHub, broker, config: Config, tmp_path: Path
) -> None:
    srpms = [
        build_test_package(tmp_path / name, name=name, version=version)[0]
        for name, version in (("skyline-mr-one", "1.0"), ("skyline-mr-two", "2.1"))
    ]
    # An older build of one of them, tagged too: only the latest is rebuilt.
    old = build_test_package(tmp_path / "old", name="skyline-mr-one", version="0.9")[0]
    await asyncio.to_thread(import_and_tag, koji_hub, tmp_path, "f99-rebuild", [old, *srpms])

    urls = await asyncio.to_thread(
        massrebuild.tagged_sources, koji_hub.url, koji_hub.topurl, "f99-rebuild"
    )
    assert urls == [
        f"{koji_hub.topurl}/packages/skyline-mr-one/1.0/1/src/skyline-mr-one-1.0-1.src.rpm",
        f"{koji_hub.topurl}/packages/skyline-mr-two/2.1/1/src/skyline-mr-two-2.1-1.src.rpm",
    ]

    packager = dataclasses.replace(config, amqp_url=await broker.owner("alice"))
    said: list[str] = []
    async with open_tap(await broker.monitor()) as tap:
        summary = await massrebuild.mass_rebuild(
            packager,
            [],
            arches=["noarch", "x86_64"],
            tag="f99-rebuild",
            hub_url=koji_hub.url,
            topurl=koji_hub.topurl,
            wait=False,
            say=said.append,
        )
        assert summary is None
        for url in urls:
            await tap.wait(BuildRequestV1, timeout=30, srpm_url=url)
    requests = {m.body["srpm_url"]: m for m in tap.of(BuildRequestV1)}
    assert set(requests) == set(urls)
    for url, srpm in zip(urls, srpms, strict=True):
        msg = requests[url]
        assert msg.topic == "skyline.build.request.alice"
        assert msg.body["srpm_sha256"] == sha256_file(srpm)  # the bytes the hub serves
        assert msg.body["priority"] == massrebuild.MASS_REBUILD_PRIORITY
        assert (msg.body["owner"], msg.body["arches"]) == ("alice", ["noarch", "x86_64"])
    assert said == ["f99-rebuild: 2 build(s) tagged", "published 2 build request(s) at priority 10"]


async def test_an_unknown_tag_is_a_clear_error(koji_hub: KojiHub, config: Config) -> None:
    with pytest.raises(SubmitError, match="cannot list tag 'no-such-tag'"):
        await massrebuild.mass_rebuild(
            config,
            [],
            arches=["noarch"],
            tag="no-such-tag",
            hub_url=koji_hub.url,
            topurl=koji_hub.topurl,
        )
