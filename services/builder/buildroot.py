"""Buildroots from repositories: fetch the RPMs a lease's repositories offer for the build.

A chain build's later links need the earlier links' RPMs: the lease names RPM repositories
(made with createrepo_c by whoever serves them). The agent reads each repository's metadata
(repodata/repomd.xml, then its primary list), downloads every package for the build's arch or
noarch, checking each file against the sha256 the metadata names, and hands them to the build
(rpmbuild.build(buildroot_rpms=...)), which unpacks them inside the sandbox and lays them over
/usr. With mock, the repositories are added to the chroot instead (mock --addrepo).
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin

import aiohttp
from defusedxml import ElementTree

from . import client

__all__ = ["MAX_PACKAGES", "BuildrootError", "RepoPackage", "fetch_buildroot", "parse_primary"]

MAX_METADATA_BYTES = 64 * 1024**2  # repomd.xml and primary.xml(.gz), each (and unpacked)
MAX_PACKAGES = 200  # over all of a lease's repositories
MAX_RPM_BYTES = 2 * 1024**3
NS = {
    "repo": "http://linux.duke.edu/metadata/repo",
    "common": "http://linux.duke.edu/metadata/common",
}
_SAFE_HREF = re.compile(r"[A-Za-z0-9._+~^-]+(/[A-Za-z0-9._+~^-]+)*")


class BuildrootError(Exception):
    """A repository could not be read, or offered something it must not."""


@dataclass(frozen=True)
class RepoPackage:
    name: str
    arch: str
    href: str  # relative to the repository's base URL
    sha256: str


def _repo_url(base: str) -> str:
    return base if base.endswith("/") else base + "/"


def _checked_href(href: str) -> str:
    # Relative, no '..', no query: a repository serves only files below its own base URL.
    if not _SAFE_HREF.fullmatch(href) or ".." in href.split("/"):
        raise BuildrootError(f"repository metadata names an unsafe location {href!r}")
    return href


def primary_location(repomd: bytes) -> tuple[str, str]:
    """(href, sha256) of the primary package list named by repomd.xml."""
    try:
        root = ElementTree.fromstring(repomd)
    except Exception as exc:  # defusedxml raises several types for hostile XML
        raise BuildrootError(f"repomd.xml is not valid XML: {exc}") from None
    for data in root.findall("repo:data", NS):
        if data.get("type") != "primary":
            continue
        location = data.find("repo:location", NS)
        checksum = data.find("repo:checksum", NS)
        if location is None or checksum is None or checksum.get("type") != "sha256":
            raise BuildrootError("repomd.xml: the primary list needs a location and a sha256")
        return _checked_href(location.get("href", "")), (checksum.text or "").strip()
    raise BuildrootError("repomd.xml names no primary package list")


def parse_primary(xml: bytes, arch: str) -> list[RepoPackage]:
    """The packages of a primary list that a build for `arch` can use."""
    try:
        root = ElementTree.fromstring(xml)
    except Exception as exc:
        raise BuildrootError(f"primary.xml is not valid XML: {exc}") from None
    wanted = {arch, "noarch"}
    found: list[RepoPackage] = []
    for pkg in root.findall("common:package", NS):
        if pkg.get("type") != "rpm":
            continue
        name, pkg_arch = pkg.findtext("common:name", "", NS), pkg.findtext("common:arch", "", NS)
        if pkg_arch not in wanted or pkg_arch == "src":
            continue
        checksum = pkg.find("common:checksum", NS)
        location = pkg.find("common:location", NS)
        if checksum is None or location is None or checksum.get("type") != "sha256":
            raise BuildrootError(f"primary.xml: package {name} needs a location and a sha256")
        found.append(
            RepoPackage(
                name, pkg_arch, _checked_href(location.get("href", "")), checksum.text or ""
            )
        )
    return found


async def _get(session: aiohttp.ClientSession, url: str, dest: Path, sha256: str) -> None:
    got = await client.fetch_srpm(session, url, dest, sha256, MAX_RPM_BYTES, tries=3)
    if got != sha256:
        raise BuildrootError(f"{url} has sha256 {got}, but the repository says {sha256}")


async def _metadata(session: aiohttp.ClientSession, url: str) -> bytes:
    async with session.get(url) as resp:
        if resp.status != 200:
            raise BuildrootError(f"{url}: HTTP {resp.status}")
        data = await resp.content.read(MAX_METADATA_BYTES + 1)
    if len(data) > MAX_METADATA_BYTES:
        raise BuildrootError(f"{url} is larger than {MAX_METADATA_BYTES} bytes")
    return data


def _gunzip(data: bytes) -> bytes:
    with gzip.GzipFile(fileobj=io.BytesIO(data)) as f:
        out = f.read(MAX_METADATA_BYTES + 1)
    if len(out) > MAX_METADATA_BYTES:
        raise BuildrootError("primary.xml unpacks to more than the limit")
    return out


async def fetch_buildroot(
    session: aiohttp.ClientSession, repos: list[str], arch: str, dest: Path
) -> list[Path]:
    """Download the packages `repos` offer for `arch` into dest; raises BuildrootError."""
    await asyncio.to_thread(dest.mkdir, parents=True, exist_ok=True)
    rpms: list[Path] = []
    for i, repo in enumerate(repos):
        if not repo.startswith(("http://", "https://")):
            raise BuildrootError(f"repository {repo!r}: only http and https are allowed")
        base = _repo_url(repo)
        try:
            href, digest = primary_location(await _metadata(session, base + "repodata/repomd.xml"))
            raw = await _metadata(session, urljoin(base, href))
            if hashlib.sha256(raw).hexdigest() != digest:
                raise BuildrootError(f"{base}{href}: sha256 differs from repomd.xml's")
            xml = await asyncio.to_thread(_gunzip, raw) if href.endswith(".gz") else raw
        except aiohttp.ClientError as exc:
            raise BuildrootError(f"cannot read repository {repo}: {exc}") from None
        packages = parse_primary(xml, arch)
        if len(rpms) + len(packages) > MAX_PACKAGES:
            raise BuildrootError(f"the repositories offer more than {MAX_PACKAGES} packages")
        for pkg in packages:
            path = dest / f"{i}-{Path(pkg.href).name}"
            await _get(session, urljoin(base, pkg.href), path, pkg.sha256)
            rpms.append(path)
    return rpms
