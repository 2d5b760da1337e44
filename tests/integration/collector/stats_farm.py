"""Messages of a small farm's life, as their real publishers send them, for the stats tests."""

from __future__ import annotations

import datetime
import shutil
import uuid
from pathlib import Path
from typing import Any

import asyncpg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fedora_messaging import message as fm
from skyline_messages import (
    BuildCompleteV1,
    BuildFailedV1,
    BuildQueuedV1,
    HostStatusV1,
    TaskFinishedV1,
    TaskLeasedV1,
    TaskMismatchV1,
    TaskVerifiedV1,
    ThrottleEngagedV1,
)

from services.collector import storage, store
from services.common.config import Config
from services.common.rpmfiles import sha256_file
from services.common.signing import sign_body

SHA = "a" * 64
OTHER_SHA = "b" * 64
# An N-V-R the schema allows (no '/', no whitespace) that is markup if shown unescaped.
XSS_NVR = "xss<script>alert(1)<script>-1.0-1"


def now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat()


def host_status(
    host: str, owner: str, *, trust: str = "trusted", arches=("x86_64",)
) -> HostStatusV1:
    return HostStatusV1(
        body={
            "host": host,
            "owner": owner,
            "state": "online",
            "trust": trust,
            "arches": list(arches),
            "releases": ["f40"],
            "free_slots": 1,
            "seen_at": now(),
        }
    )


def queued(
    build_id: int, nvr: str, owner: str = "packager", tasks=((1, "x86_64"),)
) -> BuildQueuedV1:
    return BuildQueuedV1(
        body={
            "build_id": build_id,
            "owner": owner,
            "nvr": nvr,
            "srpm_sha256": SHA,
            "scratch": False,
            "tasks": [{"task_id": t, "arch": a} for t, a in tasks],
        }
    )


class Result:
    """One host's result of one task: its lease, and the messages about it."""

    def __init__(
        self,
        host: str,
        owner: str,
        task_id: int,
        build_id: int,
        nvr: str,
        *,
        key: Ed25519PrivateKey | None = None,
        arch: str = "x86_64",
        trust: str = "trusted",
    ) -> None:
        self.host, self.owner, self.trust = host, owner, trust
        self.task_id, self.build_id, self.nvr, self.arch = task_id, build_id, nvr, arch
        self.lease_id = str(uuid.uuid4())
        self.key = key or Ed25519PrivateKey.generate()
        self.files: list[dict[str, Any]] = []  # what it uploaded (stage)

    def leased(self) -> TaskLeasedV1:
        body = {
            "task_id": self.task_id,
            "build_id": self.build_id,
            "lease_id": self.lease_id,
            "host": self.host,
            "arch": self.arch,
            "owner": "packager",
            "nvr": self.nvr,
            "srpm_url": f"http://127.0.0.1:9/sources/{SHA}/{self.nvr}.src.rpm",
            "srpm_sha256": SHA,
            "release": "f40",
            "lease_expires": now(),
        }
        return TaskLeasedV1(body=body, topic=TaskLeasedV1.topic_for(self.host))

    async def stage(self, conn: asyncpg.Connection, config: Config, rpm: Path) -> None:
        """Put `rpm` among the lease's uploads, as the upload route does once it is signed."""
        folder = storage.staging_dir(config, uuid.UUID(self.lease_id))
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(rpm, folder / rpm.name)
        entry = {"name": rpm.name, "size": rpm.stat().st_size, "sha256": sha256_file(rpm)}
        header = storage.rpm_header(folder / rpm.name, rpm.name)
        await store.stage_file(conn, uuid.UUID(self.lease_id), **entry, rpm=header)
        self.files = [entry]

    def finished(self, duration: float, status: str = "succeeded") -> TaskFinishedV1:
        body = {
            "task_id": self.task_id,
            "build_id": self.build_id,
            "lease_id": self.lease_id,
            "host": self.host,
            "arch": self.arch,
            "nvr": self.nvr,
            "status": status,
            "srpm_sha256": SHA,
            "files": [],
            "result_digest": SHA,
            "env_manifest": {},
            "env_digest": SHA,
            "duration": duration,
        }
        return TaskFinishedV1(
            body=sign_body(body, self.key), topic=TaskFinishedV1.topic_for(self.host)
        )

    def agreeing(self) -> dict[str, str]:
        return {
            "host": self.host,
            "owner": self.owner,
            "trust": self.trust,
            "lease_id": self.lease_id,
        }

    def odd_one_out(self) -> dict[str, str]:
        return {
            "host": self.host,
            "lease_id": self.lease_id,
            "comparison_key": OTHER_SHA,
            "detail": "usr/share/x differs",
        }

    def mismatch(self, reason: str = "digest_mismatch") -> TaskMismatchV1:
        return TaskMismatchV1(
            body={
                "task_id": self.task_id,
                "build_id": self.build_id,
                "lease_id": self.lease_id,
                "host": self.host,
                "arch": self.arch,
                "reason": reason,
                "detail": "the uploaded RPM is not what was attested",
            }
        )


def verified(
    stored: Result,
    agreeing: list[Result],
    *,
    rule: str = "quorum",
    odd: list[Result] = (),  # type: ignore[assignment]
    not_reproducible: bool = False,
) -> TaskVerifiedV1:
    body: dict[str, Any] = {
        "task_id": stored.task_id,
        "build_id": stored.build_id,
        "lease_id": stored.lease_id,
        "host": stored.host,
        "arch": stored.arch,
        "nvr": stored.nvr,
        "status": "succeeded",
        "files": stored.files,
        "result_digest": SHA,
        "comparison_key": SHA,
        "rule": rule,
        "agreeing": [r.agreeing() for r in agreeing],
        "odd_ones_out": [r.odd_one_out() for r in odd],
    }
    if not_reproducible:
        body["not_reproducible"] = True
    return TaskVerifiedV1(body=body)


def complete(
    build_id: int, nvr: str, tasks: list[tuple[int, str, list[str], str]], owner: str = "packager"
) -> BuildCompleteV1:
    return BuildCompleteV1(
        body={
            "build_id": build_id,
            "owner": owner,
            "nvr": nvr,
            "scratch": False,
            "files": [],
            "tasks": [
                {"task_id": t, "arch": a, "agreeing": hosts, "rule": rule}
                for t, a, hosts, rule in tasks
            ],
        }
    )


def failed(build_id: int, nvr: str, reason: str, owner: str = "packager") -> BuildFailedV1:
    return BuildFailedV1(body={"build_id": build_id, "owner": owner, "nvr": nvr, "reason": reason})


def throttle_engaged() -> ThrottleEngagedV1:
    return ThrottleEngagedV1(
        body={"bad_rate": 0.4, "threshold": 0.2, "window_seconds": 3600, "reason": "bad results"}
    )


def validate(*msgs: fm.Message) -> None:
    for m in msgs:
        m.validate()
