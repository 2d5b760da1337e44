"""Run one lease: fetch the SRPM, build it, upload the results, attest what was done.

Any agent-side error becomes a failed attestation, so the dispatcher need not wait for the
lease to expire. Only cancellation (the agent stopping) escapes: the lease stays "accepted" in
the journal and resumes at the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import logging
import os
import shutil
import signal
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from skyline_messages import TaskFinishedV1, TaskLeasedV1, TaskStartedV1

from services.common import telemetry
from services.common.config import BuilderConfig
from services.common.rpmfiles import result_set_digest, sha256_file
from services.common.signing import now_iso

from . import buildroot, client, rpmbuild
from .journal import Journal
from .publisher import Publisher
from .sandbox import Sandbox

log = logging.getLogger(__name__)

ERROR_LOG_NAME = "agent-error.log"  # what went wrong on the agent's side, next to build.log
MAX_SRPM_BYTES = 4 * 1024**3  # the collector's default upload limit; no real SRPM comes close


def attestation(
    lease: TaskLeasedV1,
    *,
    status: str,
    srpm_sha256: str,
    rpms: list[dict[str, Any]],
    logs: list[dict[str, Any]],
    env_manifest: Mapping[str, str],
    duration: float,
    failure: str | None = None,
) -> dict[str, Any]:
    """The unsigned body of `task.finished`: what was built, from what, with what.

    A failed task says whose failure it is (`failure`): the package's, or the agent's.
    """
    body = {
        **lease.task_fields(),
        "nvr": lease.nvr,
        "status": status,
        "srpm_sha256": srpm_sha256,
        "files": [*rpms, *logs],
        # Over the RPMs only: logs carry timestamps, so two honest hosts never agree on them.
        "result_digest": result_set_digest((f["name"], f["sha256"]) for f in rpms),
        "env_manifest": dict(env_manifest),
        "env_digest": rpmbuild.manifest_digest(env_manifest),
        "duration": round(max(duration, 0.0), 3),
    }
    if status == "failed":
        body["failure"] = failure or "agent"
    return body


def lease_expired(lease: TaskLeasedV1) -> bool:
    try:
        expires = datetime.datetime.fromisoformat(lease.lease_expires)
    except ValueError:
        # Not ours to judge: the dispatcher enforces its own leases.
        log.warning("lease %s: unreadable lease_expires %r", lease.lease_id, lease.lease_expires)
        return False
    if expires.tzinfo is None:
        expires = expires.replace(tzinfo=datetime.UTC)
    return expires <= datetime.datetime.now(datetime.UTC)


@dataclasses.dataclass
class _Progress:
    """How far a task got, so a crash report says what is known."""

    srpm_sha256: str | None = None
    started: float = 0.0


class Runner:
    """Runs leases in <workdir>/tasks/<lease id>; the agent decides when and how many."""

    def __init__(
        self,
        settings: BuilderConfig,
        *,
        build_path: Path,
        workdir: Path,
        journal: Journal,
        publisher: Publisher,
        session: Callable[[], aiohttp.ClientSession],
        signing_key: Callable[[], Ed25519PrivateKey],
        sandbox: Sandbox,
    ) -> None:
        self.settings = settings
        self.sandbox = sandbox
        # Per running lease: set to stop its build (a revoked lease); see revoke().
        self._cancels: dict[str, threading.Event] = {}
        self.build_path = build_path
        self.workdir = workdir
        self.journal = journal
        self.publisher = publisher
        self.session = session
        self.signing_key = signing_key  # signs uploads, like the messages

    async def run(self, lease: TaskLeasedV1) -> None:
        """Run one lease to its attestation; raises only CancelledError."""
        lease_id = lease.lease_id
        progress = _Progress()
        cancel = self._cancels.setdefault(lease_id, threading.Event())
        try:
            if lease_expired(lease):
                # The dispatcher has requeued it elsewhere; building it would be wasted.
                log.warning("lease %s expired before it could start; dropped", lease_id)
                await self.expire(lease_id, self.journal.load(lease_id) or {"lease": lease})
                return
            with telemetry.span(
                "skyline.builder.task", lease_id=lease_id, nvr=lease.nvr, arch=lease.arch
            ):
                body = await self._execute(lease, progress, cancel)
                await self._finish(lease, body)
        except Exception as exc:
            log.exception("task for lease %s (%s, %s) failed", lease_id, lease.nvr, lease.arch)
            await self._report_crash(lease, progress, exc)
        finally:
            self._cancels.pop(lease_id, None)

    def revoke(self, lease_id: str) -> None:
        """Stop this lease's build within seconds; it is reported as failed ("revoked").

        Safe from any thread, and before the lease's task has started (it then never builds).
        """
        self._cancels.setdefault(lease_id, threading.Event()).set()

    async def expire(self, lease_id: str, entry: dict[str, Any]) -> None:
        self.journal.save(lease_id, {**entry, "state": "expired", "at": now_iso()})
        await asyncio.to_thread(shutil.rmtree, self.task_dir(lease_id), ignore_errors=True)

    def task_dir(self, lease_id: str) -> Path:
        return self.workdir / "tasks" / self.journal.path(lease_id).stem

    async def _execute(
        self, lease: TaskLeasedV1, progress: _Progress, cancel: threading.Event
    ) -> dict[str, Any]:
        """Fetch, check, build and upload; return the unsigned attestation."""
        lease_id = lease.lease_id
        progress.started = asyncio.get_running_loop().time()
        await self.publisher.publish_signed(TaskStartedV1, lease.task_fields())
        task_dir = self.task_dir(lease_id)
        results = task_dir / "results"
        await asyncio.to_thread(shutil.rmtree, results, ignore_errors=True)
        results.mkdir(parents=True)
        srpm = task_dir / f"{lease.nvr}.src.rpm"
        got = await client.fetch_srpm(
            self.session(), lease.srpm_url, srpm, lease.srpm_sha256, MAX_SRPM_BYTES
        )
        progress.srpm_sha256 = got
        env = await asyncio.to_thread(self.environment_manifest)
        if got != lease.srpm_sha256:
            log.error(
                "lease %s: SRPM sha256 %s, expected %s; not building",
                lease_id,
                got,
                lease.srpm_sha256,
            )
            note = results / rpmbuild.LOG_NAME
            note.write_text(
                f"skyline: the SRPM fetched from {lease.srpm_url} has sha256 {got},\n"
                f"skyline: but the lease says {lease.srpm_sha256}.\n"
                "skyline: not building it: these are not the sources that were requested.\n"
            )
            return attestation(
                lease,
                status="failed",
                srpm_sha256=got,
                rpms=[],
                logs=[await self._upload(lease, note)],
                env_manifest=env,
                duration=0.0,
                failure="agent",  # not the sources asked for: another host may fetch them
            )
        if cancel.is_set():
            return await self._revoked(lease, results, got, env)
        repos = lease.repos
        buildroot_rpms: list[Path] = []
        if repos and self.sandbox.kind != "mock":
            # mock adds the repositories to its chroot; rpmbuild gets their packages unpacked.
            buildroot_rpms = await buildroot.fetch_buildroot(
                self.session(), repos, lease.arch, task_dir / "buildroot"
            )
        outcome = await asyncio.to_thread(
            rpmbuild.build,
            srpm,
            arch=lease.arch,
            results_dir=results,
            build_path=self.build_path,
            timeout=self.settings.build_timeout,
            # The sandbox was chosen at start-up (sandbox.resolve), mock or rpmbuild.
            backend="mock" if self.sandbox.kind == "mock" else "rpmbuild",
            sandbox=self.sandbox,
            path_env=self.settings.tool_path or None,
            cancel=cancel,
            buildroot_rpms=buildroot_rpms,
            repos=repos,
            max_disk_mb=self.settings.build_max_disk_mb,
        )
        log.info(
            "lease %s: build %s in %.0f s (rc=%d)",
            lease_id,
            "succeeded" if outcome.succeeded else "FAILED",
            outcome.duration,
            outcome.returncode,
        )
        # A failed build's leftovers are not results: attest the log only, over the empty set.
        rpms = [await self._upload(lease, p) for p in outcome.rpms] if outcome.succeeded else []
        return attestation(
            lease,
            status="succeeded" if outcome.succeeded else "failed",
            srpm_sha256=got,
            rpms=rpms,
            logs=[await self._upload(lease, outcome.log)],
            env_manifest=env,
            duration=outcome.duration,
            failure=_failure_kind(outcome),
        )

    async def _revoked(
        self, lease: TaskLeasedV1, results: Path, srpm_sha256: str, env: Mapping[str, str]
    ) -> dict[str, Any]:
        """The attestation of a lease revoked before its build started."""
        note = results / rpmbuild.LOG_NAME
        note.write_text("skyline: the lease was revoked before the build started\n")
        return attestation(
            lease,
            status="failed",
            srpm_sha256=srpm_sha256,
            rpms=[],
            logs=[await self._upload(lease, note)],
            env_manifest=env,
            duration=0.0,
            failure="revoked",
        )

    def environment_manifest(self) -> dict[str, str]:
        """What builds here run with: the build's PATH, the sandbox kind."""
        return rpmbuild.environment_manifest(
            path=self.settings.tool_path or None, sandbox=self.sandbox.kind
        )

    async def _report_crash(self, lease: TaskLeasedV1, progress: _Progress, exc: Exception) -> None:
        """Turn an agent-side error into a failed task, so the dispatcher need not wait."""
        lease_id = lease.lease_id
        try:
            results = self.task_dir(lease_id) / "results"
            note = results / ERROR_LOG_NAME
            await asyncio.to_thread(
                _append, note, f"skyline: the builder agent failed: {type(exc).__name__}: {exc}\n"
            )
            # The note gets its own name, so it never replaces the build log, which may be up
            # there already (e.g. the RPMs' upload failed).
            logs: list[dict[str, Any]] = []
            for path in (results / rpmbuild.LOG_NAME, note):
                try:
                    if await asyncio.to_thread(path.is_file):
                        logs.append(await self._upload(lease, path))
                except Exception as upload_exc:
                    log.warning(
                        "lease %s: could not upload %s: %s", lease_id, path.name, upload_exc
                    )
            env = await asyncio.to_thread(self.environment_manifest)
            elapsed = (
                asyncio.get_running_loop().time() - progress.started if progress.started else 0
            )
            body = attestation(
                lease,
                status="failed",
                # Nothing fetched means nothing else to claim: echo what was asked for.
                srpm_sha256=progress.srpm_sha256 or lease.srpm_sha256,
                rpms=[],
                logs=logs,
                env_manifest=env,
                duration=elapsed,
                failure="agent",
            )
            await self._finish(lease, body)
        except Exception:
            log.exception(
                "could not report the failure of lease %s; the dispatcher requeues it when the "
                "lease expires",
                lease_id,
            )

    async def _finish(self, lease: TaskLeasedV1, body: dict[str, Any]) -> None:
        """Sign, journal, then publish the attestation; nothing after the journal may raise."""
        lease_id = lease.lease_id
        msg = TaskFinishedV1(body=self.publisher.sign(body))
        msg.validate()  # a body the broker would refuse must fail here, not loop in the journal
        entry = {
            "lease": lease.body,
            "state": "finished",
            "finished": {"id": msg.id, "body": msg.body},
            "published": False,
            "at": now_iso(),
        }
        self.journal.save(lease_id, entry)
        log.info("lease %s %s", lease_id, msg.status)
        await self.publisher.publish_finished(lease_id, entry)
        await asyncio.to_thread(shutil.rmtree, self.task_dir(lease_id), ignore_errors=True)

    async def _upload(self, lease: TaskLeasedV1, path: Path) -> dict[str, Any]:
        sha256, size = await asyncio.to_thread(_digest_and_size, path)
        await client.upload(
            self.session(),
            self.settings.collector_url,
            lease.lease_id,
            path,
            sha256,
            # The agent runs only leases made out to its own host (agent.py), so the lease's
            # host is ours: the name the collector checks against the lease and the key.
            host=lease.host,
            key=self.signing_key(),
        )
        return {"name": path.name, "size": size, "sha256": sha256}


def _failure_kind(outcome: rpmbuild.BuildOutcome) -> str:
    """Whose failure a failed build is: the package's, unless the agent stopped it."""
    if outcome.cancelled:
        return "revoked"
    if outcome.timed_out:
        return "timeout"
    if outcome.limit_exceeded:
        return "limit"
    return "package"


def _digest_and_size(path: Path) -> tuple[str, int]:
    return sha256_file(path), path.stat().st_size


def _append(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(text)


def kill_build_processes() -> None:
    """SIGKILL the process groups of this process's builds.

    rpmbuild.build() starts each build in its own session and gives no handle to stop it, so
    find our children that lead their own process group. Linux-only (/proc), like the builds.
    """
    me = os.getpid()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            pid, ppid, pgid = int(stat.parent.name), int(fields[1]), int(fields[2])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == me and pgid == pid:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
