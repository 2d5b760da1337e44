"""The environment manifest: the same on two builders of one machine, different for another
compiler, and always within TaskFinishedV1's bounds."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from skyline_messages import TaskFinishedV1, TaskLeasedV1

from services.builder import manifest, runner

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")

REPO = Path(__file__).parents[3]
PROBE = (
    "import json, sys\n"
    "from services.builder.manifest import environment_manifest\n"
    "print(json.dumps(environment_manifest(path=sys.argv[1] or None, sandbox='bwrap')))\n"
)


def builder_manifest(path: str = "") -> dict[str, str]:
    """The manifest as a separate builder process computes it (nothing cached in common)."""
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, path],
        cwd=REPO,
        capture_output=True,
        check=True,
        timeout=120,
    )
    return json.loads(proc.stdout)


def test_two_builders_on_one_machine_agree() -> None:
    a, b = builder_manifest(), builder_manifest()
    assert a == b
    assert manifest.manifest_digest(a) == manifest.manifest_digest(b)
    # The tools that shape the output are named with their digests, and the context.
    for key in ("gcc.sha256", "cc1.sha256", "ld.sha256", "rpmbuild.sha256", "rpmbuild.version"):
        assert key in a, sorted(a)
    assert all(len(a[k]) == 64 for k in a if k.endswith(".sha256"))
    assert a["sandbox"] == "bwrap"
    assert a["agent"].startswith("skyline ")
    assert a["machine"] == os.uname().machine


def test_a_different_compiler_wrapper_changes_the_manifest(tmp_path: Path) -> None:
    wrappers = tmp_path / "bin"
    wrappers.mkdir()
    gcc = wrappers / "gcc"
    gcc.write_text(f'#!/bin/sh\nexec {shutil.which("gcc")} "$@"\n')
    gcc.chmod(0o755)
    path = os.environ.get("PATH", os.defpath)
    plain = builder_manifest(path)
    wrapped = builder_manifest(f"{wrappers}:{path}")
    assert plain != wrapped
    assert manifest.manifest_digest(plain) != manifest.manifest_digest(wrapped)
    # Only the compiler driver differs: the wrapper runs the same cc1 and links the same libc.
    assert {k for k in plain.keys() | wrapped.keys() if plain.get(k) != wrapped.get(k)} == {
        "gcc.sha256"
    }


def test_manifest_fits_the_attestation() -> None:
    env = manifest.environment_manifest(sandbox="none")
    assert 0 < len(env) <= manifest.MAX_ENTRIES
    assert all(
        len(k) <= manifest.MAX_VALUE and len(v) <= manifest.MAX_VALUE for k, v in env.items()
    )
    lease = {
        "task_id": 1,
        "build_id": 1,
        "lease_id": "00000000-0000-4000-8000-000000000001",
        "host": "h1",
        "arch": "noarch",
        "nvr": "a-1-1",
    }
    body = runner.attestation(
        TaskLeasedV1(body=lease),
        status="failed",
        srpm_sha256="0" * 64,
        rpms=[],
        logs=[],
        env_manifest=env,
        duration=1.0,
        failure="timeout",
    )
    body.update(signed_at="2024-01-01T00:00:00+00:00", signature="A" * 86 + "==")
    TaskFinishedV1(body=body).validate()
    assert TaskFinishedV1(body=body).failure == "timeout"


def test_bounds_are_enforced() -> None:
    big = {f"k{i:03}": "x" * 900 for i in range(300)}
    bounded = manifest._bounded(big)
    assert len(bounded) == manifest.MAX_ENTRIES
    assert all(len(v) == manifest.MAX_VALUE for v in bounded.values())
