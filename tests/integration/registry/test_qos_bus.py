"""QoS figures from real task outcomes: a running registry consumes task.leased (published by
the dispatcher's broker user), task.finished (by each host's), task.verified and
task.mismatch (by the verifier's) on a real RabbitMQ, keeps them in a real PostgreSQL, and
publishes each host's score in its host.status."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fedora_messaging import message as fm
from skyline_messages import (
    HostHeartbeatV1,
    HostStatusV1,
    TaskFinishedV1,
    TaskLeasedV1,
    TaskMismatchV1,
    TaskVerifiedV1,
)

from services.common.broker_admin import Principals
from services.common.bus import Bus
from services.common.localstack import free_port
from services.common.signing import public_key_b64, sign_body
from services.common.testing import outbox_messages, service_runtime, until
from services.registry.__main__ import SERVICE

pytestmark = pytest.mark.integration

ADMIN = "admin-secret"
NVR = "hello-1.0-1.fc40"


@dataclasses.dataclass
class Farm:
    """A running registry, and a broker user (Bus) for each principal that talks to it."""

    url: str
    broker: Principals
    http: aiohttp.ClientSession
    buses: dict[str, Bus] = dataclasses.field(default_factory=dict)
    keys: dict[str, Ed25519PrivateKey] = dataclasses.field(default_factory=dict)

    async def bus(self, name: str) -> Bus:
        if name not in self.buses:
            if name.startswith("host:"):
                url = await self.broker.host(name.removeprefix("host:"))
            else:
                url = await self.broker.service(name)
            self.buses[name] = Bus(url, name=f"test-{name}")
            await self.buses[name].connect()
        return self.buses[name]

    async def publish(self, publisher: str, msg: fm.Message) -> None:
        await (await self.bus(publisher)).publish(msg)

    async def api(self, method: str, path: str, status: int = 200, **kw: Any) -> Any:
        async with self.http.request(method, self.url + path, **kw) as reply:
            assert reply.status == status, await reply.text()
            return await reply.json()

    async def enrol(self, host: str, owner: str) -> None:
        made = await self.api(
            "POST",
            "/api/v1/owners",
            201,
            json={"name": owner},
            headers={"Authorization": f"Bearer {ADMIN}"},
        )
        key = self.keys[host] = Ed25519PrivateKey.generate()
        body = {
            "host": host,
            "public_key": public_key_b64(key),
            "arches": ["x86_64"],
            "releases": ["f40"],
            "cpus": 2,
        }
        await self.api(
            "POST",
            "/api/v1/hosts",
            201,
            json=sign_body(body, key),
            headers={"Authorization": f"Bearer {made['token']}"},
        )

    async def heartbeat(self, host: str) -> None:
        now = datetime.datetime.now(datetime.UTC).isoformat()
        body = sign_body({"host": host, "free_slots": 1, "signed_at": now}, self.keys[host])
        await self.publish(
            f"host:{host}", HostHeartbeatV1(body=body, topic=HostHeartbeatV1.topic_for(host))
        )

    async def lease(self, host: str, task_id: int, seconds_ago: float) -> str:
        """The dispatcher leases a task to `host`, its message made `seconds_ago`."""
        lease_id = str(uuid.uuid4())
        body = {
            "task_id": task_id,
            "build_id": 1,
            "lease_id": lease_id,
            "host": host,
            "arch": "x86_64",
            "owner": "packager",
            "nvr": NVR,
            "srpm_url": f"http://127.0.0.1:1/{NVR}.src.rpm",
            "srpm_sha256": "a" * 64,
            "release": "f40",
            "lease_expires": "2099-01-01T00:00:00+00:00",
        }
        msg = TaskLeasedV1(body=body, topic=TaskLeasedV1.topic_for(host))
        sent = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=seconds_ago)
        msg._properties.headers["sent-at"] = sent.isoformat()
        await self.publish("dispatcher", msg)
        return lease_id

    async def finish(self, host: str, task_id: int, lease_id: str, status: str) -> None:
        body = {
            "task_id": task_id,
            "build_id": 1,
            "lease_id": lease_id,
            "host": host,
            "arch": "x86_64",
            "nvr": NVR,
            "status": status,
            "srpm_sha256": "a" * 64,
            "files": [{"name": f"{NVR}.x86_64.rpm", "size": 1, "sha256": "b" * 64}],
            "result_digest": "c" * 64,
            "env_manifest": {"rpm": "4.19.1"},
            "env_digest": "d" * 64,
            "duration": 1.0,  # what the host says: the registry times the lease itself
        }
        await self.publish(
            f"host:{host}",
            TaskFinishedV1(
                body=sign_body(body, self.keys[host]), topic=TaskFinishedV1.topic_for(host)
            ),
        )

    async def qos(self, host: str) -> dict[str, Any]:
        return await self.api("GET", f"/api/v1/hosts/{host}/qos")


@contextlib.asynccontextmanager
async def running_registry(config, broker: Principals) -> AsyncIterator[Farm]:
    port = free_port()
    config = dataclasses.replace(
        config,
        amqp_url=await broker.service("registry"),
        registry=dataclasses.replace(
            config.registry, listen=f"127.0.0.1:{port}", admin_token=ADMIN, heartbeat_timeout=600
        ),
    )
    stop = asyncio.Event()
    task = asyncio.create_task(SERVICE.run(config, stop))
    async with aiohttp.ClientSession() as http:
        farm = Farm(f"http://127.0.0.1:{port}", broker, http)

        async def healthy() -> bool:
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(farm.url + "/healthz") as reply:
                    return reply.status == 200
            return False

        try:
            await until(healthy, "the registry answers")
            yield farm
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
            for bus in farm.buses.values():
                await bus.close()


async def test_qos_figures_follow_real_task_outcomes(config, broker) -> None:
    async with running_registry(config, broker) as farm:
        await farm.enrol("fast-1", "alice")
        await farm.enrol("slow-1", "bob")

        # The registry's queue is bound once it consumes: heartbeat until one is seen.
        async def online() -> bool:
            await farm.heartbeat("fast-1")
            await farm.heartbeat("slow-1")
            views = [await farm.api("GET", f"/api/v1/hosts/{h}") for h in ("fast-1", "slow-1")]
            return all(v["state"] == "online" for v in views)

        await until(online, "both hosts are online")

        # slow-1 builds hello in 10 minutes: the first such build, nothing to compare with.
        slow = await farm.lease("slow-1", 1, seconds_ago=600)
        await farm.finish("slow-1", 1, slow, "succeeded")

        async def slow_counted() -> bool:
            return (await farm.qos("slow-1"))["counters"]["finished"] == 1

        await until(slow_counted, "slow-1's build is counted")  # the reference comes first
        # fast-1 builds it in 5 minutes (the finish may even reach the registry first).
        fast = await farm.lease("fast-1", 2, seconds_ago=300)
        await farm.finish("fast-1", 2, fast, "succeeded")
        # ... and fails another build.
        failed = await farm.lease("fast-1", 3, seconds_ago=60)
        await farm.finish("fast-1", 3, failed, "failed")

        async def counted() -> dict | None:
            figures = await farm.qos("fast-1")
            return figures if figures["counters"]["finished"] == 2 else None

        figures = await until(counted, "fast-1's builds are counted")
        assert figures["counters"]["succeeded"] == 1
        assert figures["qos"]["success_rate"] == pytest.approx(2 / 4)
        # Twice as fast as the package's build elsewhere (the lease's wall time, not the
        # host's own word: it claimed 1 s).
        assert figures["qos"]["speed_factor"] == pytest.approx(2.0, rel=0.05)
        assert (await farm.qos("slow-1"))["qos"]["speed_factor"] == 1.0  # nothing to compare

        # A forged finish for a lease never made counts for nothing.
        await farm.finish("slow-1", 9, str(uuid.uuid4()), "succeeded")

        # The verifier: fast-1 and slow-1 agreed on task 2; slow-1's results for another task
        # were refused (its doing), and a disagreement nobody settled blames nobody.
        agreeing = [
            {"host": "fast-1", "owner": "alice", "trust": "untrusted", "lease_id": fast},
            {"host": "slow-1", "owner": "bob", "trust": "untrusted", "lease_id": slow},
        ]
        verified = {
            "task_id": 2,
            "build_id": 1,
            "lease_id": fast,
            "host": "fast-1",
            "arch": "x86_64",
            "nvr": NVR,
            "status": "succeeded",
            "files": [{"name": f"{NVR}.x86_64.rpm", "size": 1, "sha256": "b" * 64}],
            "result_digest": "c" * 64,
            "rule": "agreement",
            "agreeing": agreeing,
        }
        await farm.publish("verifier", TaskVerifiedV1(body=verified))
        for reason in ("digest_mismatch", "no_agreement"):
            mismatch = {
                "task_id": 4,
                "lease_id": str(uuid.uuid4()),
                "host": "slow-1",
                "reason": reason,
                "detail": "x",
            }
            await farm.publish("verifier", TaskMismatchV1(body=mismatch))

        async def graded() -> dict | None:
            fast_qos, slow_qos = await farm.qos("fast-1"), await farm.qos("slow-1")
            done = fast_qos["counters"]["valid"] == 1 and slow_qos["counters"]["invalid"] == 1
            return (fast_qos, slow_qos) if done else None

        fast_qos, slow_qos = await until(graded, "the verdicts are counted")
        assert fast_qos["qos"]["valid_result_rate"] == pytest.approx(2 / 3, abs=1e-4)
        assert (slow_qos["counters"]["valid"], slow_qos["counters"]["invalid"]) == (1, 1)
        assert slow_qos["counters"]["finished"] == 1  # the forged finish did not count
        assert fast_qos["qos"]["score"] > slow_qos["qos"]["score"]

        builds = await farm.api("GET", "/api/v1/hosts/fast-1/builds")
        assert [(b["task_id"], b["status"], b["verdict"]) for b in builds["builds"]] == [
            (3, "failed", None),
            (2, "succeeded", "agreed"),
        ]
        assert builds["builds"][1]["duration"] == pytest.approx(300, rel=0.05)

        # The dispatcher reads the score in host.status.
        fast_view = await farm.api("GET", "/api/v1/hosts/fast-1")
        assert fast_view["qos_score"] == pytest.approx(fast_qos["qos"]["score"])

    async with service_runtime(config, "registry") as runtime:
        sent = [m for m in await outbox_messages(runtime) if isinstance(m, HostStatusV1)]
    statuses = [m for m in sent if m.body["host"] == "fast-1"]
    assert statuses[-1].body["qos_score"] == pytest.approx(fast_qos["qos"]["score"])
    assert statuses[-1].qos_score == statuses[-1].body["qos_score"]
    # ... and its speed (two significant digits), which sends critical tasks to fast hosts;
    # a host with no timed build to compare says none (the dispatcher takes the farm's pace).
    assert statuses[-1].speed_factor == pytest.approx(2.0, rel=0.05)
    assert [m.speed_factor for m in sent if m.body["host"] == "slow-1"][-1] is None
