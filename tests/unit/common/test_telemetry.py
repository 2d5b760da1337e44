"""Trace context crosses the bus in headers, so one build is one trace."""

from __future__ import annotations

from opentelemetry import trace
from skyline_messages import BuildRequestV1

from services.common import telemetry
from services.common.bus import to_amqp

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
