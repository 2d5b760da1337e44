"""Fixtures shared by the collector's integration tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.common.testing import build_test_package


@pytest.fixture(scope="session")
def rpms(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Real RPMs (rpmbuild) of the farm's packages, by N-V-R."""
    out = {}
    for name, version in (("hello", "1.0"), ("gcc", "14")):
        _, [rpm] = build_test_package(tmp_path_factory.mktemp(name), name=name, version=version)
        out[f"{name}-{version}-1"] = rpm
    return out
