"""skyline.build.* messages."""

from __future__ import annotations

import pytest
from schema_support import (
    DROP,
    NVR,
    SHA,
    assert_invalid,
    assert_valid,
    check_message,
    example,
    mutated,
    param_id,
    required_only,
)
from skyline_messages import (
    BuildChainRequestV1,
    BuildCompleteV1,
    BuildFailedV1,
    BuildQueuedV1,
    BuildRequestV1,
    BuildStoredV1,
)

CLASSES = [BuildRequestV1, BuildQueuedV1, BuildStoredV1, BuildCompleteV1, BuildFailedV1]
OWNER = (["alice"], ["skyline-hello"])  # usernames, packages of every example


@pytest.mark.parametrize(
    ("cls", "body", "summary"),
    [
        (
            BuildRequestV1,
            example(BuildRequestV1),
            f"alice requested a scratch build of {NVR}.src.rpm for x86_64, aarch64",
        ),
        (
            BuildRequestV1,
            required_only(BuildRequestV1),
            f"alice requested a build of {NVR}.src.rpm for x86_64, aarch64",
        ),
        (BuildQueuedV1, example(BuildQueuedV1), f"build 7 of {NVR} queued for x86_64, aarch64"),
        (
            BuildStoredV1,
            example(BuildStoredV1),
            f"stored 2 file(s) of {NVR} (x86_64, built by builder-01)",
        ),
        (
            BuildStoredV1,
            mutated(example(BuildStoredV1), "files", []),
            f"stored 0 file(s) of {NVR} (x86_64, built by builder-01)",
        ),
        (BuildCompleteV1, example(BuildCompleteV1), f"build 7 of {NVR} completed"),
        (
            BuildFailedV1,
            example(BuildFailedV1),
            f"build 7 of {NVR} failed: no host accepted the task",
        ),
        (
            BuildFailedV1,
            required_only(BuildFailedV1),
            f"build 7 of {NVR} failed: no host accepted the task",
        ),
    ],
    ids=param_id,
)
def test_valid_message(cls, body, summary):
    check_message(cls, body, summary, "alice", *OWNER)


def test_request_packages_come_from_the_srpm_file_name():
    body = mutated(
        example(BuildRequestV1), "srpm_url", "http://h.example/a/b/foo-bar-2.3-4.src.rpm"
    )
    check_message(
        BuildRequestV1,
        mutated(body, "owner", "bob.smith"),
        "bob.smith requested a scratch build of foo-bar-2.3-4.src.rpm for x86_64, aarch64",
        "bob.smith",
        ["bob.smith"],
        ["foo-bar"],
    )


@pytest.mark.parametrize(
    "url",
    [
        f"https://src.example.org/{NVR}.src.rpm",
        "http://localhost:8080/up/foo-bar-2.3-4.src.rpm",
        "https://h.example/python3-foo_bar-1.0~rc1-0.1.fc41.src.rpm",
        "https://h.example/x-1^git20240101-3.el9.src.rpm",
    ],
)
def test_request_srpm_url_accepted(url):
    assert_valid(BuildRequestV1, mutated(example(BuildRequestV1), "srpm_url", url))


@pytest.mark.parametrize(
    "nvr",
    [NVR, "foo-bar-2.3-4", "python3-foo_bar-1.0~rc1-0.1.fc41", "x-1^git20240101-3.el9", "a-1-1"],
)
@pytest.mark.parametrize("cls", [BuildQueuedV1, BuildStoredV1, BuildCompleteV1, BuildFailedV1])
def test_nvr_accepted(cls, nvr):
    assert_valid(cls, mutated(example(cls), "nvr", nvr))


BAD_SHA = ["A" * 64, "a" * 63, "a" * 65, "g" * 64, SHA + "\n", ""]
BAD_NVR = ["skyline-hello", "hello-1.0", "a/b-1-1", "foo-1-1 ", "..-1-1", "foo-1..2-1", NVR + "\n"]
BAD_URL = [
    f"ftp://src.example.org/{NVR}.src.rpm",
    f"file:///tmp/{NVR}.src.rpm",
    f"/tmp/{NVR}.src.rpm",
    f"https://{NVR}.src.rpm",
    "https://h.example/skyline-hello.src.rpm",
    "https://h.example/hello-1.0.src.rpm",
    f"https://h.example/{NVR}.x86_64.rpm",
    f"https://h.example/{NVR}.src.rpm?download=1",
    f"https://h.example/{NVR}.src.rpm/",
    f"https://h.example/a b/{NVR}.src.rpm",
    f"https://h.example/{NVR}.src.rpm\n",
]
BAD_FILE_NAME = ["../evil.rpm", "..", "..evil.rpm", ".hidden", "sub/x.rpm", "/etc/passwd", "a b"]
BAD_FILE_NAME += ["", "x.rpm\n", "x" * 256]
BAD_PATH = ["/etc/passwd", "../../etc/passwd", "packages/../../x", "packages/..", "a b", "x\n"]
BAD_HOST = ["builder.example.org", "Builder01", "-builder", "builder_01", "", "b" * 64, "b\n"]
BAD_USER = ["", "-alice", ".alice", "al ice", "alice/x", "a" * 65, "alice\n"]

