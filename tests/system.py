"""The whole system, started as `skyline local up` starts it, with two local builders: one per
test session, shared by tests/e2e and tests/security (loaded by tests/conftest.py)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import aio_pika
import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fedora_messaging import message as fm

from services.cli.localsystem import LocalSystem
from services.common.bus import from_amqp
from services.common.config import with_credentials
from services.common.rpmfiles import make_srpm
from services.common.signing import public_key_b64, sign_body

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_SPEC = REPO / "examples" / "skyline-hello" / "skyline-hello.spec"
# Short leases, so that tests/e2e/test_recovery.py sees a dead builder's lease expire and be
# requeued within seconds (the default is an hour); every build here takes a few seconds.
LEASE_SECONDS = 20


@pytest.fixture(scope="session")
def system() -> Iterator[LocalSystem]:
    # Outside pytest's temp dir, which pytest makes 0700 (see tests/conftest.py).
    state = Path(tempfile.mkdtemp(prefix="skyline-e2e-"))
    local = LocalSystem(state, fast_db=True)
    try:
        local.up(builders=2, progress=lambda line: None, lease_seconds=LEASE_SECONDS)
        yield local
    finally:
        local.down(progress=lambda line: None)
        shutil.rmtree(state, ignore_errors=True)


@dataclasses.dataclass
class Rogue:
    """A host enrolled like any volunteer's (its own key and broker user), run by the test."""

    host: str
    key: Ed25519PrivateKey
    amqp_url: str


async def enrol_host(system: LocalSystem, host: str, **profile: object) -> Rogue:
    """Enrol `host` through the registry's API, signed with a new key, as an agent does,
    with its owner's token (the owner made first if need be)."""
    key = Ed25519PrivateKey.generate()
    body = {
        "host": host,
        "owner": "mallory",
        "public_key": public_key_b64(key),
        "arches": ["noarch", "x86_64"],
        "releases": ["local"],
        "cpus": 2,
        **profile,
    }
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{system.url('registry')}/api/v1/hosts",
            json=sign_body(body, key),
            headers={"Authorization": f"Bearer {system.owner_token(str(body['owner']))}"},
        ) as reply,
    ):
        assert reply.status in (200, 201), await reply.text()
        broker = (await reply.json())["broker"]
    url = with_credentials(system.amqp_url, broker["user"], broker["password"])
    return Rogue(host, key, url)


@pytest.fixture(scope="session")
def example_srpm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_srpm(EXAMPLE_SPEC, tmp_path_factory.mktemp("srpm"))


@dataclasses.dataclass
class Tap:
    """Every skyline.* message on the bus, decoded, as a stock consumer would see it."""

    messages: list[fm.Message]

    def of(self, cls: type[fm.Message], **match: object) -> list[fm.Message]:
        return [
            m
            for m in self.messages
            if isinstance(m, cls) and all(m.body.get(k) == v for k, v in match.items())
        ]

    async def wait(
        self,
        cls: type[fm.Message],
        timeout: float = 60,
        where: Callable[[fm.Message], bool] = lambda m: True,
        **match: object,
    ) -> fm.Message:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            found = [m for m in self.of(cls, **match) if where(m)]
            if found:
                return found[0]
            if asyncio.get_running_loop().time() > deadline:
                seen = [f"{type(m).__name__}: {m.summary}" for m in self.messages[-30:]]
                raise AssertionError(f"no {cls.__name__} {match} within {timeout} s; saw {seen}")
            await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def open_tap(amqp_url: str) -> AsyncIterator[Tap]:
    """A Tap for as long as the context lasts (it dies with the broker: open a new one)."""
    connection = await aio_pika.connect(amqp_url)
    channel = await connection.channel()
    # As the read-only monitor: its queues are named "skyline-monitor:..." (principals.py).
    queue = await channel.declare_queue(f"skyline-monitor:tap-{uuid.uuid4().hex}", exclusive=True)
    await queue.bind("amq.topic", "skyline.#")
    seen = Tap([])

    async def on_message(incoming: aio_pika.abc.AbstractIncomingMessage) -> None:
        async with incoming.process():
            try:
                seen.messages.append(from_amqp(incoming))
            except Exception:  # malformed test input also crosses the tap
                pass

    await queue.consume(on_message)
    try:
        yield seen
    finally:
        with contextlib.suppress(Exception):  # already closed if the broker went away
            await connection.close()


@pytest.fixture
async def tap(system: LocalSystem) -> AsyncIterator[Tap]:
    async with open_tap(system.monitor_url) as seen:
        yield seen


@pytest.fixture
def new_tap(system: LocalSystem) -> Callable[[], contextlib.AbstractAsyncContextManager[Tap]]:
    """Opens further taps, e.g. after a broker restart closed the first one."""
    return lambda: open_tap(system.monitor_url)
