"""Turning a validated request body into a job: the one way every generating route
(`/generate-stream`, `/generate-stream-chunked`, `/generate`, `/v1/jobs`, `/v1/videos`
and its remix, `/ws`) submits one.

Each request is admitted once (`JobManager.admit`: shutting down, model, queue) and
resolved once, here; the job layer gets the `ResolvedRequest` and checks nothing again
but that the server still accepts jobs.
"""

from __future__ import annotations

import asyncio

from segment_pipeline import PipelineError, ResolvedRequest, remix
from segment_pipeline.generator import check_modes
from streamgen.errors import from_pipeline_error
from streamgen.jobs import Job, Submission, new_job_id
from streamgen.protocol import GenerationParams, to_generation_request

from .state import AppState, current_key


async def submit(
    state: AppState,
    params: GenerationParams,
    *,
    request_scoped: bool,
    live: bool = False,
    listed: bool = False,
) -> Job:
    """Queue a job for `params` (pydantic stops here: the job layer gets the plain
    `ResolvedRequest`). The cheap checks (shutting down, model, queue) come before the
    request's media are decoded (CPU work, off the event loop) and before its model is
    loaded, if it is not resident. `live`: a viewer plays it as it is made (the streaming
    routes)."""
    manager = state.manager
    model = await manager.admit(params.model, live=live)
    generator = (await asyncio.to_thread(manager.models.pipeline, model)).generator
    try:
        request = await asyncio.to_thread(
            to_generation_request,
            params,
            state.settings.media_limits,
            generator.defaults.overlap_frames,
        )
        resolved = generator.resolve(request)
    except PipelineError as exc:
        raise from_pipeline_error(exc) from exc
    return await _queue(
        state,
        resolved,
        model=model,
        priority=params.priority,
        request_scoped=request_scoped,
        live=live,
        listed=listed,
    )


async def submit_remix(state: AppState, source: Job, prompt: str) -> Job:
    """Queue a listed video made as `source` was (its resolved settings and seed, see
    `segment_pipeline.remix`) from a new `prompt`."""
    manager = state.manager
    model = await manager.admit(source.spec.model)
    generator = (await asyncio.to_thread(manager.models.pipeline, model)).generator
    try:
        resolved = remix(source.spec.request, prompt, generator.limits)
        # Without the source's inputs: a model that needs an image (Wan I2V) refuses it now.
        check_modes(resolved, generator.modes, generator.name)
    except PipelineError as exc:
        raise from_pipeline_error(exc) from exc
    return await _queue(
        state,
        resolved,
        model=model,
        priority=0,
        request_scoped=False,
        remixed_from=source.id,
        listed=True,
    )


async def _queue(
    state: AppState,
    resolved: ResolvedRequest,
    *,
    model: str,
    priority: int,
    request_scoped: bool,
    live: bool = False,
    remixed_from: str | None = None,
    listed: bool = False,
) -> Job:
    """Charge the request's API key (only once the request is known to be valid) and
    queue the job; the charge is given back when the job is not queued."""
    key, job_id = current_key(), new_job_id()
    gate = state.runtime.keys
    charge = await gate.admit_job(key, resolved, priority, job_id, state.manager.is_active)
    try:
        return await state.manager.submit(
            resolved,
            Submission(
                priority=priority,
                request_scoped=request_scoped,
                live=live,
                remixed_from=remixed_from,
                listed=listed,
                job_id=job_id,
                charge=charge,
                model=model,
            ),
        )
    except BaseException:
        await gate.release(job_id, charge)
        raise
