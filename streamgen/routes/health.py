"""`GET /health`, `GET /metrics`, `GET /v1/models` and `GET /openapi.json`."""

from __future__ import annotations

from dataclasses import asdict

from quart import Blueprint, Response, jsonify

from streamgen import __version__
from streamgen.observability import QUEUE_DEPTH, RUNNING_JOBS, RUNNING_STREAMS, render_metrics
from streamgen.openapi import build_openapi
from streamgen.protocol import (
    CostModelInfo,
    HealthResponse,
    ModelCard,
    ModelList,
    StreamInfo,
    WorkerInfo,
)

from .state import app_state
from .table import ROUTES, Reply, api_route

bp = Blueprint("health", __name__)


@api_route(
    bp,
    "GET",
    "/health",
    summary="Liveness and readiness: model loaded, queue depth",
    replies={200: Reply(model=HealthResponse), 503: Reply(model=HealthResponse)},
)
async def health() -> tuple[Response, int]:
    state = app_state()
    manager = state.manager
    broker = state.settings.broker
    queued, running = await manager.counts()
    loads = await manager.loads()
    workers = [
        WorkerInfo(
            worker=load.worker,
            live_streams=load.live_streams,
            max_live_streams=load.max_live_streams,
            jobs=load.jobs,
            max_jobs=load.max_jobs,
            accepts_live=load.accepts_live,
            utilization=load.utilization,
            cost_model=CostModelInfo(source=load.cost_source),
            streams=[StreamInfo(**asdict(stream)) for stream in load.streams],
        )
        for load in loads
    ]
    body = HealthResponse(
        status="healthy" if manager.accepting else "shutting_down",
        model_loaded=True,
        streaming_supported=True,
        model=state.runtime.models.default_id,
        version=__version__,
        queue_depth=queued,
        running_jobs=running,
        broker="memory" if broker == "memory" else broker.split("://", 1)[0],
        running_streams=sum(load.live_streams for load in loads),
        workers=workers,
    )
    return jsonify(body.model_dump()), 200 if manager.accepting else 503


@api_route(
    bp,
    "GET",
    "/metrics",
    summary="Prometheus metrics: requests, queue, streams, segment times, cut-offs, outcomes",
    replies={200: Reply("text/plain", description="the Prometheus text format")},
)
async def metrics() -> Response:
    manager = app_state().manager
    queued, running = await manager.counts()
    QUEUE_DEPTH.set(queued)
    RUNNING_JOBS.set(running)
    RUNNING_STREAMS.set(sum(load.live_streams for load in await manager.loads()))
    body, content_type = render_metrics()
    return Response(body, content_type=content_type)


@api_route(
    bp,
    "GET",
    "/v1/models",
    summary="The models this server runs: what each can do (modes), sizes, fps, frames per "
    "window, defaults, batching, and whether it is loaded",
    replies={200: Reply(model=ModelList)},
)
async def models() -> Response:
    cards = [ModelCard(id=card["id"], details=card) for card in app_state().runtime.models.cards()]
    return jsonify(ModelList(data=cards).model_dump())


@api_route(bp, "GET", "/openapi.json", summary="This description", replies={200: Reply()})
async def openapi() -> Response:
    return jsonify(build_openapi(ROUTES, __version__, app_state().settings.limits))
