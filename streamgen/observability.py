"""What an operator sees: Prometheus metrics, an access log, and JSON logs that name the
request and the job.

- Metrics live in `REGISTRY` (one per process; with ``PROMETHEUS_MULTIPROC_DIR`` set,
  prometheus_client's multi-process mode, and `/metrics` sums every process). The job layer
  reports through `job_event` (every event a worker publishes), the HTTP edge through
  `RequestLog` (every request) and the streaming code through the counters below.
- `RequestLog` (ASGI middleware) gives each request an id (``X-Request-Id``: the client's,
  or a new one), times it, counts its bytes, and writes one access-log line when it ends
  (logger ``streamgen.access``).
- `JsonFormatter` writes one JSON object a line with the request id and job id of the
  context the line was logged in (`log_format: json`).
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import re
import secrets
import time
from typing import TYPE_CHECKING, Any

from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, ASGISendEvent, Scope
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from . import tracing

if TYPE_CHECKING:
    from .jobs.pace import SegmentTiming

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
JOB_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("job_id", default=None)
KEY_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("key_id", default=None)
# What the app learns of a request that its access-log line needs (the key id): a dict
# the middleware makes per request, which the app's tasks share through their context.
_NOTES: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "request_notes", default=None
)
access_log = logging.getLogger("streamgen.access")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "WS"})
_JOB_IN_PATH = re.compile(r"\bjob_[0-9a-f]{20}\b")

REGISTRY = CollectorRegistry()
_SECONDS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)

REQUESTS = Counter(
    "streamgen_http_requests", "HTTP requests by route, method and status",
    ["route", "method", "status"], registry=REGISTRY,
)  # fmt: skip
BYTES_SENT = Counter(
    "streamgen_http_sent_bytes", "Response body bytes sent, by route", ["route"],
    registry=REGISTRY,
)  # fmt: skip
QUEUE_DEPTH = Gauge(
    "streamgen_queue_depth", "Jobs waiting for a worker", registry=REGISTRY,
    multiprocess_mode="max",
)  # fmt: skip
RUNNING_JOBS = Gauge(
    "streamgen_running_jobs", "Jobs being generated", registry=REGISTRY, multiprocess_mode="max"
)
RUNNING_STREAMS = Gauge(
    "streamgen_running_streams", "Live streams being generated", registry=REGISTRY,
    multiprocess_mode="max",
)  # fmt: skip
SUBSCRIBERS = Gauge(
    "streamgen_subscribers", "Open event streams (SSE, NDJSON, MP4, WebSocket)",
    registry=REGISTRY, multiprocess_mode="livesum",
)  # fmt: skip
FIRST_SEGMENT = Histogram(
    "streamgen_time_to_first_segment_seconds", "From a job's creation to its first segment",
    registry=REGISTRY, buckets=_SECONDS,
)  # fmt: skip
GENERATE_SECONDS = Histogram(
    "streamgen_segment_generate_seconds", "Generating one segment", registry=REGISTRY,
    buckets=_SECONDS,
)  # fmt: skip
ENCODE_SECONDS = Histogram(
    "streamgen_segment_encode_seconds", "Encoding one segment", registry=REGISTRY,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
)  # fmt: skip
REALTIME_FACTOR = Histogram(
    "streamgen_realtime_factor", "A finished job's video seconds per wall second",
    registry=REGISTRY, buckets=(0.25, 0.5, 0.75, 1, 1.25, 1.5, 2, 3, 5, 10),
)  # fmt: skip
JOB_OUTCOMES = Counter(
    "streamgen_jobs_finished", "Jobs that ended, by outcome (completed or the error code)",
    ["outcome"], registry=REGISTRY,
)  # fmt: skip
SLOW_CONSUMERS = Counter(
    "streamgen_slow_consumer_cutoffs", "Subscribers cut off for falling behind",
    registry=REGISTRY,
)  # fmt: skip
STALLED_CLIENTS = Counter(
    "streamgen_stalled_client_cutoffs", "Connections cut for reading nothing (write timeout)",
    registry=REGISTRY,
)  # fmt: skip
LIVE_FIRST_SEGMENT = Histogram(
    "streamgen_live_first_segment_seconds", "From a live stream's creation to its first segment",
    registry=REGISTRY, buckets=_SECONDS,
)  # fmt: skip
LIVE_SLACK = Histogram(
    "streamgen_live_deadline_slack_seconds",
    "A live segment's arrival before its viewer plays it (negative: a deadline miss)",
    registry=REGISTRY, buckets=(-5, -2, -1, -0.5, -0.25, -0.1, 0, 0.1, 0.25, 0.5, 1, 2, 5, 10),
)  # fmt: skip
LIVE_MISSES = Counter(
    "streamgen_live_deadline_misses",
    "Live segments that arrived after the viewer's buffer ran out",
    registry=REGISTRY,
)  # fmt: skip
LIVE_GAP_ERROR = Histogram(
    "streamgen_live_arrival_jitter_seconds",
    "|gap between two live segments' arrivals - the first one's video seconds|",
    registry=REGISTRY, buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5),
)  # fmt: skip
REDIS_RETRIES = Counter(
    "streamgen_redis_retries", "Redis calls retried after a connection failure",
    registry=REGISTRY,
)  # fmt: skip


def render_metrics() -> tuple[bytes, str]:
    """The exposition text of this process (or, in multi-process mode, of them all)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def job_event(job_created_at: float, data: dict[str, Any], kind: str, rtf: float | None) -> None:
    """Count what a published event says (the worker that publishes it calls this)."""
    if kind == "segment":
        if data.get("segment_index") == 0:
            FIRST_SEGMENT.observe(max(0.0, time.time() - job_created_at))
        GENERATE_SECONDS.observe(float(data.get("generate_seconds") or 0.0))
        ENCODE_SECONDS.observe(float(data.get("encode_seconds") or 0.0))
    elif kind == "complete":
        JOB_OUTCOMES.labels("completed").inc()
        if rtf is not None:
            REALTIME_FACTOR.observe(rtf)
    elif kind == "error":
        JOB_OUTCOMES.labels(str(data.get("code") or "error")).inc()


