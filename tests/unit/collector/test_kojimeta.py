"""The CG metadata of a complete build, and how a build the hub has is recognised."""

from __future__ import annotations

from services.collector import kojimeta

PLAN = kojimeta.Plan(
    build_id=5,
    nvr="hello-1.0-1",
    owner="alice",
    start_time=100.0,
    end_time=200.0,
    buildroots=[
        kojimeta.Buildroot(1, "x86_64", "h1", {"mock": "6.0"}, ("h1", "h2"), "replicated"),
        kojimeta.Buildroot(2, "aarch64", "h3", {}),
        kojimeta.Buildroot(3, "s390x", "h4", {}),  # stored nothing: no buildroot for it
    ],
    outputs=[
        kojimeta.Output("hello-1.0-1.x86_64.rpm", "p/a.rpm", "a" * 64, 10, "x86_64", 1),
        kojimeta.Output("build.log", "p/x.log", "b" * 64, 3, "x86_64", 1),
        kojimeta.Output("build.log", "p/y.log", "c" * 64, 4, "aarch64", 2),
    ],
)


def test_metadata_has_one_buildroot_per_task_and_every_output_with_its_digest() -> None:
    md = kojimeta.metadata(PLAN, "skyline", "0.1.0")
    assert md["metadata_version"] == 0
    build = md["build"]
    assert (build["name"], build["version"], build["release"]) == ("hello", "1.0", "1")
    assert build["source"] is None and build["extra"]["skyline"]["build_id"] == 5
    assert [br["id"] for br in md["buildroots"]] == [1, 2]
    first = md["buildroots"][0]
    assert first["tools"] == [{"name": "mock", "version": "6.0"}]
    assert first["container"] == {"type": "mock", "arch": "x86_64"}
    assert first["extra"]["skyline"]["agreeing"] == ["h1", "h2"]
    rpm, log_x, log_a = md["output"]
    assert rpm == {
        "buildroot_id": 1,
        "filename": "hello-1.0-1.x86_64.rpm",
        "filesize": 10,
        "arch": "x86_64",
        "checksum": "a" * 64,
        "checksum_type": "sha256",
        "type": "rpm",
    }
    # Two logs of one name: kept apart in the upload folder and in data/logs/<arch>/.
    assert (log_x["relpath"], log_x["subdir"], log_x["buildroot_id"]) == ("x86_64", "x86_64", 1)
    assert (log_a["relpath"], log_a["subdir"], log_a["buildroot_id"]) == ("aarch64", "aarch64", 2)


def _hub_build(**changes: object) -> dict[str, object]:
    extra = {"skyline": {"build_id": 5, "owner": "alice", "files": PLAN.digests}}
    return {"id": 9, "state": 1, "cg_name": "skyline", "extra": extra, **changes}


def test_a_build_the_hub_has_is_recognised_only_when_it_is_this_one() -> None:
    assert kojimeta.already_imported(PLAN, None, "skyline") is None
    assert kojimeta.already_imported(PLAN, _hub_build(), "skyline") is True
    for failed_or_canceled in (3, 4):  # the hub lets an import replace those
        assert (
            kojimeta.already_imported(PLAN, _hub_build(state=failed_or_canceled), "skyline") is None
        )
    other_files = {"skyline": {"build_id": 5, "files": {"hello-1.0-1.x86_64.rpm": "d" * 64}}}
    for other in (
        _hub_build(extra=None),  # someone else's build
        _hub_build(cg_name="osbs"),
        _hub_build(extra=other_files),
        _hub_build(state=0),  # BUILDING: a reservation, not ours
    ):
        assert kojimeta.already_imported(PLAN, other, "skyline") is False
