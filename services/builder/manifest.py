"""The build environment as evidence: what built the package, sent with the attestation.

The verifier compares two hosts' manifests before blaming one for a disagreement, and admins
can register known-good ones. For the rpmbuild backend it names each tool the build uses
(found on the build's PATH, as the build finds it) with its version line and the sha256 of the
file that runs, plus the compiler's own programs (cc1, its libc), the OS release, the machine,
the agent's version and the sandbox kind. The bounds are TaskFinishedV1's: at most
MAX_ENTRIES entries of at most MAX_VALUE characters.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

from services.common.rpmfiles import sha256_file, tool_env

__all__ = ["MAX_ENTRIES", "MAX_VALUE", "TOOLS", "environment_manifest", "manifest_digest"]

MAX_ENTRIES = 200  # TaskFinishedV1.env_manifest maxProperties
MAX_VALUE = 500  # and each value's maxLength
# Tool -> its version command's arguments (None: the tool has no version option, the digest
# alone says which one it is). What rpmbuild and a typical %build run.
TOOLS: Mapping[str, list[str] | None] = {
    "rpm": ["--version"],
    "rpmbuild": ["--version"],
    "debugedit": ["--version"],
    "gcc": ["-dumpfullversion"],
    "g++": ["-dumpfullversion"],
    "cpp": ["-dumpfullversion"],
    "as": ["--version"],
    "ld": ["--version"],
    "ar": ["--version"],
    "strip": ["--version"],
    "objcopy": ["--version"],
    "objdump": ["--version"],
    "ldd": ["--version"],  # glibc's version
    "make": ["--version"],
    "bash": ["--version"],
    "sh": None,
    "sed": ["--version"],
    "awk": ["--version"],
    "grep": ["--version"],
    "find": ["--version"],
    "tar": ["--version"],
    "cpio": ["--version"],
    "gzip": ["--version"],
    "bzip2": None,
    "xz": ["--version"],
    "zstd": ["--version"],
    "patch": ["--version"],
    "file": ["--version"],
    "perl": ["-e", "print $^V"],
    "python3": ["--version"],
}
# The compiler's own programs and the C library it links against: `gcc -print-...=<name>`.
GCC_PARTS = {"cc1": "-print-prog-name=cc1", "libc": "-print-file-name=libc.so.6"}
VERSION_TIMEOUT = 30


def environment_manifest(*, path: str | None = None, sandbox: str = "none") -> dict[str, str]:
    """The manifest for builds that run with this PATH (default: the agent's) in this sandbox."""
    search = path if path is not None else tool_env().get("PATH", os.defpath)
    manifest: dict[str, str] = {}
    for tool, version_args in TOOLS.items():
        exe = shutil.which(tool, path=search)
        if exe is None:
            continue
        real = os.path.realpath(exe)
        manifest[f"{tool}.sha256"] = _digest(real)
        if version_args is not None and (v := _first_line([exe, *version_args])):
            manifest[f"{tool}.version"] = v
    if gcc := shutil.which("gcc", path=search):
        for part, flag in GCC_PARTS.items():
            found = _first_line([gcc, flag])
            if found and os.path.isabs(found) and os.path.isfile(found):
                manifest[f"{part}.sha256"] = _digest(os.path.realpath(found))
    if sandbox == "bwrap" and (bwrap := shutil.which("bwrap")):
        manifest["bwrap.version"] = _first_line([bwrap, "--version"]) or "unknown"
    if sandbox == "mock" and (mock := shutil.which("mock")):
        manifest["mock.version"] = _first_line([mock, "--version"]) or "unknown"
    if (os_id := _os_release()) is not None:
        manifest["os"] = os_id
    manifest["machine"] = platform.machine()
    manifest["agent"] = f"skyline {_agent_version()}"
    manifest["sandbox"] = sandbox
    return _bounded(manifest)


def manifest_digest(manifest: Mapping[str, str]) -> str:
    canonical = json.dumps(dict(manifest), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _bounded(manifest: dict[str, str]) -> dict[str, str]:
    # Never more than the schema allows: a refused attestation would be worse than a short one.
    items = sorted(manifest.items())[:MAX_ENTRIES]
    return {k[:MAX_VALUE]: v[:MAX_VALUE] for k, v in items}


def _digest(real_path: str) -> str:
    try:
        st = os.stat(real_path)
    except OSError:
        return "unreadable"
    return _cached_digest(real_path, st.st_ino, st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _cached_digest(real_path: str, ino: int, size: int, mtime_ns: int) -> str:
    """Digest keyed by the file's identity: a replaced tool is hashed again."""
    try:
        return sha256_file(real_path)
    except OSError:
        return "unreadable"


def _first_line(cmd: list[str]) -> str | None:
    try:
        proc = subprocess.run(
            cmd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            env=tool_env(),
            timeout=VERSION_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = proc.stdout.decode(errors="replace").strip().splitlines()
    return lines[0].strip() if proc.returncode == 0 and lines else None


def _os_release(path: Path = Path("/etc/os-release")) -> str | None:
    try:
        text = path.read_text()
    except OSError:
        return None
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip()] = value.strip().strip("\"'")
    if "ID" not in fields:
        return None
    return f"{fields['ID']} {fields.get('VERSION_ID', '')}".strip()


@functools.cache
def _agent_version() -> str:
    try:
        return importlib.metadata.version("skyline")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
