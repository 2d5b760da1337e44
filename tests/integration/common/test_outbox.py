"""The outbox: messages leave only with a committed transaction, once, with a stable id."""

from __future__ import annotations

import uuid

import pytest
from fedora_messaging import message as fm
from fedora_messaging.exceptions import ValidationError
from skyline_messages import BuildRequestV1

from services.common import db, outbox
from services.common.bus import Wire

pytestmark = pytest.mark.integration

BODY = {
    "srpm_url": "http://127.0.0.1:1/skyline-hello-1.0-1.src.rpm",
    "srpm_sha256": "b" * 64,
    "arches": ["noarch"],
    "owner": "alice",
}


class RecordingBus:
    def __init__(self, fail: bool = False) -> None:
        self.sent: list[fm.Message] = []
        self.fail = fail

    async def publish_encoded(self, wires: list[Wire]) -> list[BaseException | None]:
        if self.fail:
            raise ConnectionError("broker down")
        self.sent += [outbox.wire_to_message(w) for w in wires]  # decoded as a consumer would
        return [None] * len(wires)


@pytest.fixture
async def pool(database_url):
    pool = await db.create_pool(database_url, "outboxtest")
    await db.migrate(pool, "outboxtest", None)
    yield pool
    await pool.close()


async def test_rolled_back_transaction_sends_nothing(pool) -> None:
    bus = RecordingBus()
    with pytest.raises(RuntimeError):
        async with pool.acquire() as conn, conn.transaction():
            await outbox.add(conn, BuildRequestV1(body=BODY))
            raise RuntimeError("handler failed after publishing")
    assert await outbox.Relay(pool, bus).flush() == 0
    assert bus.sent == []


async def test_committed_message_is_sent_once_with_its_id_and_headers(pool) -> None:
    bus = RecordingBus()
    msg = BuildRequestV1(body=BODY)
    async with pool.acquire() as conn, conn.transaction():
        await outbox.add(conn, msg)
    relay = outbox.Relay(pool, bus)
    assert await relay.flush() == 1
    assert await relay.flush() == 0  # marked sent: never twice
    [sent] = bus.sent
    assert type(sent) is BuildRequestV1
    assert (sent.id, sent.body, sent.topic) == (msg.id, msg.body, msg.topic)
    assert sent._headers["fedora_messaging_schema"] == "skyline.build.request.v1"


async def test_broker_down_keeps_the_message_for_the_next_flush(pool) -> None:
    msg = BuildRequestV1(body=BODY)
    async with pool.acquire() as conn, conn.transaction():
        await outbox.add(conn, msg)
    with pytest.raises(ConnectionError):
        await outbox.Relay(pool, RecordingBus(fail=True)).flush()
    bus = RecordingBus()
    assert await outbox.Relay(pool, bus).flush() == 1
    assert [m.id for m in bus.sent] == [msg.id]  # consumers dedupe a resend by this id


async def test_invalid_message_is_refused_at_write_time(pool) -> None:
    async with pool.acquire() as conn:
        with pytest.raises(ValidationError):
            await outbox.add(conn, BuildRequestV1(body={**BODY, "arches": ["sparc"]}))
        rows = await conn.fetch("SELECT id FROM outbox")
    assert rows == []


async def test_messages_keep_commit_order(pool) -> None:
    ids = []
    for _ in range(3):
        msg = BuildRequestV1(body={**BODY, "owner": f"u{uuid.uuid4().hex[:6]}"})
        ids.append(msg.id)
        async with pool.acquire() as conn, conn.transaction():
            await outbox.add(conn, msg)
    bus = RecordingBus()
    await outbox.Relay(pool, bus, batch=2).flush()
    assert [m.id for m in bus.sent] == ids
    async with pool.acquire() as conn:
        unsent = await conn.fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
        stored = [
            r["message_id"] for r in await conn.fetch("SELECT message_id FROM outbox ORDER BY id")
        ]
    assert unsent == 0 and stored == ids


async def test_rows_written_before_the_wire_form_are_still_sent(pool) -> None:
    msg = BuildRequestV1(body=BODY)
    await pool.execute("INSERT INTO outbox (message) VALUES ($1::jsonb)", fm.dumps(msg))
    bus = RecordingBus()
    assert await outbox.Relay(pool, bus).flush() == 1
    assert [(m.id, m.body) for m in bus.sent] == [(msg.id, msg.body)]
