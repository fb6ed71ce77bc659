"""OpenAI-style `/v1/videos`: a video object per job (create, retrieve, download)."""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response, jsonify

from streamgen.errors import Conflict
from streamgen.jobs import Job
from streamgen.protocol import ErrorResponse, VideoCreateRequest, VideoObject, parse, video_params
from streamgen.transports import mp4

from .responses import video_file_response
from .state import app_state
from .submit import submit
from .table import Reply, api_route, read_params
from .views import error_body

bp = Blueprint("videos", __name__)

_STATUS = {
    "queued": "queued",
    "running": "in_progress",
    "completed": "completed",
    "failed": "failed",
    "cancelled": "failed",
}


def video_object(job: Job) -> dict[str, Any]:
    """The OpenAI-style video object of `job`."""
    request = job.request
    seconds = request.seconds
    return VideoObject(
        id=job.id,
        status=_STATUS[job.status],  # type: ignore[arg-type]
        progress=_percent(job),
        created_at=int(job.created_at),
        completed_at=int(job.finished_at)
        if job.status == "completed" and job.finished_at
        else None,
        model=job.model,
        prompt=request.prompt,
        seconds="unbounded" if seconds is None else f"{seconds:g}",
        size=f"{request.width}x{request.height}",
        error=error_body(job.error),
    ).model_dump()


def _percent(job: Job) -> int:
    if job.status == "completed":
        return 100
    total = job.request.total_segments
    if not total:
        return 0
    steps = job.request.num_inference_steps
    step = (
        job.progress["step"]
        if job.progress and job.progress["segment_index"] >= job.segments_done
        else 0
    )
    return min(99, int(100 * (job.segments_done * steps + step) / (total * steps)))


@api_route(
    bp,
    "POST",
    "/v1/videos",
    summary="Create a video (OpenAI-style); poll it, then download its content",
    body=VideoCreateRequest,
    replies={
        200: Reply(model=VideoObject),
        422: Reply(model=ErrorResponse, description="a field is invalid"),
        429: Reply(model=ErrorResponse, description="the queue is full"),
    },
)
async def create_video() -> Response:
    state = app_state()
    params = video_params(parse(VideoCreateRequest, await read_params()))
    job = await submit(state, params, request_scoped=False)
    return jsonify(video_object(job))


@api_route(
    bp,
    "GET",
    "/v1/videos/<video_id>",
    summary="A video's status and progress",
    replies={200: Reply(model=VideoObject), 404: Reply(model=ErrorResponse)},
)
async def get_video(video_id: str) -> Response:
    return jsonify(video_object(await app_state().manager.get(video_id)))


@api_route(
    bp,
    "GET",
    "/v1/videos/<video_id>/content",
    summary="The finished video's MP4 (Range supported)",
    replies={
        200: Reply(mp4.CONTENT_TYPE, description="the MP4"),
        206: Reply(mp4.CONTENT_TYPE, description="a byte range"),
        404: Reply(model=ErrorResponse),
        409: Reply(model=ErrorResponse, description="not completed (yet)"),
    },
)
async def video_content(video_id: str) -> Response:
    state = app_state()
    job = await state.manager.get(video_id)
    if job.status != "completed":
        raise Conflict(
            f"video {job.id} is {_STATUS[job.status]}, not completed; while it runs, "
            f"/v1/jobs/{job.id}/video.mp4 streams it live",
            param="video_id",
            code="video_not_ready" if not job.finished else "video_failed",
        )
    return await video_file_response(state, job)
