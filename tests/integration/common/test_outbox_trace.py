"""Trace context through the outbox: a relayed message continues the handler that wrote it,
and everything said about a build joins that build's trace."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from skyline_messages import BuildQueuedV1

from services.common import db, outbox, telemetry
from services.common.bus import Wire

pytestmark = pytest.mark.integration


def queued(build_id: int) -> BuildQueuedV1:
    return BuildQueuedV1(
        body={
            "build_id": build_id,
            "owner": "alice",
            "nvr": "skyline-hello-1.0-1",
            "srpm_sha256": "b" * 64,
            "scratch": False,
            "tasks": [{"task_id": build_id * 10, "arch": "noarch"}],
        }
    )


class RecordingBus:
    def __init__(self) -> None:
        self.sent: list[Wire] = []

    async def publish_encoded(self, wires: list[Wire]) -> list[BaseException | None]:
        self.sent += wires
        return [None] * len(wires)


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    telemetry.setup("test")  # the first call sets the provider; later ones keep it
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter
    exporter.shutdown()


@pytest.fixture
async def pool(database_url):
    pool = await db.create_pool(database_url, "tracetest")
    await db.migrate(pool, "tracetest", None)
    yield pool
    await pool.close()


def span_id(traceparent: str) -> int:
    return int(traceparent.split("-")[2], 16)


async def test_relayed_message_continues_the_writer_and_the_batch_links_it(pool, spans) -> None:
    with telemetry.span("handler") as handler:
        async with pool.acquire() as conn, conn.transaction():
            await outbox.add(conn, queued(1))
            await outbox.add(conn, queued(5))
    bus = RecordingBus()
    assert await outbox.Relay(pool, bus).flush() == 2  # outside any span, like the relay task

    finished = spans.get_finished_spans()
    producers = [s for s in finished if s.name == "skyline.build.queued publish"]
    [relay] = [s for s in finished if s.name == "outbox relay"]  # one for the batch
    assert {p.parent.span_id for p in producers} == {handler.get_span_context().span_id}
    # Consumers continue each message's producer span, in the handler's trace...
    assert [span_id(w.headers["traceparent"]) for w in bus.sent] == [
        p.context.span_id for p in producers
    ]
    # ...and the batch's span, a trace of its own, links every one of them.
    assert relay.parent is None
    assert relay.context.trace_id != handler.get_span_context().trace_id
    assert [link.context.span_id for link in relay.links] == [p.context.span_id for p in producers]
    assert relay.attributes["messaging.batch.message_count"] == 2


async def test_later_messages_about_a_build_join_its_trace(pool, spans) -> None:
    with telemetry.span("request") as request:
        async with pool.acquire() as conn, conn.transaction():
            await outbox.add(conn, queued(2))
    with telemetry.span("host status") as other:
        async with pool.acquire() as conn, conn.transaction():
            await outbox.add_many(conn, [queued(2), queued(3)])
    bus = RecordingBus()
    await outbox.Relay(pool, bus).flush()

    traces = [telemetry.trace_id_of(w.headers["traceparent"]) for w in bus.sent]
    build_trace = f"{request.get_span_context().trace_id:032x}"
    other_trace = f"{other.get_span_context().trace_id:032x}"
    # Build 2 stays in its request's trace; build 3 is first seen under the host status.
    assert traces == [build_trace, build_trace, other_trace]
    joined = [
        s
        for s in spans.get_finished_spans()
        if s.name == "skyline.build.queued publish" and s.links
    ]
    assert [link.context.span_id for s in joined for link in s.links] == [
        other.get_span_context().span_id
    ]


async def test_messages_written_outside_any_trace_record_none(pool, spans) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await outbox.add(conn, queued(4))
    assert await pool.fetchval("SELECT count(*) FROM trace_contexts") == 0


async def test_queries_of_traced_work_get_a_span_each(pool, spans) -> None:
    await pool.fetchval("SELECT 1")  # outside any trace: no lone span
    with telemetry.span("handler") as handler:
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("CREATE TEMP TABLE t (x int)")
            await conn.fetch("SELECT $1::int AS x", 2)
    db_spans = [s for s in spans.get_finished_spans() if s.name.startswith("db ")]
    assert [s.name for s in db_spans] == ["db CREATE", "db SELECT"]  # not BEGIN, COMMIT
    assert {s.parent.span_id for s in db_spans} == {handler.get_span_context().span_id}
    assert db_spans[1].attributes["db.query.text"] == "SELECT $1::int AS x"
    assert db_spans[1].attributes["db.system"] == "postgresql"
