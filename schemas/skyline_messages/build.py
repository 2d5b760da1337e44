"""Build-level messages: a packager's request and what becomes of it."""

from __future__ import annotations

from typing import Any

from fedora_messaging.message import ERROR, INFO

from .base import (
    ARCH,
    END,
    FILE_NAME,
    HOST,
    ID,
    NVR,
    SHA256,
    USER,
    PartyTopic,
    SkylineMessage,
    SourceRpm,
    body_schema,
    package_of,
)

ARCH_LIST = {"type": "array", "items": ARCH, "minItems": 1, "uniqueItems": True}
STORED_FILE = {
    "type": "object",
    "required": ["name", "path", "sha256", "size", "arch"],
    "properties": {
        "name": FILE_NAME,
        # Relative to the Koji top directory: no leading "/", no ".." component, no whitespace.
        "path": {
            "type": "string",
            "pattern": r"^(?!/)(?!(.*/)?\.\.(/|$))[^\s]+" + END,
            "maxLength": 1024,
        },
        "sha256": SHA256,
        "size": {"type": "integer", "minimum": 0},
        "arch": {"type": "string", "maxLength": 32},
    },
    "additionalProperties": False,
}


class _OwnedMessage(SkylineMessage):
    """A message about something a packager (the `owner`) asked for."""

    @property
    def agent_name(self) -> str:
        return self.body["owner"]

    @property
    def usernames(self) -> list[str]:
        return [self.body["owner"]]

    @property
    def owner(self) -> str:
        return str(self.body["owner"])

    @property
    def scratch(self) -> bool:
        """False where the message does not say (build.stored and build.failed never do)."""
        return bool(self.body.get("scratch", False))


SRPM_URL = {
    "type": "string",
    "pattern": r"^https?://[^\s]+/[^/\s]+-[^-/\s]+-[^-/\s]+\.src\.rpm" + END,
    "maxLength": 2048,
}
RELEASE = {"type": "string", "pattern": "^[a-z0-9][a-z0-9._-]{0,31}" + END}
PRIORITY = {"type": "integer", "minimum": 0, "maximum": 1000}
MAX_CHAIN_LINKS = 100
DEFAULT_PRIORITY = 100  # a request's `priority` where it names none (higher is sooner)


class _Request(PartyTopic, _OwnedMessage):
    """A packager's request, on `<topic>.<principal>`: the key names who sent it."""

    @property
    def requester(self) -> str | None:
        """The principal whose routing key this came on (None on the bare topic)."""
        return self.party

    @property
    def release(self) -> str | None:
        return self.body.get("release")

    @property
    def request_priority(self) -> int:
        """The body's `priority` (fedora-messaging's `priority` is the AMQP message's)."""
        return int(self.body.get("priority", DEFAULT_PRIORITY))


class BuildRequestV1(_Request, SourceRpm):
    """A packager asks Skyline to build a source RPM for some architectures.

    Published on `skyline.build.request.<principal>`: the broker lets each packager's user
    publish only its own routing key, so the key names who sent it (`requester`), which
    `fedora-messaging publish` can do with nothing but its own credentials.
    """

    topic = "skyline.build.request"
    binding = "skyline.build.request.#"  # owner names may contain dots
    body_schema = body_schema(
        "A request to build a source RPM",
        ["srpm_url", "srpm_sha256", "arches", "owner"],
        {
            # The file name must be an SRPM's N-V-R.src.rpm: it names the build until the
            # collector reads the real headers (and checks they agree).
            "srpm_url": SRPM_URL,
            "srpm_sha256": SHA256,
            "arches": ARCH_LIST,
            "owner": USER,
            "scratch": {"type": "boolean"},
            "release": RELEASE,
            "priority": PRIORITY,
        },
    )

    @property
    def arches(self) -> list[str]:
        return list(self.body["arches"])

    @property
    def srpm_name(self) -> str:
        return self.srpm_url.rstrip("/").rsplit("/", 1)[-1]

    @property
    def summary(self) -> str:
        kind = "scratch build" if self.body.get("scratch") else "build"
        arches = ", ".join(self.body["arches"])
        return f"{self.body['owner']} requested a {kind} of {self.srpm_name} for {arches}"

    @property
    def packages(self) -> list[str]:
        return [package_of(self.srpm_name)]


CHAIN_LINK = {
    "type": "object",
    "required": ["srpm_url", "srpm_sha256", "arches"],
    "properties": {
        "srpm_url": SRPM_URL,
        "srpm_sha256": SHA256,
        "arches": ARCH_LIST,
        # The links (0-based positions in `links`, each before this one) whose RPMs this link
        # builds against: it starts once they are all stored. Listing only earlier links
        # makes every chain a DAG.
        "after": {
            "type": "array",
            "items": {"type": "integer", "minimum": 0, "maximum": MAX_CHAIN_LINKS - 1},
            "maxItems": 10,  # a lease names at most 10 repositories
            "uniqueItems": True,
        },
    },
    "additionalProperties": False,
}


