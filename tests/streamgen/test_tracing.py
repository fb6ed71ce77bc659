"""OpenTelemetry spans of a real stream: the request's span is the parent of the job's, the
job's of each segment's and of each publish, a segment's of its encode."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from streamgen import tracing
from tests.streamgen.stream_reading import SMALL

_EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module")
def spans() -> Iterator[InMemorySpanExporter]:
    """The process's tracer provider (set once per process) exporting to memory."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
    trace.set_tracer_provider(provider)
    yield _EXPORTER
    provider.shutdown()  # later tests' spans are not kept (the provider stays set)
    _EXPORTER.clear()


def _wait_for_spans(exporter: InMemorySpanExporter, job_id: str) -> tuple[Any, Any]:
    """The job's span and its parent, the request's, once both ended (the job's ends after
    its last event, the request's once the app returned: either may come last)."""
    deadline = time.monotonic() + 60
    while True:
        finished = exporter.get_finished_spans()
        job = next((s for s in finished if s.name == "job"
                    and s.attributes.get("streamgen.job_id") == job_id), None)  # fmt: skip
        if job is not None:
            request = next((s for s in finished if s.context.span_id == job.parent.span_id), None)
            if request is not None:
                return job, request
        assert time.monotonic() < deadline, "the job's or the request's span never ended"
        time.sleep(0.02)  # polling a deadline, not synchronising


def test_a_stream_is_traced_from_request_to_encode(
    server_url: str, spans: InMemorySpanExporter
) -> None:
    with httpx.stream("POST", f"{server_url}/generate-stream", json=SMALL, timeout=60) as r:
        assert r.status_code == 200
        job_id = r.headers["X-Job-Id"]
        body = b"".join(r.iter_bytes())
    assert b"event: complete" in body
    job, request = _wait_for_spans(spans, job_id)
    finished = spans.get_finished_spans()
    assert request.name == "HTTP POST /generate-stream"
    assert request.kind == trace.SpanKind.SERVER
    assert request.attributes["http.response.status_code"] == 200
    assert job.attributes["streamgen.status"] == "completed"
    assert job.context.trace_id == request.context.trace_id

    children = [
        s for s in finished if s.parent is not None and s.parent.span_id == job.context.span_id
    ]
    segments = [s for s in children if s.name == "segment"]
    assert len(segments) == job.attributes["streamgen.segments"] >= 2
    published = [s.attributes["streamgen.event"] for s in children if s.name == "publish"]
    assert published.count("segment") == len(segments) and published[-1] == "complete"
    segment_ids = {s.context.span_id for s in segments}
    encodes = [  # spans of jobs from other modules' tests on the shared server have no parent
        s for s in finished
        if s.name == "encode" and s.parent is not None and s.parent.span_id in segment_ids
    ]  # fmt: skip
    assert len(encodes) == len(segments)


def test_without_the_api_nothing_is_made(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracing, "trace", None)
    assert tracing.start("job") is None and tracing.traceparent() == ""
    with tracing.current("x") as span:
        assert span is None
    tracing.end(None)  # no-op


def test_a_callers_trace_is_continued(server_url: str, spans: InMemorySpanExporter) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    given = f"00-{trace_id}-00f067aa0ba902b7-01"
    assert httpx.get(f"{server_url}/health", headers={"traceparent": given}).status_code == 200
    deadline = time.monotonic() + 10
    while not [
        s
        for s in spans.get_finished_spans()
        if s.name == "HTTP GET /health" and f"{s.context.trace_id:032x}" == trace_id
    ]:
        assert time.monotonic() < deadline, "no span continued the caller's trace"
        time.sleep(0.02)  # polling a deadline, not synchronising


class _BrokenTrace:
    """An OpenTelemetry whose SDK is misconfigured: every tracer lookup fails."""

    SpanKind = trace.SpanKind

    def get_tracer(self, name: str) -> Any:
        raise StopIteration(name)


def test_a_broken_sdk_stops_tracing_but_not_the_server(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(tracing, "trace", _BrokenTrace())
    with tracing.current("HTTP GET /health") as span:
        assert span is None
    assert tracing.trace is None  # gave up: no more attempts, one error logged
    assert tracing.start("job") is None
    assert [r.levelname for r in caplog.records if r.name == "streamgen.tracing"] == ["ERROR"]
