"""The streaming responses of a job's events (SSE, NDJSON, the live MP4) and the finished
MP4 file, each built on a `Follower` of the job."""

from __future__ import annotations

from quart import Response, request, send_file
from werkzeug.datastructures import Range

from streamgen.broker.base import Event
from streamgen.errors import RangeNotSatisfiable, SlowConsumer
from streamgen.jobs import Job
from streamgen.streaming import Follower, Render, StreamBody, slow_consumer_fields
from streamgen.transports import mp4, ndjson, sse

from .state import AppState


async def open_follower(
    state: AppState, job: Job, from_seq: int, *, holds_lease: bool = False
) -> Follower:
    """An opened `Follower` of `job` from `from_seq`; on failure the lease is given back."""
    follower = Follower(
        state.manager,
        job,
        from_seq,
        max_pending=state.settings.subscriber_buffer_events,
        resume_grace_s=state.settings.resume_grace_seconds,
        holds_lease=holds_lease,
    )
    try:
        return await follower.open()
    except BaseException:
        follower.release()
        raise


def sse_response(
    state: AppState, follower: Follower, omit: frozenset[str] = frozenset()
) -> Response:
    """A ``text/event-stream`` response of the follower's events."""
    frames, job_id = state.frames, follower.job.id
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
        preamble=sse.format_retry(state.settings.sse_retry_ms),
        heartbeat_s=state.settings.sse_heartbeat_seconds,
    )
    return streaming_response(body, sse.HEADERS, job_id)


def ndjson_response(
    state: AppState, follower: Follower, omit: frozenset[str] = frozenset()
) -> Response:
    """An ``application/x-ndjson`` response of the follower's events."""
    frames, job_id = state.frames, follower.job.id
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


async def video_file_response(state: AppState, job: Job) -> Response:
    """The finished job's MP4 with Range support (206 for a byte range); 404 when it made
    no video, 410 when (scale-out) its segments are no longer in the backlog."""
    path = await state.manager.video_file(job)
    _absolute_range(path.stat().st_size)
    response = await send_file(path, mimetype=mp4.CONTENT_TYPE, conditional=True)
    response.headers["Accept-Ranges"] = "bytes"
    return response


def _absolute_range(size: int) -> None:
    """Quart serves ``bytes=A-B`` and ``bytes=A-`` but not a suffix, ``bytes=-N`` (the last
    N bytes, RFC 9110 14.1.1): the request's range becomes the absolute one it stands for
    (the whole file when N is larger). A range that starts past the end is a 416."""
    wanted = request.range
    if wanted is None or wanted.units != "bytes" or len(wanted.ranges) != 1:
        return
    begin, end = wanted.ranges[0]
    if begin < 0 and end is None:
        request.range = Range("bytes", [(max(0, size + begin), None)])
    elif begin >= size:
        raise RangeNotSatisfiable(f"the file is {size} bytes; bytes from {begin} on", length=size)
