"""Optional OpenTelemetry spans: request → job → segment → encode, and publish.

Spans are made when the OpenTelemetry API is installed (``pip install 'streamgen[otel]'``);
they go wherever the process's tracer provider sends them (configure the SDK and an
exporter as usual, e.g. with ``opentelemetry-instrument``). Without the API every function
here does nothing and costs nothing.

- ``HTTP <method> <route>``: one per request or WebSocket (the access-log middleware);
- ``job``: one per run of a job, on the worker that runs it, a child of the request that
  made it: its W3C ``traceparent`` travels with the job (in Redis too, across processes);
- ``segment``: one per window generated for the job (its batch size as an attribute);
- ``encode``: the segment's encode, on the job's encoder thread;
- ``publish``: each segment's and the terminal event's publish.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

log = logging.getLogger(__name__)

try:
    from opentelemetry import context as otel_context
    from opentelemetry import trace
    from opentelemetry.propagate import extract, inject
except ImportError:  # the API is optional
    trace = None  # type: ignore[assignment]
except Exception as exc:  # installed but misconfigured (OTEL_* variables): no spans
    log.error("OpenTelemetry is installed but cannot load, so no spans are made: %s", exc)
    trace = None  # type: ignore[assignment]

Span = Any  # an OpenTelemetry span, or None without the API
Attributes = Mapping[str, str | int | float | bool]


def enabled() -> bool:
    return trace is not None


def _tracer() -> Any:
    return trace.get_tracer("streamgen") if trace is not None else None


def _give_up(exc: Exception) -> None:
    """Tracing failed (a misconfigured SDK): say so once and make no more spans. A trace
    must never fail a request or a job."""
    global trace
    if trace is not None:
        log.error("OpenTelemetry failed, so no more spans are made: %r", exc)
    trace = None  # type: ignore[assignment]


def _parent_context(parent: Span | str | None) -> Any:
    """An OpenTelemetry context from a span, a W3C traceparent, or the current one."""
    if trace is None:
        return None
    if isinstance(parent, str):
        return extract({"traceparent": parent}) if parent else None
    if parent is not None:
        return trace.set_span_in_context(parent)
    return None


def start(name: str, parent: Span | str | None = None, attributes: Attributes | None = None
          ) -> Span:  # fmt: skip
    """A started span (not made current) under `parent` (a span, a traceparent, or None:
    the current context); None without the API. End it with `end`."""
    try:
        tracer = _tracer()
        if tracer is None:
            return None
        return tracer.start_span(name, context=_parent_context(parent), attributes=attributes)
    except Exception as exc:
        _give_up(exc)
        return None


def end(span: Span, attributes: Attributes | None = None, error: str | None = None) -> None:
    """End `span` (None: nothing), with `attributes` set and, for a failure, `error`."""
    if span is None or trace is None:
        return
    try:
        if attributes:
            span.set_attributes(dict(attributes))
        if error is not None:
            span.set_status(trace.Status(trace.StatusCode.ERROR, error))
        span.end()
    except Exception as exc:
        _give_up(exc)


@contextmanager
def current(name: str, parent: Span | str | None = None, attributes: Attributes | None = None,
            *, server: bool = False) -> Iterator[Span]:  # fmt: skip
    """A span that is the current one while the block runs (children made inside it, and
    tasks started inside it, are its children); yields None without the API."""
    made = span = None
    try:
        tracer = _tracer()
        if tracer is not None:
            kind = trace.SpanKind.SERVER if server else trace.SpanKind.INTERNAL
            made = tracer.start_as_current_span(
                name, context=_parent_context(parent), kind=kind, attributes=attributes
            )
            span = made.__enter__()
    except Exception as exc:
        _give_up(exc)
        made = span = None
    if made is None:
        yield None
        return
    failure: BaseException | None = None
    try:
        yield span
    except BaseException as exc:
        failure = exc
        raise
    finally:
        try:
            if failure is None:
                made.__exit__(None, None, None)
            else:
                made.__exit__(type(failure), failure, failure.__traceback__)
        except Exception as exc:
            _give_up(exc)


def traceparent() -> str:
    """The current span's W3C ``traceparent`` ("" without the API or a current span)."""
    if trace is None:
        return ""
    carrier: dict[str, str] = {}
    try:
        inject(carrier, context=otel_context.get_current())
    except Exception as exc:
        _give_up(exc)
    return carrier.get("traceparent", "")
