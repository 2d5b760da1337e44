"""Pure RPM file helpers shared by the builder, verifier and collector.

No bus or database access here: only hashing, rpmkeys/rpmbuild calls and header reads.
Why the macros and digests look like this: the project's shared notes, build-and-limits.md §1-2.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import rpm

from services.common.errors import SkylineError

# Macros that make rebuilds of the same SRPM at the same _topdir byte-identical across hosts.
# Read-only so no caller can silently change what "honest" means for everyone else.
REPRODUCIBLE_MACROS: Mapping[str, str] = MappingProxyType(
    {
        "source_date_epoch_from_changelog": "1",
        "use_source_date_epoch_as_buildtime": "1",
        "clamp_mtime_to_source_date_epoch": "1",
        "_buildhost": "skyline",  # any constant; BUILDHOST is recorded in the header
    }
)

_CHUNK = 1024 * 1024


class RpmCheckError(SkylineError):
    """An RPM file is malformed or its header/payload digests do not match its bytes."""


class SrpmBuildError(SkylineError):
    """rpmbuild -bs failed; the message carries rpmbuild's output."""


@dataclass(frozen=True)
class RpmInfo:
    name: str
    version: str
    release: str
    epoch: int | None
    arch: str  # "src" for source packages, like Koji's rpminfo
    sourcerpm: str | None  # None for source packages

    @property
    def nvr(self) -> str:
        return f"{self.name}-{self.version}-{self.release}"


def sha256_file(path: Path | str) -> str:
    # hashlib uses SHA-NI via OpenSSL; coreutils sha256sum is ~3.5x slower here.
    h = hashlib.sha256()
    buf = bytearray(_CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def result_set_digest(entries: Iterable[tuple[str, str]]) -> str:
    """sha256 over `sha256sum`-style lines sorted by basename (build-and-limits.md §2 step 2)."""
    lines = "".join(f"{sha}  {name}\n" for name, sha in sorted(entries))
    return hashlib.sha256(lines.encode()).hexdigest()


def macro_args(macros: Mapping[str, str]) -> list[str]:
    """Turn a macro mapping into repeated `--define "name value"` arguments."""
    args: list[str] = []
    for name, value in macros.items():
        args += ["--define", f"{name} {value}"]
    return args


def tool_env() -> dict[str, str]:
    """Environment for rpm tools: C locale for parseable output.

    SOURCE_DATE_EPOCH is dropped because an inherited value overrides the changelog date
    (source_date_epoch_from_changelog only applies when the variable is unset).
    """
    env = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}
    env["LC_ALL"] = "C"
    return env


def check_rpm_digests(path: Path | str) -> None:
    """Check header and payload digests (not signatures: no keys needed)."""
    proc = subprocess.run(
        ["rpmkeys", "-K", "--nosignature", "--", str(path)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=tool_env(),
        check=False,
    )
    out = proc.stdout.decode(errors="replace").strip()
    if proc.returncode != 0:
        raise RpmCheckError(f"rpmkeys -K failed for {path} (rc={proc.returncode}): {out}")


def _text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return str(value)


def read_rpm_info(path: Path | str) -> RpmInfo:
    """Read NEVRA from a possibly untrusted file; garbage raises RpmCheckError, never crashes."""
    ts = rpm.TransactionSet()
    # Verify header digests but not signatures: builders have no keyring and results are unsigned.
    ts.setVSFlags(rpm._RPMVSF_NOSIGNATURES)
    with open(path, "rb") as f:
        try:
            hdr = ts.hdrFromFdno(f.fileno())
        except rpm.error as exc:
            raise RpmCheckError(f"{path}: {exc}") from exc
    name, version, release = (
        _text(hdr[t]) for t in (rpm.RPMTAG_NAME, rpm.RPMTAG_VERSION, rpm.RPMTAG_RELEASE)
    )
    if not name or not version or not release:
        raise RpmCheckError(f"{path}: header lacks name/version/release")
    epoch = hdr[rpm.RPMTAG_EPOCH]
    # RPMTAG_ARCH of an SRPM is the build host's arch; Koji and PathInfo call it "src".
    is_source = bool(hdr.isSource())
    arch = "src" if is_source else _text(hdr[rpm.RPMTAG_ARCH])
    if not arch:
        raise RpmCheckError(f"{path}: header lacks arch")
    return RpmInfo(
        name=name,
        version=version,
        release=release,
        epoch=int(epoch) if epoch is not None else None,
        arch=arch,
        sourcerpm=None if is_source else _text(hdr[rpm.RPMTAG_SOURCERPM]),
    )


_WROTE = re.compile(r"^Wrote: (.+\.src\.rpm)$", re.MULTILINE)


def make_srpm(spec: Path, out_dir: Path) -> Path:
    """Build an SRPM from `spec`, taking sources from the spec's directory.

    The SRPM records the *expanded* spec (including _topdir paths), so the same spec gives the
    same SRPM bytes only for the same out_dir; hosts must rebuild these exact bytes.
    """
    spec = spec.resolve()
    out_dir = out_dir.resolve()
    topdir = out_dir / ".srpm-topdir"
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = [
        "rpmbuild",
        "-bs",
        "--define",
        f"_sourcedir {spec.parent}",
        "--define",
        f"_topdir {topdir}",
        "--define",
        f"_srcrpmdir {out_dir}",
        *macro_args(REPRODUCIBLE_MACROS),
        str(spec),
    ]
    try:
        proc = subprocess.run(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=tool_env(),
            check=False,
        )
    finally:
        shutil.rmtree(topdir, ignore_errors=True)
    out = proc.stdout.decode(errors="replace")
    match = _WROTE.search(out)
    if proc.returncode != 0 or match is None:
        raise SrpmBuildError(f"rpmbuild -bs {spec} failed (rc={proc.returncode}):\n{out}")
    return Path(match.group(1))
