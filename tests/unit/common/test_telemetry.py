"""Trace context crosses the bus in headers, so one build is one trace."""

from __future__ import annotations

import json
from collections.abc import Iterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from skyline_messages import BuildRequestV1

from services.common import telemetry
from services.common.bus import to_amqp
from services.common.http import make_app

BODY = {
    "srpm_url": "http://127.0.0.1:1/skyline-hello-1.0-1.src.rpm",
    "srpm_sha256": "c" * 64,
    "arches": ["noarch"],
    "owner": "alice",
}


def test_published_message_carries_the_current_trace_and_consumer_continues_it() -> None:
    telemetry.setup("test")
    with telemetry.span("submit") as parent:
        _, amqp = to_amqp(BuildRequestV1(body=BODY))
    trace_id = parent.get_span_context().trace_id
    assert amqp.headers["traceparent"].split("-")[1] == f"{trace_id:032x}"

    received = BuildRequestV1(body=BODY)
    with telemetry.consume_span(received, amqp.headers) as child:
        assert child.get_span_context().trace_id == trace_id
        assert trace.get_current_span() is child


def test_message_without_trace_starts_a_new_one() -> None:
    telemetry.setup("test")
    msg = BuildRequestV1(body=BODY)
    with telemetry.consume_span(msg, {}) as span:
        assert span.get_span_context().is_valid


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """The spans this process finishes during one test."""
    telemetry.setup("test")  # the first call sets the provider; later ones keep it
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter
    exporter.shutdown()  # a provider's processors cannot be removed: this one goes quiet


def by_name(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    return {s.name: s for s in exporter.get_finished_spans()}


async def test_http_client_sends_its_span_and_the_server_continues_it(spans) -> None:
    seen: dict[str, str] = {}

    async def handler(request: web.Request) -> web.Response:
        seen["traceparent"] = request.headers.get("traceparent", "")
        seen["server"] = f"{trace.get_current_span().get_span_context().span_id:016x}"
        return web.json_response({})

    app = make_app([web.get("/api/v1/things/{name}", handler)])
    async with (
        TestServer(app) as server,
        aiohttp.ClientSession(trace_configs=[telemetry.client_trace_config()]) as http,
    ):
        with telemetry.span("caller"):
            async with http.get(server.make_url("/api/v1/things/x")) as response:
                assert response.status == 200
            async with http.get(server.make_url("/nowhere")) as response:
                assert response.status == 404

    found = by_name(spans)
    caller = found["caller"]
    [client] = [
        s
        for s in spans.get_finished_spans()
        if s.name == "HTTP GET" and s.attributes["url.path"] == "/api/v1/things/x"
    ]
    server_span = found["GET /api/v1/things/{name}"]
    assert client.parent.span_id == caller.context.span_id
    assert server_span.parent.span_id == client.context.span_id
    assert server_span.kind is SpanKind.SERVER and client.kind is SpanKind.CLIENT
    assert seen["traceparent"].split("-")[2] == f"{client.context.span_id:016x}"
    assert seen["server"] == f"{server_span.context.span_id:016x}"
    assert server_span.attributes["http.response.status_code"] == 200
    assert {s.context.trace_id for s in found.values()} == {caller.context.trace_id}
    missing = [
        s for s in spans.get_finished_spans() if s.attributes.get("http.route") == "/nowhere"
    ]
    assert [s.attributes["http.response.status_code"] for s in missing] == [404]


def test_publish_span_joins_the_given_trace_and_links_the_current_one(spans) -> None:
    with telemetry.span("build request") as build_span:
        build_trace = telemetry.current_traceparent()
    with telemetry.span("host status") as other:
        with telemetry.publish_span("skyline.task.leased.h1", build_trace) as producer:
            headers: dict[str, str] = {}
            telemetry.replace_context(headers)
    assert producer.get_span_context().trace_id == build_span.get_span_context().trace_id
    finished = by_name(spans)["skyline.task.leased.h1 publish"]
    assert finished.parent.span_id == build_span.get_span_context().span_id
    assert [link.context.span_id for link in finished.links] == [other.get_span_context().span_id]
    assert headers["traceparent"].split("-")[2] == f"{finished.context.span_id:016x}"


def test_publish_span_in_the_same_trace_stays_a_child_of_the_current_span(spans) -> None:
    with telemetry.span("verdict") as current:
        with telemetry.publish_span("skyline.build.stored", telemetry.current_traceparent()):
            pass
    finished = by_name(spans)["skyline.build.stored publish"]
    assert finished.parent.span_id == current.get_span_context().span_id
    assert not finished.links


def test_json_lines_exporter_writes_one_record_per_span(spans, tmp_path) -> None:
    with telemetry.span("outer", nvr="skyline-hello-1.0-1"):
        with telemetry.span("inner"):
            pass
    file = tmp_path / "spans" / "test-1.jsonl"
    exporter = telemetry.JsonLinesExporter(file)
    exporter.export(spans.get_finished_spans())
    records = [json.loads(line) for line in file.read_text().splitlines()]
    inner, outer = records
    assert (inner["name"], outer["name"]) == ("inner", "outer")
    assert inner["parent_id"] == outer["span_id"] and outer["parent_id"] is None
    assert inner["trace_id"] == outer["trace_id"]
    assert outer["attributes"] == {"nvr": "skyline-hello-1.0-1"}
    assert outer["start"] <= inner["start"] <= inner["end"] <= outer["end"]


def test_confirmed_messages_count_leases_verdicts_and_the_throttle(monkeypatch) -> None:
    reader = InMemoryMetricReader()
    meter = MeterProvider(metric_readers=[reader]).get_meter("test")
    monkeypatch.setattr(telemetry, "METRICS", telemetry.Metrics(meter))
    telemetry.record_sent_many(
        [
            ("skyline.task.leased.h1", b"{}"),
            ("skyline.task.leased.h2", b"{}"),
            ("skyline.task.verified", b'{"status": "succeeded"}'),
            ("skyline.task.mismatch", b"{}"),
            ("skyline.throttle.engaged", b"{}"),
            ("skyline.build.queued", b"{}"),  # counts nothing
        ]
    )
    telemetry.METRICS.queue_depth.set(3, {"queue": "skyline.dispatcher"})

    points: dict[str, list[tuple[dict, float]]] = {}
    data = reader.get_metrics_data()
    for resource_metrics in data.resource_metrics:
        for scope in resource_metrics.scope_metrics:
            for metric in scope.metrics:
                points[metric.name] = [
                    (dict(p.attributes or {}), p.value) for p in metric.data.data_points
                ]
    assert points["skyline.leases.issued"] == [({}, 2)]
    assert sorted(points["skyline.verdicts"], key=str) == sorted(
        [({"kind": "verified", "status": "succeeded"}, 1), ({"kind": "mismatch"}, 1)], key=str
    )
    assert points["skyline.throttle.engaged"] == [({}, 1)]
    assert points["skyline.queue.depth"] == [({"queue": "skyline.dispatcher"}, 3)]
    telemetry.record_sent_many([("skyline.throttle.released", b"{}")])
    data = reader.get_metrics_data()
    values = [
        p.value
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == "skyline.throttle.engaged"
        for p in m.data.data_points
    ]
    assert values == [0]
