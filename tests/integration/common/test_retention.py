"""Retention: old processed ids and sent outbox rows go; idempotency inside the window stays."""

from __future__ import annotations

import dataclasses

import pytest
from skyline_messages import BuildRequestV1

from services.common import outbox, retention
from services.common.service import Service
from services.common.testing import service_runtime

pytestmark = pytest.mark.integration

BODY = {
    "srpm_url": "http://127.0.0.1:1/skyline-hello-1.0-1.src.rpm",
    "srpm_sha256": "d" * 64,
    "arches": ["noarch"],
    "owner": "alice",
}


async def test_retention_deletes_old_ids_and_sent_rows_and_keeps_idempotency(config) -> None:
    config = dataclasses.replace(
        config,
        bus=dataclasses.replace(
            config.bus, processed_retention_hours=24, sent_retention_hours=1, retention_chunk=2
        ),
    )
    handled: list[str] = []

    async def handler(msg, ctx) -> None:
        handled.append(msg.id)

    service = Service("retentiontest", handlers={BuildRequestV1: handler})
    async with service_runtime(config, "retentiontest") as runtime:
        old = [BuildRequestV1(body=BODY) for _ in range(5)]
        recent = BuildRequestV1(body=BODY)
        for msg in [*old, recent]:
            await service.handle(runtime, msg)
        await runtime.pool.execute(
            "UPDATE processed_messages SET processed_at = now() - interval '25 hours'"
            " WHERE message_id = ANY($1::text[])",
            [m.id for m in old],
        )
        async with runtime.pool.acquire() as conn, conn.transaction():
            await outbox.add_many(conn, [BuildRequestV1(body=BODY) for _ in range(5)])
        await runtime.pool.execute(
            "UPDATE outbox SET sent_at = now() - interval '2 hours'"
            " WHERE id IN (SELECT id FROM outbox ORDER BY id LIMIT 3)"
        )
        await runtime.pool.execute(
            "UPDATE outbox SET sent_at = now() WHERE id = (SELECT max(id) - 1 FROM outbox)"
        )

        assert await retention.prune(runtime.pool, config.bus) == (5, 3)  # in chunks of 2

        kept = await runtime.pool.fetch("SELECT message_id FROM processed_messages")
        assert [r["message_id"] for r in kept] == [recent.id]
        # The one sent just now and the unsent one stay.
        assert await runtime.pool.fetchval("SELECT count(*) FROM outbox") == 2
        assert await runtime.pool.fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NULL") == 1
        # Inside the window a redelivery is still recognised and skipped.
        await service.handle(runtime, recent)
        assert handled.count(recent.id) == 1
        assert await retention.prune(runtime.pool, config.bus) == (0, 0)
