"""The JSON views of a job (`/v1/jobs/{id}`) and of its error."""

from __future__ import annotations

from typing import Any

from streamgen.errors import ServiceError
from streamgen.jobs import Job
from streamgen.protocol import ErrorBody, JobLinks, JobObject


def error_body(error: ServiceError | None) -> ErrorBody | None:
    if error is None:
        return None
    return ErrorBody(code=error.code, message=error.message, param=error.param)


def inference_time_s(job: Job) -> float | None:
    """Wall seconds a completed job ran, from its start to its end (None before)."""
    started, finished = job.state.started_at, job.state.finished_at
    if job.state.status != "completed" or started is None or finished is None:
        return None
    return round(finished - started, 3)


def job_object(job: Job) -> dict[str, Any]:
    """The JSON of `/v1/jobs/{id}`."""
    request = job.spec.request
    base = f"/v1/jobs/{job.id}"
    return JobObject(
        id=job.id,
        status=job.state.status,
        model=job.spec.model,
        prompt=request.prompt,
        priority=job.spec.priority,
        request_scoped=job.spec.request_scoped,
        created_at=job.spec.created_at,
        started_at=job.state.started_at,
        finished_at=job.state.finished_at,
        width=request.width,
        height=request.height,
        fps=request.fps,
        seed=request.seed,
        total_segments=request.total_segments,
        total_frames=request.total_frames,
        segments_done=job.state.segments_done,
        frames_done=job.state.frames_done,
        progress=job.state.progress,
        last_seq=job.state.last_seq,
        error=error_body(job.state.error),
        links=JobLinks(self=base, events=f"{base}/events", video=f"{base}/video.mp4"),
        live=job.spec.live,
        realtime_factor=job.state.realtime_factor,
        estimated_start_at=job.state.estimated_start_at if job.state.status == "queued" else None,
    ).model_dump()
