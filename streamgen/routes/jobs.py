"""`/v1/jobs`: jobs that run on without subscribers; their events (SSE, resumable), their
live or finished MP4, their state, and cancelling them."""

from __future__ import annotations

import asyncio
import contextlib

from quart import Blueprint, Response, jsonify, request

from streamgen.errors import InvalidParameter
from streamgen.protocol import ErrorResponse, GenerationParams, JobObject, parse
from streamgen.streams import mp4, ndjson, sse
from streamgen.streams.follow import open_follower
from streamgen.streams.mp4 import live_mp4_response, video_file_response
from streamgen.streams.ndjson import ndjson_response
from streamgen.streams.sse import sse_response

from .params import from_seq_of, payload_omit
from .state import app_state, visible_job
from .submit import submit
from .table import Param, Reply, api_route, read_params
from .views import job_object

bp = Blueprint("jobs", __name__)

_NOT_FOUND = {404: Reply(model=ErrorResponse, description="no such job")}


@api_route(
    bp,
    "POST",
    "/v1/jobs",
    summary="Queue a job; it runs whether or not anyone follows it",
    body=GenerationParams,
    replies={
        202: Reply(model=JobObject, description="accepted; links to its events and video"),
        422: Reply(model=ErrorResponse, description="a field is invalid"),
        429: Reply(model=ErrorResponse, description="the queue is full"),
    },
)
async def create_job() -> tuple[Response, int, dict[str, str]]:
    state = app_state()
    params = parse(GenerationParams, await read_params())
    job = await submit(state, params, request_scoped=False)
    return jsonify(job_object(job)), 202, {"Location": f"/v1/jobs/{job.id}"}


@api_route(
    bp,
    "GET",
    "/v1/jobs/<job_id>",
    summary="A job's state",
    replies={200: Reply(model=JobObject), **_NOT_FOUND},
)
async def get_job(job_id: str) -> Response:
    return jsonify(job_object(await visible_job(app_state(), job_id)))


@api_route(
    bp,
    "DELETE",
    "/v1/jobs/<job_id>",
    summary="Cancel a queued or running job (within one denoising step)",
    replies={
        200: Reply(model=JobObject, description="cancelled"),
        202: Reply(model=JobObject, description="cancelling, not yet stopped"),
        409: Reply(model=ErrorResponse, description="the job already finished"),
        **_NOT_FOUND,
    },
)
async def cancel_job(job_id: str) -> tuple[Response, int]:
    state = app_state()
    job = await visible_job(state, job_id)
    await state.manager.cancel(job)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(job.done.wait(), timeout=state.settings.graceful_timeout_seconds)
    return jsonify(job_object(job)), 200 if job.state.finished else 202


@api_route(
    bp,
    "GET",
    "/v1/jobs/<job_id>/events",
    summary="A job's events as server-sent events (or NDJSON), from the start or resumed",
    params=(
        Param("Last-Event-ID", "header", "resume after this seq (wins over from_seq)"),
        Param("from_seq", "query", "first seq to send (default 0: start + backlog)"),
        Param(
            "payload",
            "query",
            "segment events carry both byte forms (default), only fragment, or only segment",
            type="string",
        ),
        Param(
            "format",
            "query",
            "sse (default) or ndjson (also: Accept: application/x-ndjson)",
            type="string",
        ),
    ),
    replies={
        200: Reply(sse.CONTENT_TYPE, description="the job's events from the asked seq"),
        410: Reply(model=ErrorResponse, description="those events rolled out of the backlog"),
        422: Reply(model=ErrorResponse, description="bad Last-Event-ID or from_seq"),
        **_NOT_FOUND,
    },
)
async def job_events(job_id: str) -> Response:
    state = app_state()
    job = await visible_job(state, job_id)
    from_seq = from_seq_of(request.headers.get("Last-Event-ID"), request.args.get("from_seq"))
    wants_ndjson = _events_format() == "ndjson"
    omit = payload_omit(request.args.get("payload"))
    follower = await open_follower(state, job, from_seq)
    if wants_ndjson:
        return ndjson_response(state, follower, omit)
    return sse_response(state, follower, omit)


def _events_format() -> str:
    chosen = request.args.get("format")
    if chosen is None:
        accept = request.headers.get("Accept", "")
        return "ndjson" if ndjson.CONTENT_TYPE in accept else "sse"
    if chosen not in ("sse", "ndjson"):
        raise InvalidParameter(f"format must be sse or ndjson, got {chosen!r}", param="format")
    return chosen


@api_route(
    bp,
    "GET",
    "/v1/jobs/<job_id>/video.mp4",
    summary="The job's MP4: live (init + fragments as they come) or, once finished, the file "
    "with Range support",
    replies={
        200: Reply(mp4.CONTENT_TYPE, description="the (growing) fragmented MP4"),
        206: Reply(mp4.CONTENT_TYPE, description="a byte range of the finished file"),
        **_NOT_FOUND,
    },
)
async def job_video(job_id: str) -> Response:
    state = app_state()
    job = await visible_job(state, job_id)
    if job.state.finished:
        return await video_file_response(state, job)
    follower = await open_follower(state, job, 0)
    return live_mp4_response(follower)
