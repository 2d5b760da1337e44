"""OpenTelemetry: one trace per build across every service and the builder.

Context. W3C `traceparent` rides in each message's headers (written with the outbox row, so a
relayed message continues the handler that wrote it) and in each HTTP request's headers (the
client sessions get `client_trace_config()`, the aiohttp apps `server_middleware`). A consumer
or a route continues the trace it was given. The outbox also pins each build to the trace that
first spoke of it (`trace_contexts`, see outbox.py), so a lease issued later, while handling a
host's status or a periodic sweep, still joins its build's trace.

Spans: `<topic> process` (consume), `<topic> publish` (producer, when a message is written to
the outbox or published directly), `outbox relay` (the relay sending a batch), `db
transaction`, `HTTP <method>` (client) and `<method> <route>` (server). A message's consumers
continue its producer span; the relay's `outbox relay` span, one per batch sent, is a trace of
its own linked to the producer span of each message in it.

Metrics (`METRICS`): leases issued, verdicts by kind and the throttle's state, recorded as the
broker confirms the messages that announce them; each consumer queue's depth, read periodically.

Export. `otlp_endpoint` set to an OTLP/HTTP collector (`http://collector:4318`) sends traces
and metrics there when opentelemetry-exporter-otlp is installed; `file:///some/dir` makes each
process append its finished spans as JSON lines to `<dir>/<service>-<pid>.jsonl` (tests, and a
poor man's trace log). Unset, context still propagates and nothing is exported.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import types
from collections.abc import (
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    MutableMapping,
    Sequence,
)
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import aiohttp
from aiohttp import web
from opentelemetry import context as otel_context
from opentelemetry import metrics, propagate, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Link, SpanKind, Status, StatusCode, TraceFlags

log = logging.getLogger(__name__)
_tracer = trace.get_tracer("skyline")
_meter = metrics.get_meter("skyline")

TRACE_HEADERS = ("traceparent", "tracestate")
QUEUE_DEPTH_INTERVAL = 30.0  # seconds between two readings of a service's queue depth


class Metrics:
    """The farm's few instruments; names follow OpenTelemetry's `namespace.noun` style."""

    def __init__(self, meter: metrics.Meter) -> None:
        self.leases_issued = meter.create_counter(
            "skyline.leases.issued", unit="{lease}", description="Task leases sent to builders"
        )
        self.verdicts = meter.create_counter(
            "skyline.verdicts",
            unit="{verdict}",
            description="Verifier verdicts on finished tasks, by kind (verified, mismatch)",
        )
        self.throttle_engaged = meter.create_gauge(
            "skyline.throttle.engaged",
            unit="{throttle}",
            description="1 while the farm-wide throttle is engaged, 0 once released",
        )
        self.queue_depth = meter.create_gauge(
            "skyline.queue.depth",
            unit="{message}",
            description="Messages ready in a service's consumer queue",
        )


METRICS = Metrics(_meter)


def setup(service_name: str, otlp_endpoint: str = "") -> None:
    resource = Resource.create({"service.name": service_name, "process.pid": os.getpid()})
    provider = TracerProvider(resource=resource)
    readers: list[Any] = []
    if otlp_endpoint.startswith("file://"):
        folder = Path(unquote(urlsplit(otlp_endpoint).path))
        exporter = JsonLinesExporter(folder / f"{service_name}-{os.getpid()}.jsonl")
        # Written as each span ends: a test reads them while the processes still run.
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    elif otlp_endpoint:
        base = otlp_endpoint.rstrip("/").removesuffix("/v1/traces")
        try:
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
        except ImportError:
            log.warning("otlp_endpoint is set but opentelemetry-exporter-otlp is not installed")
        else:
            provider.add_span_processor(
                BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{base}/v1/traces"))
            )
            readers.append(
                PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=f"{base}/v1/metrics"))
            )
    trace.set_tracer_provider(provider)
    metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=readers))


class JsonLinesExporter(SpanExporter):
    """Appends finished spans to a file, one JSON object a line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def export(self, spans: Any) -> SpanExportResult:
        lines = "".join(json.dumps(span_record(s)) + "\n" for s in spans)
        try:
            with self._lock:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with open(self.path, "a") as f:
                    f.write(lines)
        except OSError:
            log.warning("cannot write spans to %s", self.path, exc_info=True)
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS


def span_record(span: ReadableSpan) -> dict[str, Any]:
    ctx = span.get_span_context()
    assert ctx is not None
    return {
        "name": span.name,
        "service": span.resource.attributes.get("service.name"),
        "pid": span.resource.attributes.get("process.pid"),
        "kind": span.kind.name,
        "trace_id": f"{ctx.trace_id:032x}",
        "span_id": f"{ctx.span_id:016x}",
        "parent_id": f"{span.parent.span_id:016x}" if span.parent else None,
        "links": [f"{link.context.trace_id:032x}" for link in span.links],
        "start": span.start_time,
        "end": span.end_time,
        "status": span.status.status_code.name,
        "attributes": {k: _plain(v) for k, v in (span.attributes or {}).items()},
    }


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


