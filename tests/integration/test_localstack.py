"""Real RabbitMQ and PostgreSQL processes started by services.common.localstack."""

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import aio_pika
import asyncpg
import pytest

from services.common import localstack
from services.common.localstack import LocalStackError, PostgreSQL, RabbitMQ, free_port

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
QUEUE = "skyline.test.localstack"


@pytest.fixture
def state() -> Iterator[Path]:
    # Not under tmp_path: any pytest session starting meanwhile resets /tmp/pytest-of-<user>
    # to 0700, which briefly locks the postgres user out of its data dir.
    base = Path(tempfile.mkdtemp(prefix="skyline-localstack-"))
    yield base / "state"
    # Never leave servers behind, even when a test fails halfway.
    if (base / "state" / "rabbitmq" / "ports.json").exists():
        RabbitMQ(base / "state").stop()
    if (base / "state" / "postgres" / "ports.json").exists():
        PostgreSQL(base / "state").stop()
    shutil.rmtree(base)


def _gone(pid: int) -> bool:
    """No such process, or only a zombie (PID 1 here may never reap orphans)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def _closed(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def _pid(path: Path) -> int:
    return int(path.read_text().split()[0])


def _stop_in_fresh_process(cls: str, state: Path) -> None:
    """`skyline local down` case: a new process knows nothing but the state dir."""
    code = (
        f"import sys; from pathlib import Path; from {localstack.__name__} import {cls}; "
        f"{cls}(Path(sys.argv[1])).stop()"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-c", code, str(state)], check=True, env=env, timeout=120)


async def _publish(url: str, body: bytes) -> None:
    async with await aio_pika.connect(url) as conn:
        channel = await conn.channel(publisher_confirms=True)
        await channel.declare_queue(QUEUE, durable=True)
        confirm = await channel.default_exchange.publish(
            aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
            routing_key=QUEUE,
        )
        assert confirm is not None  # the broker acked it, so it is on disk


async def _get(url: str, timeout: float = 30) -> bytes | None:
    """The queued message, waiting for it while the restarted node recovers its queues."""
    deadline = asyncio.get_running_loop().time() + timeout
    async with await aio_pika.connect(url) as conn:
        queue = await (await conn.channel()).declare_queue(QUEUE, durable=True)
        while (message := await queue.get(fail=False, timeout=10)) is None:
            if asyncio.get_running_loop().time() > deadline:
                return None
            await asyncio.sleep(0.5)
        await message.ack()
        return message.body


def test_free_port_span_is_bindable() -> None:
    base = free_port(span=10)
    assert 20000 <= base and base + 9 < 32000
    socks = [socket.socket() for _ in range(10)]
    try:
        for i, sock in enumerate(socks):
            sock.bind(("127.0.0.1", base + i))
    finally:
        for sock in socks:
            sock.close()


def test_rabbitmq_warm_restart_keeps_durable_messages(state: Path) -> None:
    rmq = RabbitMQ(state)
    rmq.start()
    assert rmq.is_running()
    assert rmq.url == f"amqp://skyline:skyline@127.0.0.1:{rmq.port}/%2F"
    rmq.start()  # idempotent
    asyncio.run(_publish(rmq.url, b"survives restart"))
    assert QUEUE in rmq.ctl("list_queues", "name", "durable")
    pids = [_pid(rmq.dir / "rabbit.pid"), _pid(rmq.dir / "wrapper.pid")]

    _stop_in_fresh_process("RabbitMQ", state)
    assert all(_gone(p) for p in pids)
    assert _closed(rmq.port) and _closed(rmq.port + 2)  # AMQP and the private epmd
    assert not rmq.is_running()

    again = RabbitMQ(state)  # no port given: re-uses the saved one
    assert again.port == rmq.port
    again.start()
    assert asyncio.run(_get(again.url)) == b"survives restart"
    pids = [_pid(again.dir / "rabbit.pid"), _pid(again.dir / "wrapper.pid")]
    again.stop()
    assert all(_gone(p) for p in pids)
    assert _closed(again.port) and _closed(again.port + 2)


def test_rabbitmq_kill_then_recover(state: Path) -> None:
    rmq = RabbitMQ(state)
    rmq.start()
    asyncio.run(_publish(rmq.url, b"survives crash"))
    beam = _pid(rmq.dir / "rabbit.pid")
    rmq.kill()
    assert _gone(beam) and not rmq.is_running() and _closed(rmq.port + 2)
    rmq.start()
    assert asyncio.run(_get(rmq.url)) == b"survives crash"
    rmq.stop()


async def _pg_roundtrip(pg: PostgreSQL) -> None:
    conn = await asyncpg.connect(pg.url)
    try:
        assert await conn.fetchval("SELECT current_user") == "skyline"
        assert await conn.fetchval("SHOW listen_addresses") == "127.0.0.1"
        assert await conn.fetchval("SHOW fsync") == "off"  # fast=True
        await conn.execute("CREATE TABLE kept (v text); INSERT INTO kept VALUES ('x')")
    finally:
        await conn.close()
    url = pg.create_database("skyline_extra")
    assert url == f"postgresql://skyline@127.0.0.1:{pg.port}/skyline_extra"
    extra = await asyncpg.connect(url)
    try:
        assert await extra.fetchval("SELECT current_database()") == "skyline_extra"
    finally:
        await extra.close()
    pg.drop_database("skyline_extra")
    conn = await asyncpg.connect(pg.url)
    try:
        names = await conn.fetch("SELECT datname FROM pg_database")
        assert "skyline_extra" not in {r["datname"] for r in names}
    finally:
        await conn.close()


async def _fetch_kept(url: str) -> str:
    conn = await asyncpg.connect(url)
    try:
        return str(await conn.fetchval("SELECT v FROM kept"))
    finally:
        await conn.close()


def test_postgres_start_query_databases_stop(state: Path) -> None:
    pg = PostgreSQL(state, fast=True)
    pg.start()
    assert pg.is_running()
    pg.start()  # idempotent
    asyncio.run(_pg_roundtrip(pg))
    postmaster = _pid(pg.data / "postmaster.pid")

    _stop_in_fresh_process("PostgreSQL", state)
    assert _gone(postmaster) and _closed(pg.port) and not pg.is_running()

    again = PostgreSQL(state)  # saved port, data kept; durable settings this time
    assert again.port == pg.port
    again.start()
    assert asyncio.run(_fetch_kept(again.url)) == "x"
    postmaster = _pid(again.data / "postmaster.pid")
    again.stop()
    assert _gone(postmaster) and _closed(again.port)


def test_postgres_busy_port_error_has_log_tail(state: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(LocalStackError, match=r"(?s)pg_ctl.*could not"):
            PostgreSQL(state, port=busy.getsockname()[1], fast=True).start(timeout=20)


def test_missing_binaries_name_the_package(state: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(localstack, "RMQ_BIN_DIRS", (str(state / "nowhere"),))
    with pytest.raises(LocalStackError, match="rabbitmq-server package"):
        RabbitMQ(state).start()
    monkeypatch.setattr(localstack.glob, "glob", lambda pattern: [])
    monkeypatch.setenv("PATH", str(state / "nowhere"))  # hides pg_config
    monkeypatch.setattr(localstack.os, "access", lambda *args, **kwargs: False)
    with pytest.raises(LocalStackError, match="postgresql-server"):
        PostgreSQL(state).start()
