"""One build is one trace: from the request to build.complete, across every service and the
builder, each process writing its finished spans to a file (otlp_endpoint = file://...)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.cli.localsystem import LocalSystem
from tests.e2e.test_walking_skeleton import request_body, request_message, stock_publish

pytestmark = pytest.mark.e2e


@pytest.fixture
def traced_system() -> Iterator[tuple[LocalSystem, Path]]:
    """A local system of its own whose processes export spans to JSON-lines files."""
    state = Path(tempfile.mkdtemp(prefix="skyline-trace-"))
    spans = state / "spans"
    saved = os.environ.get("SKYLINE_OTLP_ENDPOINT")
    os.environ["SKYLINE_OTLP_ENDPOINT"] = spans.as_uri()  # the processes inherit it
    local = LocalSystem(state, fast_db=True)
    try:
        local.up(builders=2, progress=lambda line: None)
        yield local, spans
    finally:
        local.down(progress=lambda line: None)
        if saved is None:
            os.environ.pop("SKYLINE_OTLP_ENDPOINT", None)
        else:
            os.environ["SKYLINE_OTLP_ENDPOINT"] = saved
        shutil.rmtree(state, ignore_errors=True)


def read_spans(folder: Path) -> list[dict]:
    spans = []
    for file in folder.glob("*.jsonl"):
        for line in file.read_text().splitlines():
            if line.endswith("}"):  # a line being written is not read yet
                spans.append(json.loads(line))
    return spans


def build_trace(folder: Path, request_id: str) -> list[dict]:
    """The spans of the trace whose root is the dispatcher's consume of `request_id`."""
    spans = read_spans(folder)
    roots = [
        s
        for s in spans
        if s["kind"] == "CONSUMER"
        and s["name"].startswith("skyline.build.request.")
        and s["attributes"].get("messaging.message.id") == request_id
    ]
    if not roots:
        return []
    return [s for s in spans if s["trace_id"] == roots[0]["trace_id"]]


def complete(trace: list[dict]) -> bool:
    """build.complete was written and every span's parent has been written too."""
    ids = {s["span_id"] for s in trace}
    sent = any(s["name"] == "skyline.build.complete publish" for s in trace)
    return sent and all(s["parent_id"] is None or s["parent_id"] in ids for s in trace)


def first(trace: list[dict], service: str, name: str) -> dict:
    matches = [
        s for s in trace if s["service"] == f"skyline-{service}" and s["name"].startswith(name)
    ]
    assert matches, f"no span {name}* of {service} in the trace"
    return min(matches, key=lambda s: s["start"])


async def test_one_build_is_one_trace_across_five_processes(traced_system, example_srpm, tmp_path):
    system, folder = traced_system
    request = request_message(system, await request_body(system, example_srpm))
    # From a stock fedora-messaging client, which sends no trace: the dispatcher's consume is
    # the root. (Through this process's Bus, the request would carry a producer span that only
    # a test's tracer, set earlier in the run, records, and never writes to the folder.)
    await asyncio.to_thread(stock_publish, system, tmp_path, request)

    trace: list[dict] = []
    for _ in range(1800):
        trace = build_trace(folder, request.id)
        if complete(trace):
            break
        await asyncio.sleep(0.1)
    files = sorted(p.name for p in folder.glob("*"))
    assert complete(trace), (files, sorted((s["service"], s["name"]) for s in trace))

    processes = {(s["service"], s["pid"]) for s in trace}
    services = {service for service, _ in processes}
    assert {
        "skyline-dispatcher",
        "skyline-verifier",
        "skyline-collector",
        "skyline-registry",
        "skyline-builder",
    } <= services, services
    assert len(processes) >= 5

    # A tree: one root (the request's consume), every other span's parent in the trace.
    by_id = {s["span_id"]: s for s in trace}
    roots = [s for s in trace if s["parent_id"] is None]
    assert len(roots) == 1 and roots[0]["name"].startswith("skyline.build.request.")
    for s in trace:
        seen = set()
        node = s
        while node["parent_id"] is not None:  # every path leads to the root, without cycles
            assert node["span_id"] not in seen
            seen.add(node["span_id"])
            parent = by_id[node["parent_id"]]
            assert parent["start"] <= node["start"], (parent["name"], node["name"])
            node = parent
        assert node is roots[0]

    # Causal order across the processes.
    steps = [
        first(trace, "dispatcher", "skyline.build.request."),
        first(trace, "dispatcher", "skyline.task.leased"),
        first(trace, "builder", "skyline.task.started"),
        first(trace, "collector", "PUT "),
        first(trace, "verifier", "skyline.task.finished"),
        first(trace, "collector", "skyline.build.stored publish"),
        first(trace, "dispatcher", "skyline.build.complete publish"),
    ]
    starts = [s["start"] for s in steps]
    assert starts == sorted(starts), [(s["service"], s["name"]) for s in steps]

    # The kinds of span the system makes: consume, publish, database, HTTP client and server.
    kinds = {(s["kind"], s["name"].split(" ")[-1]) for s in trace}
    assert {("CONSUMER", "process"), ("PRODUCER", "publish")} <= kinds
    # The relays' batch spans are traces of their own, linked to the messages they sent.
    relays = [s for s in read_spans(folder) if s["name"] == "outbox relay"]
    assert any(trace[0]["trace_id"] in s["links"] for s in relays)
    assert any(s["name"] == "db transaction" for s in trace)
    assert any(s["kind"] == "CLIENT" and s["name"].startswith("HTTP ") for s in trace)
    assert any(s["kind"] == "SERVER" for s in trace)
