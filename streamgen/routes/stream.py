"""`POST /generate-stream` (SSE), `POST /generate-stream-chunked` (NDJSON) and
`POST /generate` (waits for the whole video). Their jobs are request-scoped: they are
cancelled when the last client following them goes away."""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

from quart import Blueprint, Response, jsonify, request, send_file

from streamgen.errors import ServiceError
from streamgen.protocol import ErrorResponse, GenerateRequest, GenerationParams, parse
from streamgen.streams import mp4, ndjson, sse
from streamgen.streams.follow import open_follower
from streamgen.streams.ndjson import ndjson_response
from streamgen.streams.sse import sse_response

from .state import app_state
from .submit import submit
from .table import Reply, api_route, read_params
from .views import inference_time_s

bp = Blueprint("stream", __name__)

_ERRORS = {
    400: Reply(model=ErrorResponse, description="malformed JSON"),
    413: Reply(model=ErrorResponse, description="body over max_body_bytes"),
    422: Reply(model=ErrorResponse, description="a field is invalid (error.param names it)"),
    429: Reply(model=ErrorResponse, description="the queue is full"),
    503: Reply(model=ErrorResponse, description="shutting down"),
}


@api_route(
    bp,
    "POST",
    "/generate-stream",
    summary="Generate and stream events as server-sent events (see docs/stream-protocol.md)",
    body=GenerationParams,
    replies={200: Reply(sse.CONTENT_TYPE, description="start, progress, segment…, complete"),
             **_ERRORS},
)  # fmt: skip
async def generate_stream() -> Response:
    state = app_state()
    params = parse(GenerationParams, await read_params())
    job = await submit(state, params, request_scoped=True, live=True)
    follower = await open_follower(state, job, 0, holds_lease=True)
    return sse_response(state, follower)


@api_route(
    bp,
    "POST",
    "/generate-stream-chunked",
    summary="Generate and stream events as NDJSON lines",
    body=GenerationParams,
    replies={200: Reply(ndjson.CONTENT_TYPE, description="one JSON object a line"), **_ERRORS},
)
async def generate_stream_chunked() -> Response:
    state = app_state()
    params = parse(GenerationParams, await read_params())
    job = await submit(state, params, request_scoped=True, live=True)
    follower = await open_follower(state, job, 0, holds_lease=True)
    return ndjson_response(state, follower)


@api_route(
    bp,
    "POST",
    "/generate",
    summary="Generate and answer once the whole video is done",
    body=GenerateRequest,
    replies={
        200: Reply(mp4.CONTENT_TYPE, description="the MP4 (response_format mp4) or JSON"),
        409: Reply(model=ErrorResponse, description="the job was cancelled"),
        **_ERRORS,
    },
)
async def generate() -> Response:
    state = app_state()
    params = parse(GenerateRequest, await read_params())
    manager = state.manager
    job = await submit(state, params, request_scoped=True)
    try:
        await job.done.wait()  # a client that goes away cancels this task, and so the job
    finally:
        manager.release(job)
    if job.state.status != "completed":
        raise job.state.error or ServiceError(f"job {job.id} ended {job.state.status}")
    video_path = await manager.video_file(job)
    if params.response_format == "mp4":
        response = await send_file(video_path, mimetype=mp4.CONTENT_TYPE)
        response.headers["X-Job-Id"] = job.id
        return response
    item: dict[str, Any] = {"mime": mp4.CONTENT_TYPE}
    if params.response_format == "b64_json":
        data = await asyncio.to_thread(video_path.read_bytes)
        item["b64_json"] = base64.b64encode(data).decode("ascii")
    else:
        item["url"] = f"{request.host_url.rstrip('/')}/v1/jobs/{job.id}/video.mp4"
    request_ = job.spec.request
    return jsonify(
        {
            "id": job.id,
            "object": "video.generation",
            "created": int(job.spec.created_at),
            "completed": int(job.state.finished_at or time.time()),
            "model": job.spec.model,
            "seed": request_.seed,
            "width": request_.width,
            "height": request_.height,
            "fps": request_.fps,
            "total_segments": job.state.segments_done,
            "total_frames": job.state.frames_done,
            "duration": job.state.frames_done / request_.fps,
            "inference_time_s": inference_time_s(job),
            "data": [item],
        }
    )