# -- messages ---------------------------------------------------------------------------------


def inject(headers: MutableMapping[str, Any]) -> None:
    """Add the current trace context to outgoing headers (keeps an existing one)."""
    if "traceparent" not in headers:
        propagate.inject(headers)


def replace_context(headers: MutableMapping[str, Any]) -> None:
    """Put the current trace context in `headers`, replacing the one they carry."""
    for key in TRACE_HEADERS:
        headers.pop(key, None)
    propagate.inject(headers)


def extract(headers: Mapping[str, Any]) -> otel_context.Context:
    return propagate.extract({k: v for k, v in headers.items() if isinstance(v, str)})


def current_traceparent() -> str | None:
    """The current span's `traceparent`, or None outside any span."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent")


def trace_id_of(traceparent: str | None) -> str | None:
    parts = (traceparent or "").split("-")
    return parts[1] if len(parts) == 4 else None


@contextlib.contextmanager
def consume_span(msg: Any, headers: Mapping[str, Any]) -> Iterator[trace.Span]:
    with _tracer.start_as_current_span(
        f"{msg.topic} process",
        context=extract(headers),
        kind=SpanKind.CONSUMER,
        attributes={
            "messaging.system": "rabbitmq",
            "messaging.destination.name": msg.topic,
            "messaging.message.id": msg.id or "",
        },
    ) as span:
        yield span


@contextlib.contextmanager
def batch_span(topic: str, count: int) -> Iterator[trace.Span]:
    """One span for a batch of `count` deliveries handled in one transaction (batch.py): its
    messages get none of their own, so it starts a trace of its own."""
    with _tracer.start_as_current_span(
        f"{topic} process batch",
        context=otel_context.Context(),
        kind=SpanKind.CONSUMER,
        attributes={
            "messaging.system": "rabbitmq",
            "messaging.destination.name": topic,
            "messaging.batch.message_count": count,
        },
    ) as span:
        yield span


@contextlib.contextmanager
def publish_span(topic: str, parent: str | None = None) -> Iterator[trace.Span]:
    """A producer span, current while the message's headers are written.

    `parent` (a traceparent) makes it part of that trace instead of the current one, which is
    then linked: a lease issued while handling a host's status belongs to its build's trace.
    """
    with trace.use_span(start_publish_span(topic, parent), end_on_exit=True) as span:
        yield span


def start_publish_span(topic: str, parent: str | None = None) -> trace.Span:
    """publish_span's span, not made current: for a producer that writes many messages at
    once (outbox.add_many), which ends each one itself and takes its context with
    traceparent_of (attaching and detaching a context per message cost as much again)."""
    kwargs: dict[str, Any] = {}
    current = trace.get_current_span().get_span_context()
    if parent is not None and trace_id_of(parent) != f"{current.trace_id:032x}":
        remote = _remote_context({"traceparent": parent})
        if remote is not None:
            kwargs["context"] = trace.set_span_in_context(trace.NonRecordingSpan(remote))
            kwargs["links"] = [Link(current)] if current.is_valid else []
    return _tracer.start_span(
        f"{topic} publish",
        kind=SpanKind.PRODUCER,
        attributes={"messaging.system": "rabbitmq", "messaging.destination.name": topic},
        **kwargs,
    )


def traceparent_of(span: trace.Span) -> str | None:
    """The W3C `traceparent` that continues `span` (what the propagator would write), or
    None for an invalid one."""
    ctx = span.get_span_context()
    if not ctx.is_valid:
        return None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def start_relay_span(headers: Sequence[Mapping[str, Any]]) -> trace.Span:
    """One span for the relay sending a batch of outbox rows (their headers given), ended by
    the caller once the broker confirmed (or refused) them.

    A batch mixes messages of many traces, so its span starts a trace of its own, linked to
    each message's producer span (OpenTelemetry's shape for a batch send); the messages keep
    their producer span's context, which their consumers continue. A span per message cost
    more than the rest of relaying it.
    """
    links = [Link(c) for c in map(_remote_context, headers) if c is not None]
    return _tracer.start_span(
        "outbox relay",
        context=otel_context.Context(),
        kind=SpanKind.PRODUCER,
        links=links,
        attributes={"messaging.system": "rabbitmq", "messaging.batch.message_count": len(headers)},
    )


def _remote_context(headers: Mapping[str, Any]) -> trace.SpanContext | None:
    """The span context a message's `traceparent` names (version 00), without a propagator."""
    parts = str(headers.get("traceparent", "")).split("-")
    if len(parts) != 4 or len(parts[1]) != 32 or len(parts[2]) != 16 or len(parts[3]) != 2:
        return None
    try:
        trace_id, span_id, flags = int(parts[1], 16), int(parts[2], 16), int(parts[3], 16)
    except ValueError:
        return None
    if not trace_id or not span_id:
        return None
    return trace.SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(flags))


def end_span(span: trace.Span, error: BaseException | None = None) -> None:
    if error is not None:
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, type(error).__name__))
    span.end()


