"""The Quart app factory.

`create_app(settings, generator=None)` registers the routes and error handlers; the model
is loaded (unless one is given), the broker and job store started and the embedded worker
launched (unless `embedded_worker` is false: an API-only replica on Redis) in
`before_serving`, all kept on the app. `drain(app)` is the graceful half of shutdown:
it stops accepting jobs and lets running ones finish, or ends them with an `error` event,
while their streams are still open; `after_serving` then closes the broker.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from quart import Quart, Response, jsonify
from werkzeug.exceptions import HTTPException

from segment_pipeline import PipelineError, SegmentedGenerator, SegmentPipeline, load_generator

from .config import Settings, load_settings
from .errors import ServiceError, from_http_exception, from_pipeline_error
from .jobs import JobManager
from .jobstore import broker_for, make_store
from .routes import BLUEPRINTS
from .routes.static import default_static_dir
from .service import EXTENSION, Service
from .streaming import FrameCache

log = logging.getLogger(__name__)


def create_app(
    settings: Settings | None = None, generator: SegmentedGenerator | None = None
) -> Quart:
    """The streamgen app for `settings` (defaults + YAML + env when None)."""
    settings = settings or load_settings()
    app = Quart("streamgen", static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.config["JSON_SORT_KEYS"] = False
    for blueprint in BLUEPRINTS:
        app.register_blueprint(blueprint)
    _register_error_handlers(app)

    @app.before_serving
    async def start_service() -> None:
        app.extensions[EXTENSION] = await _start(settings, generator)

    @app.after_serving
    async def stop_service() -> None:
        service: Service | None = app.extensions.pop(EXTENSION, None)
        if service is not None:
            await service.manager.shutdown(settings.graceful_timeout_seconds)
            await service.broker.close()

    return app


async def drain(app: Quart) -> None:
    """Stop taking jobs; running ones get `graceful_timeout_seconds` to finish, then an
    `error` event (code ``shutting_down``). Call before the server closes connections."""
    service: Service | None = app.extensions.get(EXTENSION)
    if service is not None:
        await service.manager.shutdown(service.settings.graceful_timeout_seconds)


async def _start(settings: Settings, generator: SegmentedGenerator | None) -> Service:
    if generator is None:
        generator = await asyncio.to_thread(_load_generator, settings)
    broker = broker_for(settings)
    await broker.start()
    try:
        store = make_store(settings, broker)
        manager = JobManager(
            settings,
            SegmentPipeline(generator, settings.encoder_options),
            broker,
            store,
            embedded_worker=settings.embedded_worker,
        )
        await manager.start()
    except BaseException:
        await broker.close()
        raise
    static_dir = Path(settings.static_dir) if settings.static_dir else default_static_dir()
    return Service(settings, generator, broker, manager, FrameCache(), static_dir)


def _load_generator(settings: Settings) -> SegmentedGenerator:
    if settings.torch_threads:
        import torch

        torch.set_num_threads(settings.torch_threads)
    try:
        return load_generator(
            settings.backend, settings.model_path, limits=settings.limits, device=settings.device
        )
    except PipelineError as exc:
        raise from_pipeline_error(exc) from exc


def _register_error_handlers(app: Quart) -> None:
    @app.errorhandler(ServiceError)
    async def service_error(error: ServiceError) -> tuple[Response, int]:
        return jsonify(error.to_dict()), error.status

    @app.errorhandler(HTTPException)
    async def http_error(error: HTTPException) -> Response:
        status = error.code or 500
        mapped = from_http_exception(status, error.description or error.name)
        response = jsonify(mapped.to_dict())
        response.status_code = status
        for name, value in error.get_headers():  # keep werkzeug's Allow header on a 405
            if name.lower() == "allow":
                response.headers["Allow"] = value
        return response

    @app.errorhandler(Exception)
    async def unexpected(error: Exception) -> tuple[Response, int]:
        log.exception("unhandled error", exc_info=error)
        body = ServiceError(f"internal error: {type(error).__name__}").to_dict()
        return jsonify(body), 500
