"""A job as ``video/mp4``: the live body of a running job (the init segment from `start`,
then each segment's fragment with continuous decode times, byte for byte: a growing
fragmented MP4) and the finished file with byte ranges."""

from __future__ import annotations

from quart import Response, request, send_file
from streamgen_client import wire
from werkzeug.datastructures import Range

from streamgen.broker.base import Event
from streamgen.errors import RangeNotSatisfiable
from streamgen.events import SegmentPayload, StartPayload, payload_of
from streamgen.jobs import Job

from .follow import Follower, Render, Serving, StreamBody, streaming_response

CONTENT_TYPE = wire.MP4_CONTENT_TYPE


def body_chunk(event: Event) -> bytes | None:
    """The bytes `event` adds to the live MP4 body, or None when it adds none."""
    if event.type not in ("start", "segment"):
        return None
    payload = payload_of(event)
    if isinstance(payload, StartPayload):
        return payload.init_segment
    assert isinstance(payload, SegmentPayload)
    return payload.fragment


def live_mp4_response(follower: Follower) -> Response:
    """The growing ``video/mp4`` body of a running job: init, then fragments as they come."""
    render: Render = lambda item: body_chunk(item) if isinstance(item, Event) else None  # noqa: E731
    headers = {"Content-Type": CONTENT_TYPE, "Cache-Control": "no-cache"}
    return streaming_response(StreamBody(follower, render), headers, follower.job.id)


async def video_file_response(state: Serving, job: Job) -> Response:
    """The finished job's MP4 with Range support (206 for a byte range); 404 when it made
    no video, 410 when (scale-out) its segments are no longer in the backlog."""
    path = await state.manager.video_file(job)
    _absolute_range(path.stat().st_size)
    response = await send_file(path, mimetype=CONTENT_TYPE, conditional=True)
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