def record_sent_many(sent: Iterable[tuple[str, bytes]]) -> None:
    """Count what confirmed messages announce: leases (in one add per batch), verdicts, the
    throttle."""
    leases = 0
    for routing_key, body in sent:
        if routing_key.startswith("skyline.task.leased"):
            leases += 1
        elif routing_key.startswith(("skyline.task.verified", "skyline.task.mismatch")):
            kind = "verified" if routing_key.startswith("skyline.task.verified") else "mismatch"
            attributes = {"kind": kind}
            if kind == "verified":
                with contextlib.suppress(ValueError, AttributeError):
                    attributes["status"] = str(json.loads(body).get("status", ""))
            METRICS.verdicts.add(1, attributes)
        elif routing_key in ("skyline.throttle.engaged", "skyline.throttle.released"):
            METRICS.throttle_engaged.set(1 if routing_key == "skyline.throttle.engaged" else 0)
    if leases:
        METRICS.leases_issued.add(leases)


# -- database ---------------------------------------------------------------------------------


@contextlib.contextmanager
def db_span(operation: str, namespace: str) -> Iterator[trace.Span]:
    with _tracer.start_as_current_span(
        f"db {operation}",
        kind=SpanKind.CLIENT,
        attributes={"db.system": "postgresql", "db.namespace": namespace},
    ) as span:
        yield span


# Transaction control and the pool's housekeeping: the transaction's own span covers them.
_UNTRACED_STATEMENTS = (
    "BEGIN",
    "COMMIT",
    "ROLLBACK",
    "SAVEPOINT",
    "RELEASE",
    "RESET",
    "SELECT PG_",
)


def query_span(statement: str) -> contextlib.AbstractContextManager[Any]:
    """A span for one SQL statement, if it serves traced work (a message, a request, a build):
    queries outside any trace (the relay's polling, periodic jobs) would each be a lone trace."""
    text = statement.lstrip()
    if not trace.get_current_span().get_span_context().is_valid or text.upper().startswith(
        _UNTRACED_STATEMENTS
    ):
        return contextlib.nullcontext()
    operation = text.split(None, 1)[0].upper() if text else "SQL"
    return _tracer.start_as_current_span(
        f"db {operation}",
        kind=SpanKind.CLIENT,
        attributes={
            "db.system": "postgresql",
            "db.operation.name": operation,
            "db.query.text": text[:1000],  # parameters are never part of it
        },
    )


# -- HTTP -------------------------------------------------------------------------------------


def client_trace_config() -> aiohttp.TraceConfig:
    """For `aiohttp.ClientSession(trace_configs=[...])`: a client span per request, whose
    context goes out in the request's `traceparent` header."""
    config = aiohttp.TraceConfig()

    async def on_start(
        _session: aiohttp.ClientSession,
        ctx: types.SimpleNamespace,
        params: aiohttp.TraceRequestStartParams,
    ) -> None:
        span = _tracer.start_span(
            f"HTTP {params.method}",
            kind=SpanKind.CLIENT,
            attributes={
                "http.request.method": params.method,
                "server.address": params.url.host or "",
                "url.path": params.url.path,
            },
        )
        ctx.span = span
        propagate.inject(params.headers, context=trace.set_span_in_context(span))

    async def on_end(
        _session: aiohttp.ClientSession,
        ctx: types.SimpleNamespace,
        params: aiohttp.TraceRequestEndParams,
    ) -> None:
        span = getattr(ctx, "span", None)
        if span is not None:
            span.set_attribute("http.response.status_code", params.response.status)
            if params.response.status >= 500:
                span.set_status(Status(StatusCode.ERROR))
            span.end()

    async def on_exception(
        _session: aiohttp.ClientSession,
        ctx: types.SimpleNamespace,
        params: aiohttp.TraceRequestExceptionParams,
    ) -> None:
        span = getattr(ctx, "span", None)
        if span is not None:
            end_span(span, params.exception)

    config.on_request_start.append(on_start)
    config.on_request_end.append(on_end)
    config.on_request_exception.append(on_exception)
    return config


@web.middleware
async def server_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """A server span per request, continuing the caller's trace (its `traceparent`)."""
    route = request.match_info.route.resource
    template = route.canonical if route is not None else request.path
    with _tracer.start_as_current_span(
        f"{request.method} {template}",
        context=extract(request.headers),
        kind=SpanKind.SERVER,
        attributes={"http.request.method": request.method, "http.route": template},
    ) as span:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            span.set_attribute("http.response.status_code", exc.status)
            if exc.status >= 500:
                span.set_status(Status(StatusCode.ERROR))
            raise
        span.set_attribute("http.response.status_code", response.status)
        return response


@contextlib.contextmanager
def span(name: str, **attributes: Any) -> Iterator[trace.Span]:
    with _tracer.start_as_current_span(name, attributes=attributes) as current:
        yield current


@contextlib.contextmanager
def attached(traceparent: str | None) -> Iterator[None]:
    """Make `traceparent` the current context (a resumed lease continues its trace)."""
    if not traceparent:
        yield
        return
    token = otel_context.attach(propagate.extract({"traceparent": traceparent}))
    try:
        yield
    finally:
        otel_context.detach(token)