class BuildChainRequestV1(_Request):
    """A packager asks for a chain build: a DAG of source RPMs, each link built (one build
    per link) once the links it comes `after` are stored, against a repository of their RPMs.

    Published on `skyline.build.chain.<principal>` with the same owner rules as
    BuildRequestV1 (a plain request stays a one-link build).
    """

    topic = "skyline.build.chain"
    binding = "skyline.build.chain.#"
    body_schema = body_schema(
        "A request to build a chain of source RPMs",
        ["links", "owner"],
        {
            "links": {
                "type": "array",
                "items": CHAIN_LINK,
                "minItems": 1,
                "maxItems": MAX_CHAIN_LINKS,
            },
            "owner": USER,
            "scratch": {"type": "boolean"},
            "release": RELEASE,
            "priority": PRIORITY,
        },
    )

    @property
    def links(self) -> list[dict[str, Any]]:
        return [dict(link) for link in self.body["links"]]

    @property
    def srpm_names(self) -> list[str]:
        return [str(link["srpm_url"]).rstrip("/").rsplit("/", 1)[-1] for link in self.links]

    @property
    def summary(self) -> str:
        names = self.srpm_names
        return f"{self.body['owner']} requested a chain of {len(names)}: {' -> '.join(names)}"[:500]

    @property
    def packages(self) -> list[str]:
        return sorted({package_of(n) for n in self.srpm_names})


class _BuildMessage(_OwnedMessage):
    """Shared properties of messages about one build."""

    @property
    def packages(self) -> list[str]:
        return [package_of(self.body["nvr"])]

    @property
    def build_id(self) -> int:
        return int(self.body["build_id"])

    @property
    def nvr(self) -> str:
        return str(self.body["nvr"])


class BuildQueuedV1(_BuildMessage):
    """The dispatcher accepted a request: one task per architecture is waiting for a host."""

    topic = "skyline.build.queued"
    body_schema = body_schema(
        "A build was queued",
        ["build_id", "owner", "nvr", "srpm_sha256", "scratch", "tasks"],
        {
            "build_id": ID,
            "owner": USER,
            "nvr": NVR,
            "srpm_sha256": SHA256,
            "scratch": {"type": "boolean"},
            "tasks": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["task_id", "arch"],
                    "properties": {"task_id": ID, "arch": ARCH},
                    "additionalProperties": False,
                },
            },
        },
    )

    @property
    def summary(self) -> str:
        arches = ", ".join(t["arch"] for t in self.body["tasks"])
        return f"build {self.body['build_id']} of {self.body['nvr']} queued for {arches}"


class BuildStoredV1(_BuildMessage):
    """The collector put one task's verified results into Koji storage."""

    topic = "skyline.build.stored"
    body_schema = body_schema(
        "A task's results were stored in Koji storage",
        ["build_id", "task_id", "owner", "nvr", "arch", "host", "files"],
        {
            "build_id": ID,
            "task_id": ID,
            "owner": USER,
            "nvr": NVR,
            "arch": ARCH,
            "host": HOST,
            "files": {"type": "array", "items": STORED_FILE},
        },
    )

    @property
    def task_id(self) -> int:
        return int(self.body["task_id"])

    @property
    def files(self) -> list[dict[str, Any]]:
        return [dict(f) for f in self.body["files"]]

    @property
    def summary(self) -> str:
        return (
            f"stored {len(self.body['files'])} file(s) of {self.body['nvr']} "
            f"({self.body['arch']}, built by {self.body['host']})"
        )


# How one task of a complete build was accepted: the hosts that agreed and the rule met.
ACCEPTED_TASK = {
    "type": "object",
    "required": ["task_id", "arch", "agreeing", "rule"],
    "properties": {
        "task_id": ID,
        "arch": ARCH,
        "agreeing": {"type": "array", "items": HOST, "minItems": 1, "maxItems": 20},
        "rule": {"type": "string", "maxLength": 64},
    },
    "additionalProperties": False,
}


class BuildCompleteV1(_BuildMessage):
    """Every task of a build is accepted and stored; `tasks` names who agreed on each."""

    topic = "skyline.build.complete"
    severity = INFO
    body_schema = body_schema(
        "A build completed",
        ["build_id", "owner", "nvr", "scratch", "files"],
        {
            "build_id": ID,
            "owner": USER,
            "nvr": NVR,
            "scratch": {"type": "boolean"},
            "files": {"type": "array", "items": STORED_FILE},
            "tasks": {"type": "array", "items": ACCEPTED_TASK, "maxItems": 20},
        },
    )

    @property
    def tasks(self) -> list[dict[str, object]]:
        return list(self.body.get("tasks", []))

    @property
    def summary(self) -> str:
        return f"build {self.body['build_id']} of {self.body['nvr']} completed"


class BuildFailedV1(_BuildMessage):
    """A build cannot complete: a task failed to build or no result could be accepted."""

    topic = "skyline.build.failed"
    severity = ERROR
    body_schema = body_schema(
        "A build failed",
        ["build_id", "owner", "nvr", "reason"],
        {
            "build_id": ID,
            "owner": USER,
            "nvr": NVR,
            "reason": {"type": "string", "maxLength": 2000},
            "failed_arches": {"type": "array", "items": ARCH},
        },
    )

    @property
    def reason(self) -> str:
        return str(self.body["reason"])

    @property
    def summary(self) -> str:
        return f"build {self.body['build_id']} of {self.body['nvr']} failed: {self.body['reason']}"
