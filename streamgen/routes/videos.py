"""OpenAI-style `/v1/videos`: a video object per job (create, list, retrieve, remix,
delete, download), shaped so the official `openai` SDK works against it unchanged: JSON or
multipart bodies, `input_reference` as a file, cursor pages, the `openai-poll-after-ms` hint
while a video is being made, and the content's ``variant`` (video, thumbnail, spritesheet).
A create request with the Dynamo request's `response_format` is answered once the video is
done, with the video in `data` (a link or base64), as Dynamo's server answers."""

from __future__ import annotations

import asyncio
import base64
import re
from typing import Any

from quart import Blueprint, Response, jsonify, request

from streamgen import previews
from streamgen.errors import Conflict, InvalidParameter, NotFound, ServiceError
from streamgen.jobs import Job
from streamgen.protocol import ErrorResponse, GenerationParams, parse
from streamgen.streams import mp4
from streamgen.streams.mp4 import video_file_response
from streamgen.video_protocol import (
    VideoCreateRequest,
    VideoData,
    VideoDeleted,
    VideoList,
    VideoObject,
    VideoRemixRequest,
    video_params,
)

from .state import AppState, app_state, current_key, visible_job
from .submit import submit, submit_remix
from .table import Param, Reply, api_route, read_params
from .views import error_body, inference_time_s

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
    request = job.spec.request
    seconds = request.seconds
    return VideoObject(
        id=job.id,
        status=_STATUS[job.state.status],  # type: ignore[arg-type]
        progress=_percent(job),
        created_at=int(job.spec.created_at),
        completed_at=int(job.state.finished_at)
        if job.state.status == "completed" and job.state.finished_at
        else None,
        model=job.spec.model,
        prompt=request.prompt,
        seconds="unbounded" if seconds is None else f"{seconds:g}",
        size=f"{request.width}x{request.height}",
        width=request.width,
        height=request.height,
        error=error_body(job.state.error),
        remixed_from_video_id=job.spec.remixed_from,
        inference_time_s=inference_time_s(job),
    ).model_dump()


def _percent(job: Job) -> int:
    if job.state.status == "completed":
        return 100
    total = job.spec.request.total_segments
    if not total:
        return 0
    steps = job.spec.request.num_inference_steps
    step = (
        job.state.progress["step"]
        if job.state.progress and job.state.progress["segment_index"] >= job.state.segments_done
        else 0
    )
    return min(99, int(100 * (job.state.segments_done * steps + step) / (total * steps)))


# Params named by the generation request that the video API calls otherwise.
_FIELD_NAMES = {"width": "size", "height": "size", "reference_image": "input_reference"}
PAGE_LIMIT, MAX_PAGE_LIMIT = 20, 100
VARIANTS = ("video", "thumbnail", "spritesheet")


def _poll_after_ms(job: Job) -> dict[str, str]:
    """How long a poller should wait: about one segment's making while the video is made
    (from the job's pace when known), nothing once it has ended."""
    if job.state.finished:
        return {}
    req = job.spec.request
    segment_s = (req.segment_frames - req.overlap_frames) / req.fps
    wait_s = segment_s / job.state.realtime_factor if job.state.realtime_factor else segment_s / 2
    return {"openai-poll-after-ms": str(int(min(5.0, max(0.25, wait_s)) * 1000))}


async def _submit_video(state: AppState, params: GenerationParams) -> Response:
    return _created(await _submit_listed(state, params, request_scoped=False))


async def _submit_listed(state: AppState, params: GenerationParams, *, request_scoped: bool) -> Job:
    """Submit a listed video; a refused field is named as the video API calls it."""
    try:
        return await submit(state, params, request_scoped=request_scoped, listed=True)
    except InvalidParameter as exc:
        name = _FIELD_NAMES.get(exc.param or "")
        if name is None:
            raise
        raise InvalidParameter(f"{name}: {exc.message}", param=name) from exc


def _created(job: Job) -> Response:
    return jsonify(video_object(job)), 200, _poll_after_ms(job)  # type: ignore[return-value]


@api_route(
    bp,
    "POST",
    "/v1/videos",
    summary="Create a video (OpenAI-style); poll it, then download its content",
    body=VideoCreateRequest,
    replies={
        200: Reply(model=VideoObject, description="queued; with response_format, done"),
        422: Reply(model=ErrorResponse, description="a field is invalid"),
        429: Reply(model=ErrorResponse, description="the queue is full"),
    },
)
async def create_video() -> Response:
    create = parse(VideoCreateRequest, await read_params())
    params = video_params(create)
    if create.response_format is None:
        return await _submit_video(app_state(), params)
    return await _finished_video(app_state(), params, create.response_format)


async def _finished_video(state: AppState, params: GenerationParams, form: str) -> Response:
    """Make the video and answer once it is done, with it in `data` in `form` (url or
    b64_json). A client that goes away cancels it, as `/generate` does."""
    job = await _submit_listed(state, params, request_scoped=True)
    try:
        await job.done.wait()
    finally:
        state.manager.release(job)
    if job.state.status != "completed":
        raise job.state.error or ServiceError(f"video {job.id} ended {job.state.status}")
    if form == "b64_json":
        data = await asyncio.to_thread((await state.manager.video_file(job)).read_bytes)
        item = VideoData(b64_json=base64.b64encode(data).decode("ascii"))
    else:
        item = VideoData(url=f"{request.host_url.rstrip('/')}/v1/videos/{job.id}/content")
    video = video_object(job) | {"data": [item.model_dump()]}
    return jsonify(video)


