"""The relay's fast paths make what the general ones make: AMQP properties (bus.py) and
trace contexts (telemetry.py)."""

from __future__ import annotations

import uuid

from opentelemetry import propagate, trace

from services.common import telemetry
from services.common.bus import Wire, wire_message, wire_properties


def test_wire_properties_are_those_of_the_aio_pika_message() -> None:
    headers = {"fedora_messaging_schema": "x", "sent-at": "2026-01-01T00:00:00+00:00"}
    for wire in (
        Wire("skyline.task.leased.h1", b"{}", headers, uuid.uuid4().hex, None),
        Wire("skyline.build.request.alice", b"{}", headers, "id", 5),
    ):
        for user in (None, "dispatcher"):
            assert wire_properties(wire, user) == wire_message(wire, user).properties


def test_traceparent_of_a_span_is_what_the_propagator_writes() -> None:
    telemetry.setup("test")
    with telemetry.span("handler"):
        span = telemetry.start_publish_span("skyline.task.leased")
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(span))
    assert telemetry.traceparent_of(span) == carrier["traceparent"]
    span.end()
    assert telemetry.traceparent_of(trace.INVALID_SPAN) is None


def test_a_publish_span_joins_the_given_trace_and_links_the_current_one() -> None:
    telemetry.setup("test")
    build = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    with telemetry.span("host status") as current:
        span = telemetry.start_publish_span("skyline.task.leased", build)
    span.end()
    assert f"{span.get_span_context().trace_id:032x}" == "0af7651916cd43dd8448eb211c80319c"
    assert span.parent is not None and span.parent.span_id == 0xB7AD6B7169203331
    assert [link.context.span_id for link in span.links] == [current.get_span_context().span_id]


def test_a_relay_span_links_each_valid_traceparent_and_starts_its_own_trace() -> None:
    telemetry.setup("test")
    good = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    headers = [{"traceparent": good}, {}, {"traceparent": "00-zz-b7ad6b7169203331-01"}]
    span = telemetry.start_relay_span(headers)
    span.end()
    assert [link.context.span_id for link in span.links] == [0xB7AD6B7169203331]
    assert span.parent is None
    assert span.attributes["messaging.batch.message_count"] == 3
