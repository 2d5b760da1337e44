"""OpenTelemetry: one trace per build across every service, carried in AMQP headers.

W3C `traceparent` rides in each message's headers; a consumer continues the trace of the
message it handles. Spans are exported over OTLP when `otlp_endpoint` is configured and the
exporter package is installed; otherwise tracing still propagates context but exports nothing.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind

log = logging.getLogger(__name__)
_tracer = trace.get_tracer("skyline")


def setup(service_name: str, otlp_endpoint: str = "") -> None:
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    if otlp_endpoint:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
        except ImportError:
            log.warning("otlp_endpoint is set but opentelemetry-exporter-otlp is not installed")
        else:
            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(otlp_endpoint)))
    trace.set_tracer_provider(provider)


def inject(headers: MutableMapping[str, Any]) -> None:
    """Add the current trace context to outgoing headers (keeps an existing one)."""
    if "traceparent" not in headers:
        propagate.inject(headers)


@contextlib.contextmanager
def consume_span(msg: Any, headers: Mapping[str, Any]) -> Iterator[trace.Span]:
    carrier = {k: v for k, v in headers.items() if isinstance(v, str)}
    ctx = propagate.extract(carrier)
    with _tracer.start_as_current_span(
        f"{msg.topic} process",
        context=ctx,
        kind=SpanKind.CONSUMER,
        attributes={
            "messaging.system": "rabbitmq",
            "messaging.destination.name": msg.topic,
            "messaging.message.id": msg.id or "",
        },
    ) as span:
        yield span


@contextlib.contextmanager
def span(name: str, **attributes: Any) -> Iterator[trace.Span]:
    with _tracer.start_as_current_span(name, attributes=attributes) as current:
        yield current
