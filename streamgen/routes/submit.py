"""Turning a validated request body into a job: the one way every generating route
(`/generate-stream`, `/generate-stream-chunked`, `/generate`, `/v1/jobs`, `/v1/videos`,
`/ws`) submits one."""

from __future__ import annotations

import asyncio

from segment_pipeline import PipelineError
from streamgen.errors import from_pipeline_error
from streamgen.jobs import Job, KeyCharge, Submission, new_job_id
from streamgen.protocol import GenerationParams, to_generation_request

from .state import AppState, current_key


async def submit(
    state: AppState,
    params: GenerationParams,
    *,
    request_scoped: bool,
    live: bool = False,
    remixed_from: str | None = None,
    listed: bool = False,
) -> Job:
    """Queue a job for `params` (pydantic stops here: the job layer gets the plain
    `GenerationRequest`). The cheap checks (shutting down, model, queue) come before the
    request's media are decoded (CPU work, off the event loop), and the request's API key
    is charged only once the request is known to be valid. `live`: a viewer plays it as it
    is made (the streaming routes)."""
    manager = state.manager
    await manager.admit(params.model, live=live)
    try:
        request = await asyncio.to_thread(
            to_generation_request,
            params,
            state.settings.media_limits,
            manager.pipeline.generator.defaults.overlap_frames,
        )
        resolved = manager.pipeline.generator.resolve(request)
    except PipelineError as exc:
        raise from_pipeline_error(exc) from exc
    key, job_id = current_key(), new_job_id()
    gate = state.runtime.keys
    charge = await gate.admit_job(key, resolved, params.priority, job_id, manager.is_active)
    try:
        return await manager.submit(
            resolved,
            Submission(
                model=params.model,
                priority=params.priority,
                request_scoped=request_scoped,
                live=live,
                remixed_from=remixed_from,
                listed=listed,
                job_id=job_id,
                charge=KeyCharge(
                    key_id=None if key is None else key.id,
                    charged_seconds=charge.seconds,
                    charged_day=charge.day,
                    cap_seconds=charge.cap_seconds,
                ),
            ),
        )
    except BaseException:
        await gate.release(key, job_id, charge)
        raise