def live_segment(timing: SegmentTiming, first_segment_s: float | None) -> None:
    """Count how a live segment's arrival suited its viewer (where it is published)."""
    LIVE_SLACK.observe(timing.slack)
    if timing.slack < 0:
        LIVE_MISSES.inc()
    if timing.gap_error is not None:
        LIVE_GAP_ERROR.observe(abs(timing.gap_error))
    if first_segment_s is not None:
        LIVE_FIRST_SEGMENT.observe(first_segment_s)


def note_key(key_id: str) -> None:
    """The request in this context was made with API key `key_id` (never its secret):
    its log records and its access-log line name it."""
    KEY_ID.set(key_id)
    notes = _NOTES.get()
    if notes is not None:
        notes["key_id"] = key_id


class RequestLog:
    """ASGI middleware: a request id, an access-log line and the request metrics.

    `route_of(method, path)` names the route (its template, bounded in number) for labels.
    """

    def __init__(self, app: Any, route_of: Any) -> None:
        self.app = app
        self.route_of = route_of

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"x-request-id", b"").decode("latin-1").strip()
        request_id = given[:64] if given.isprintable() and given else secrets.token_hex(8)
        token = REQUEST_ID.set(request_id)
        notes: dict[str, str] = {}
        notes_token = _NOTES.set(notes)
        method = scope.get("method", "GET") if scope["type"] == "http" else "WS"
        method = method if method in _METHODS else "OTHER"  # labels stay few
        route = self.route_of(method, scope.get("path", ""))
        started, status, sent, done = time.perf_counter(), 0, 0, False
        request_span: tracing.Span = None
        length: int | None = None  # the answer's Content-Length, when it has one
        job_id = _job_in_path(scope.get("path", ""))

        def finish() -> None:
            """Count and log the request (once): just before its last byte goes out, so
            whoever has read the whole answer finds it counted."""
            nonlocal done
            if done:
                return
            done = True
            seconds = time.perf_counter() - started
            REQUESTS.labels(route, method, str(status or 500)).inc()
            if request_span is not None:
                request_span.set_attribute("http.response.status_code", status or 500)
            BYTES_SENT.labels(route).inc(sent)
            client = scope.get("client")
            job_token, key_token = JOB_ID.set(job_id), KEY_ID.set(notes.get("key_id"))
            access_log.info(
                "%s %s %s %d %d B %.3f s",
                client[0] if client else "-", method, scope.get("path", ""), status or 500,
                sent, seconds,
                extra={"access": {"method": method, "path": scope.get("path", ""),
                                  "route": route, "status": status or 500, "bytes": sent,
                                  "seconds": round(seconds, 4),
                                  "client": client[0] if client else None}},
            )  # fmt: skip
            JOB_ID.reset(job_token)
            KEY_ID.reset(key_token)

        async def observed_send(message: ASGISendEvent) -> None:
            nonlocal status, sent, job_id, length
            if message["type"] == "http.response.start":
                status = int(message["status"])
                for name, value in message.get("headers", []):
                    if name.lower() == b"x-job-id":
                        job_id = value.decode("latin-1")
                    elif name.lower() == b"content-length" and value.isdigit():
                        length = int(value)
                message = {**message, "headers": [*message.get("headers", []),
                           (b"x-request-id", request_id.encode())]}  # fmt: skip
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
                if not message.get("more_body", False) or (length is not None and sent >= length):
                    finish()
            elif message["type"] == "websocket.accept":
                status = 101
            elif message["type"] == "websocket.http.response.start":
                status = int(message["status"])  # refused before the upgrade
            elif message["type"] == "websocket.close":
                status = status or 403  # closed before the upgrade: refused
            await send(message)

        attributes = {"http.request.method": method, "http.route": route}
        try:
            parent = headers.get(b"traceparent", b"").decode("latin-1") or None  # a caller's trace
            with tracing.current(f"HTTP {method} {route}", parent, attributes, server=True) as span:
                request_span = span
                try:
                    await self.app(scope, receive, observed_send)
                finally:
                    finish()
        finally:
            REQUEST_ID.reset(token)
            _NOTES.reset(notes_token)


def _job_in_path(path: str) -> str | None:
    match = _JOB_IN_PATH.search(path)
    return match.group(0) if match else None


class ContextFilter(logging.Filter):
    """Stamps each record with the request id, job id and key id of the context it is logged in
    (handlers may format it later, elsewhere)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = REQUEST_ID.get()
        if not hasattr(record, "job_id"):
            record.job_id = JOB_ID.get()
        if not hasattr(record, "key_id"):
            record.key_id = KEY_ID.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, and the request id, job id,
    key id and access fields of the context it was logged in."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, var in (("request_id", REQUEST_ID), ("job_id", JOB_ID), ("key_id", KEY_ID)):
            value = getattr(record, key, None) or var.get()
            if value is not None:
                line[key] = value
        access = getattr(record, "access", None)
        if access is not None:
            line["access"] = access
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure_logging(level: str, log_format: str) -> None:
    """The process's logging: plain text lines, or JSON lines (`log_format: json`);
    `ValueError` for another format."""
    if log_format not in ("text", "json"):
        raise ValueError(f"log_format must be text or json, got {log_format!r}")
    handler = logging.StreamHandler()
    handler.addFilter(ContextFilter())
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
