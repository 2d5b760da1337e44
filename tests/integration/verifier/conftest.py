"""A verifier Runtime on a fresh database, its outbox, and stand-ins for the registry and the
collector that answer over HTTP with the JSON the real ones return."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from fedora_messaging import message as fm

from services.common.config import Config
from services.common.service import Runtime
from services.common.testing import outbox_messages, service_runtime

SERVICE = "verifier"


@pytest.fixture
async def runtime(config: Config) -> AsyncIterator[Runtime]:
    async with service_runtime(config, SERVICE, http_timeout=10) as runtime:
        yield runtime


@pytest.fixture
def sent(runtime: Runtime) -> Callable[[], Awaitable[list[fm.Message]]]:
    """Every message the service queued for publication so far, oldest first."""
    return lambda: outbox_messages(runtime)


@dataclasses.dataclass
class Peers:
    """What the stand-in registry and collector know; tests edit it freely."""

    hosts: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    uploads: dict[str, list[dict[str, Any]]] = dataclasses.field(default_factory=dict)
    # GET /api/v1/leases/{lease_id}/facts answers {"lease_id", "rpms": facts[lease_id]}.
    facts: dict[str, list[dict[str, Any]]] = dataclasses.field(default_factory=dict)
    # Leases whose RPMs the stand-in collector cannot read (it answers 422 with this error).
    unreadable: dict[str, str] = dataclasses.field(default_factory=dict)
    registry_status: int = 200  # anything else: the registry answers with that error
    collector_status: int = 200  # the same for the collector
    requests: list[str] = dataclasses.field(default_factory=list)
    registry_url: str = ""  # where the stand-in registry listens (a real collector asks it too)

    @staticmethod
    def listed(file: dict[str, Any], sourcerpm: str | None) -> dict[str, Any]:
        """An attested file as the collector's GET /api/v1/uploads/{lease_id} lists it once
        uploaded: an RPM with the header its name implies (built from `sourcerpm`), a log with
        none. test_real_collector.py holds this to what the real collector answers."""
        name = file["name"]
        if not name.endswith(".rpm"):
            return {**file, "rpm": None}
        nvr, arch = name.removesuffix(".rpm").rsplit(".", 1)
        rpm_name, version, release = nvr.rsplit("-", 2)
        header = {"name": rpm_name, "version": version, "release": release, "epoch": None}
        source = None if arch == "src" else sourcerpm
        return {**file, "rpm": {**header, "arch": arch, "sourcerpm": source}}

    def stage(
        self, lease_id: str, *files: dict[str, Any], sourcerpm: str, content: str = "honest"
    ) -> None:
        """The collector now lists `files` (attested entries) as uploaded for the lease, and
        answers facts for its RPMs whose payload is `content` (other content: other keys).
        test_real_collector.py holds the facts' shape to what the real collector answers."""
        self.uploads[lease_id] = [self.listed(f, sourcerpm) for f in files]
        self.facts[lease_id] = [
            {
                "name": f["name"],
                "sha256": f["sha256"],
                "nevra": f["name"].removesuffix(".rpm"),
                "files": {
                    "/usr/share/data": {
                        "digest": hashlib.sha256(content.encode()).hexdigest(),
                        "mode": 0o100644,
                        "user": "root",
                        "group": "root",
                        "size": len(content),
                        "link": "",
                        "flags": 0,
                        "rdev": 0,
                        "verify": -1,
                        "caps": "",
                    }
                },
                "deps": {"require": ["coreutils >= 8.0"]},
                "tags": {"NAME": f["name"].split("-")[0]},
            }
            for f in files
            if f["name"].endswith(".rpm")
        ]

    def host_view(
        self,
        host: str,
        public_key: str,
        *,
        state: str = "online",
        owner: str = "alice",
        trust: str = "core",
    ) -> None:
        """Enrol a host as GET /api/v1/hosts/{host} shows it (registry.store.public_view).
        A core host by default: its result alone is accepted (tests of agreement say
        otherwise)."""
        self.hosts[host] = {
            "host": host,
            "owner": owner,
            "public_key": public_key,
            "arches": ["noarch", "x86_64"],
            "releases": ["f40"],
            "cpus": 4,
            "memory_mb": 8192,
            "disk_gb": 100,
            "trust": trust,
            "consecutive_confirmed": 0,
            "total_results": 0,
            "state": state,
            "free_slots": 1,
            "running": 0,
            "last_heartbeat": "2026-01-01T00:00:00+00:00",
            "last_signed_at": "2026-01-01T00:00:00+00:00",
            "enrolled_at": "2025-12-01T00:00:00+00:00",
        }


def _not_found(message: str) -> web.HTTPNotFound:
    return web.HTTPNotFound(
        text=json.dumps({"error": message, "status": 404}), content_type="application/json"
    )


@pytest.fixture
async def peers(runtime: Runtime) -> AsyncIterator[Peers]:
    peers = Peers()

    async def get_host(request: web.Request) -> web.Response:
        peers.requests.append(request.path)
        if peers.registry_status != 200:
            return web.json_response({"error": "down"}, status=peers.registry_status)
        host = peers.hosts.get(request.match_info["host"])
        if host is None:
            raise _not_found("no such host")
        return web.json_response(host)

    async def get_uploads(request: web.Request) -> web.Response:
        peers.requests.append(request.path)
        if peers.collector_status != 200:
            return web.json_response({"error": "down"}, status=peers.collector_status)
        files = peers.uploads.get(request.match_info["lease_id"])
        if files is None:
            raise _not_found("unknown lease")
        return web.json_response({"files": files})

    async def get_facts(request: web.Request) -> web.Response:
        lease_id = request.match_info["lease_id"]
        peers.requests.append(request.path)
        if peers.collector_status != 200:
            return web.json_response({"error": "down"}, status=peers.collector_status)
        if lease_id in peers.unreadable:
            return web.json_response({"error": peers.unreadable[lease_id]}, status=422)
        if lease_id not in peers.facts:
            raise _not_found("unknown lease")
        return web.json_response({"lease_id": lease_id, "rpms": peers.facts[lease_id]})

    registry_app = web.Application()
    registry_app.router.add_get("/api/v1/hosts/{host}", get_host)
    collector_app = web.Application()
    collector_app.router.add_get("/api/v1/uploads/{lease_id}", get_uploads)
    collector_app.router.add_get("/api/v1/leases/{lease_id}/facts", get_facts)
    registry, collector = TestServer(registry_app), TestServer(collector_app)
    await registry.start_server()
    await collector.start_server()
    peers.registry_url = str(registry.make_url("")).rstrip("/")
    config = runtime.config
    runtime.config = dataclasses.replace(
        config,
        verifier=dataclasses.replace(
            config.verifier,
            registry_url=peers.registry_url,
            collector_url=str(collector.make_url("")).rstrip("/"),
        ),
    )
    try:
        yield peers
    finally:
        await registry.close()
        await collector.close()
