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
        live=job.live,
        realtime_factor=job.realtime_factor,
        estimated_start_at=job.estimated_start_at if job.status == "queued" else None,
    ).model_dump()
