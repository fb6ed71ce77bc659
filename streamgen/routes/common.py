"""Helpers the route modules share: following a job, renderers, job objects, video files."""

from __future__ import annotations

from typing import Any

from quart import Response, send_file

from streamgen.broker.base import Event
from streamgen.errors import InvalidParameter, ServiceError, SlowConsumer
from streamgen.jobs import Job
from streamgen.protocol import ErrorBody, JobLinks, JobObject
from streamgen.service import Service
from streamgen.streaming import Follower, Render, StreamBody, slow_consumer_fields
from streamgen.transports import mp4, ndjson, sse


async def open_follower(
    service: Service, job: Job, from_seq: int, *, holds_lease: bool = False
) -> Follower:
    """An opened `Follower` of `job` from `from_seq`; on failure the lease is given back."""
    follower = Follower(
        service.manager,
        job,
        from_seq,
        max_pending=service.settings.subscriber_buffer_events,
        resume_grace_s=service.settings.resume_grace_seconds,
        holds_lease=holds_lease,
    )
    try:
        return await follower.open()
    except BaseException:
        follower.release()
        raise


# What a text subscriber may ask for in segment events (`?payload=`): both forms, only the
# continuous fragment (an MSE player), or only the self-contained segment (a file saver).
PAYLOAD_OMITS = {
    "both": frozenset(),
    "fragment": frozenset({"segment"}),
    "segment": frozenset({"fragment"}),
}


def payload_omit(choice: str | None) -> frozenset[str]:
    """The byte fields to leave out for ``?payload=`` (both, fragment or segment)."""
    if choice is None:
        return PAYLOAD_OMITS["both"]
    if choice not in PAYLOAD_OMITS:
        raise InvalidParameter(
            f"payload must be one of {', '.join(PAYLOAD_OMITS)}, got {choice!r}", param="payload"
        )
    return PAYLOAD_OMITS[choice]


def sse_response(
    service: Service, follower: Follower, omit: frozenset[str] = frozenset()
) -> Response:
    """A ``text/event-stream`` response of the follower's events."""
    frames, job_id = service.frames, follower.job.id
    transport = "sse:" + ",".join(sorted(omit))

    def render(item: Event | SlowConsumer | None) -> bytes:
        if item is None:
            return sse.KEEP_ALIVE
        if isinstance(item, SlowConsumer):
            fields = slow_consumer_fields(item, job_id)
            return sse.format_message("error", fields["seq"], fields)
        return frames.frame(transport, item, lambda event: sse.format_event(event, omit))

    body = StreamBody(
        follower,
        render,
        preamble=sse.format_retry(service.settings.sse_retry_ms),
        heartbeat_s=service.settings.sse_heartbeat_seconds,
    )
    return streaming_response(body, sse.HEADERS, job_id)


def ndjson_response(
    service: Service, follower: Follower, omit: frozenset[str] = frozenset()
) -> Response:
    """An ``application/x-ndjson`` response of the follower's events."""
    frames, job_id = service.frames, follower.job.id
    transport = "ndjson:" + ",".join(sorted(omit))

    def render(item: Event | SlowConsumer | None) -> bytes | None:
        if item is None:
            return None
        if isinstance(item, SlowConsumer):
            fields = slow_consumer_fields(item, job_id)
            error = {k: fields.pop(k) for k in ("code", "message", "param")}
            line = {"status": "error", "job_id": job_id, "seq": fields["seq"], "error": error}
            return ndjson.format_line({**line, "resume_from": item.resume_from})
        return frames.frame(transport, item, lambda event: ndjson.format_event(event, omit))

    return streaming_response(StreamBody(follower, render), ndjson.HEADERS, job_id)


def live_mp4_response(follower: Follower) -> Response:
    """The growing ``video/mp4`` body of a running job: init, then fragments as they come."""
    render: Render = lambda item: mp4.body_chunk(item) if isinstance(item, Event) else None  # noqa: E731
    headers = {"Content-Type": mp4.CONTENT_TYPE, "Cache-Control": "no-cache"}
    return streaming_response(StreamBody(follower, render), headers, follower.job.id)


def streaming_response(body: StreamBody, headers: dict[str, str], job_id: str) -> Response:
    response = Response(body, status=200, headers={**headers, "X-Job-Id": job_id})
    response.timeout = None  # Quart would cut a stream after RESPONSE_TIMEOUT
    return response


async def video_file_response(service: Service, job: Job) -> Response:
    """The finished job's MP4 with Range support (206 for a byte range); 404 when it made
    no video, 410 when (scale-out) its segments are no longer in the backlog."""
    path = await service.manager.video_file(job)
    response = await send_file(path, mimetype=mp4.CONTENT_TYPE, conditional=True)
    response.headers["Accept-Ranges"] = "bytes"
    return response


def from_seq_of(last_event_id: str | None, from_seq: str | None) -> int:
    """Where to resume: after `Last-Event-ID` (it wins), else ``?from_seq``, else 0."""
    if last_event_id is not None and last_event_id.strip():
        value = _integer(last_event_id, "Last-Event-ID", minimum=-1)
        return value + 1
    if from_seq is not None:
        return _integer(from_seq, "from_seq", minimum=0)
    return 0


def _integer(text: str, param: str, *, minimum: int) -> int:
    try:
        value = int(text.strip())
    except ValueError as exc:
        raise InvalidParameter(f"{param} must be an integer, got {text!r}", param=param) from exc
    if value < minimum:
        raise InvalidParameter(f"{param} must be at least {minimum}, got {value}", param=param)
    return value


def error_body(error: ServiceError | None) -> ErrorBody | None:
    if error is None:
        return None
    return ErrorBody(code=error.code, message=error.message, param=error.param)


def job_object(job: Job) -> dict[str, Any]:
    """The JSON of `/v1/jobs/{id}`."""
    request = job.request
    base = f"/v1/jobs/{job.id}"
    return JobObject(
        id=job.id,
        status=job.status,
        model=job.model,
        prompt=request.prompt,
        priority=job.priority,
        request_scoped=job.request_scoped,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        width=request.width,
        height=request.height,
        fps=request.fps,
        seed=request.seed,
        total_segments=request.total_segments,
        total_frames=request.total_frames,
        segments_done=job.segments_done,
        frames_done=job.frames_done,
        progress=job.progress,
        last_seq=job.last_seq,
        error=error_body(job.error),
        links=JobLinks(self=base, events=f"{base}/events", video=f"{base}/video.mp4"),
    ).model_dump()