INVALID = [
    *[(BuildRequestV1, "srpm_sha256", v) for v in BAD_SHA],
    *[(BuildRequestV1, "srpm_url", v) for v in BAD_URL],
    (BuildRequestV1, "arches", []),
    (BuildRequestV1, "arches", ["sparc64"]),
    (BuildRequestV1, "arches", ["x86_64", "x86_64"]),
    (BuildRequestV1, "arches", ["src"]),
    (BuildRequestV1, "arches", "x86_64"),
    *[(BuildRequestV1, "owner", v) for v in BAD_USER],
    (BuildRequestV1, "scratch", "yes"),
    (BuildRequestV1, "release", "F41"),
    (BuildRequestV1, "release", "../f41"),
    (BuildRequestV1, "release", "f41\n"),
    (BuildRequestV1, "priority", 1001),
    (BuildRequestV1, "priority", -1),
    (BuildQueuedV1, "build_id", 0),
    (BuildQueuedV1, "build_id", "7"),
    (BuildQueuedV1, "build_id", True),
    (BuildQueuedV1, "srpm_sha256", "A" * 64),
    *[(BuildQueuedV1, "nvr", v) for v in BAD_NVR],
    (BuildQueuedV1, "tasks", []),
    (BuildQueuedV1, "tasks.0.arch", "sparc64"),
    (BuildQueuedV1, "tasks.0.task_id", 0),
    (BuildQueuedV1, "tasks.0.host", "builder-01"),
    (BuildQueuedV1, "tasks.0.arch", DROP),
    (BuildStoredV1, "arch", "sparc64"),
    *[(BuildStoredV1, "host", v) for v in BAD_HOST],
    *[(BuildStoredV1, "files.0.name", v) for v in BAD_FILE_NAME],
    *[(BuildStoredV1, "files.0.path", v) for v in BAD_PATH],
    *[(BuildStoredV1, "files.0.sha256", v) for v in BAD_SHA],
    (BuildStoredV1, "files.0.size", -1),
    (BuildStoredV1, "files.0.arch", "x" * 33),
    (BuildStoredV1, "files.0.extra", 1),
    (BuildStoredV1, "files.0.path", DROP),
    *[(BuildCompleteV1, "nvr", v) for v in BAD_NVR],
    (BuildCompleteV1, "files.1.name", "../build.log"),
    (BuildCompleteV1, "files.1.path", "../../build.log"),
    (BuildFailedV1, "failed_arches", ["sparc64"]),
    (BuildFailedV1, "reason", "x" * 2001),
    (BuildFailedV1, "owner", "al ice"),
]


@pytest.mark.parametrize(("cls", "path", "value"), INVALID, ids=param_id)
def test_invalid_body(cls, path, value):
    assert_invalid(cls, mutated(example(cls), path, value))


def test_chain_request_names_its_links_and_packages():
    msg = BuildChainRequestV1(
        body=example(BuildChainRequestV1), topic=BuildChainRequestV1.topic_for("alice")
    )
    msg.validate()
    assert (msg.requester, msg.owner) == ("alice", "alice")
    assert msg.srpm_names == [f"{NVR}.src.rpm", "skyline-user-1.0-1.fc41.src.rpm"]
    assert msg.summary == (
        f"alice requested a chain of 2: {NVR}.src.rpm -> skyline-user-1.0-1.fc41.src.rpm"
    )
    assert msg.packages == ["skyline-hello", "skyline-user"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("links", []),
        (
            "links",
            [{"srpm_url": "file:///x-1-1.src.rpm", "srpm_sha256": SHA, "arches": ["noarch"]}],
        ),
        ("links", [{"srpm_url": "https://h/a-1-1.src.rpm", "srpm_sha256": SHA, "arches": []}]),
        (
            "links",
            [
                {
                    "srpm_url": "https://h/a-1-1.src.rpm",
                    "srpm_sha256": SHA,
                    "arches": ["noarch"],
                    "after": [-1],
                }
            ],
        ),
        (
            "links",
            [
                {
                    "srpm_url": "https://h/a-1-1.src.rpm",
                    "srpm_sha256": SHA,
                    "arches": ["noarch"],
                    "after": list(range(11)),
                }
            ],
        ),
        ("links", [example(BuildChainRequestV1)["links"][0]] * 101),
        ("priority", 1001),
    ],
)
def test_chain_request_bounds(field, value):
    assert_invalid(BuildChainRequestV1, mutated(example(BuildChainRequestV1), field, value))