@api_route(
    bp,
    "GET",
    "/v1/videos",
    summary="Videos, newest first (cursor pages: after, limit, order)",
    replies={200: Reply(model=VideoList), 422: Reply(model=ErrorResponse)},
    params=(
        Param("after", "query", "the last id of the previous page", type="string"),
        Param("limit", "query", f"videos a page, 1..{MAX_PAGE_LIMIT} ({PAGE_LIMIT})"),
        Param("order", "query", "desc (newest first, the default) or asc", type="string"),
    ),
)
async def list_videos() -> Response:
    after = request.args.get("after") or None
    limit = _page_limit(request.args.get("limit"))
    order = request.args.get("order", "desc")
    if order not in ("asc", "desc"):
        raise InvalidParameter(f"order must be asc or desc, got {order!r}", param="order")
    try:
        key = current_key()
        page = await app_state().manager.page(
            after, limit, newest_first=order == "desc", owner=None if key is None else key.id
        )
    except NotFound as exc:
        raise InvalidParameter(f"after: no video {after!r} here", param="after") from exc
    data = [video_object(job) for job in page.jobs]
    return jsonify(
        VideoList(
            data=[VideoObject.model_validate(video) for video in data],
            first_id=data[0]["id"] if data else None,
            last_id=data[-1]["id"] if data else None,
            has_more=page.has_more,
        ).model_dump()
    )


def _page_limit(text: str | None) -> int:
    if text is None:
        return PAGE_LIMIT
    if not re.fullmatch(r"\s*[0-9]{1,3}\s*", text) or not 1 <= int(text) <= MAX_PAGE_LIMIT:
        raise InvalidParameter(
            f"limit must be an integer 1..{MAX_PAGE_LIMIT}, got {text!r}", param="limit"
        )
    return int(text)


@api_route(
    bp,
    "GET",
    "/v1/videos/<video_id>",
    summary="A video's status and progress",
    replies={200: Reply(model=VideoObject), 404: Reply(model=ErrorResponse)},
)
async def get_video(video_id: str) -> Response:
    job = await visible_job(app_state(), video_id)
    return jsonify(video_object(job)), 200, _poll_after_ms(job)  # type: ignore[return-value]


@api_route(
    bp,
    "DELETE",
    "/v1/videos/<video_id>",
    summary="Delete a video (one still being made is cancelled first)",
    replies={
        200: Reply(model=VideoDeleted),
        404: Reply(model=ErrorResponse),
        409: Reply(model=ErrorResponse, description="still stopping; try again"),
    },
)
async def delete_video(video_id: str) -> Response:
    manager = app_state().manager
    await manager.delete(await visible_job(app_state(), video_id))
    return jsonify(VideoDeleted(id=video_id).model_dump())


@api_route(
    bp,
    "POST",
    "/v1/videos/<video_id>/remix",
    summary="A new video with this one's settings and seed and a new prompt",
    body=VideoRemixRequest,
    replies={
        200: Reply(model=VideoObject),
        404: Reply(model=ErrorResponse),
        422: Reply(model=ErrorResponse, description="a field is invalid"),
        429: Reply(model=ErrorResponse, description="the queue is full"),
    },
)
async def remix_video(video_id: str) -> Response:
    state = app_state()
    remix = parse(VideoRemixRequest, await read_params())
    source = await visible_job(state, video_id)
    return _created(await submit_remix(state, source, remix.prompt))


@api_route(
    bp,
    "GET",
    "/v1/videos/<video_id>/content",
    summary="The finished video's MP4 (Range supported), or a thumbnail or spritesheet",
    params=(Param("variant", "query", "video (default), thumbnail or spritesheet", "string"),),
    replies={
        200: Reply(mp4.CONTENT_TYPE, description="the MP4 (a JPEG for the other variants)"),
        206: Reply(mp4.CONTENT_TYPE, description="a byte range"),
        404: Reply(model=ErrorResponse),
        409: Reply(model=ErrorResponse, description="not completed (yet)"),
    },
)
async def video_content(video_id: str) -> Response:
    state = app_state()
    variant = request.args.get("variant", "video")
    if variant not in VARIANTS:
        raise InvalidParameter(
            f"variant must be one of {', '.join(VARIANTS)}, got {variant!r}", param="variant"
        )
    job = await visible_job(state, video_id)
    if job.state.status != "completed":
        raise Conflict(
            f"video {job.id} is {_STATUS[job.state.status]}, not completed; while it runs, "
            f"/v1/jobs/{job.id}/video.mp4 streams it live",
            param="video_id",
            code="video_not_ready" if not job.state.finished else "video_failed",
        )
    if variant == "video":
        return await video_file_response(state, job)
    path = await state.manager.video_file(job)
    try:
        image = await asyncio.to_thread(previews.preview, variant, path)
    except previews.NoPreview as exc:
        raise NotFound(f"video {job.id} has no frame to show ({exc})", param="video_id") from exc
    return Response(image, content_type=previews.CONTENT_TYPE)
