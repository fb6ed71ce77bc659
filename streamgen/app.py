"""The Quart app factory.

`create_app(settings, generator=None)` registers the routes and error handlers; in
`before_serving` the composition root (`streamgen.runtime`) loads the model (unless one is
given), starts the broker and job store and launches the embedded worker (unless
`embedded_worker` is false: an API-only replica on Redis), kept on the app. `drain(app)` is
the graceful half of shutdown: it stops accepting jobs and lets running ones finish, or ends
them with an `error` event, while their streams are still open; `after_serving` then
closes the broker.
"""

from __future__ import annotations

import logging
from pathlib import Path

from quart import Quart, Response, jsonify
from werkzeug.exceptions import HTTPException

from segment_pipeline import SegmentedGenerator

from . import auth, cors
from .config import Settings, load_settings
from .cors import CorsPolicy
from .errors import ServiceError, from_http_exception
from .routes import BLUEPRINTS
from .routes.state import EXTENSION, AppState, app_state
from .routes.static import default_static_dir
from .runtime import open_runtime
from .streams.follow import FrameCache

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
    cors.install(app, CorsPolicy.parse(settings.cors_allowed_origins))
    # After the origin check: a page from a foreign origin is refused before its key is read.
    auth.install(app, lambda: app_state().runtime.keys)

    @app.before_serving
    async def start_service() -> None:
        runtime = await open_runtime(settings, role="serve", generator=generator)
        static_dir = Path(settings.static_dir) if settings.static_dir else default_static_dir()
        app.extensions[EXTENSION] = AppState(runtime, FrameCache(), static_dir)

    @app.after_serving
    async def stop_service() -> None:
        state: AppState | None = app.extensions.pop(EXTENSION, None)
        if state is not None:
            await state.runtime.close()

    return app


async def drain(app: Quart) -> None:
    """Stop taking jobs; running ones get `graceful_timeout_seconds` to finish, then an
    `error` event (code ``shutting_down``). Call before the server closes connections."""
    state: AppState | None = app.extensions.get(EXTENSION)
    if state is not None:
        await state.runtime.drain()


def _register_error_handlers(app: Quart) -> None:
    @app.errorhandler(ServiceError)
    async def service_error(error: ServiceError) -> tuple[Response, int, dict[str, str]]:
        return jsonify(error.to_dict()), error.status, error.headers()

    @app.errorhandler(HTTPException)
    async def http_error(error: HTTPException) -> Response:
        status = error.code or 500
        mapped = from_http_exception(status, error.description or error.name)
        response = jsonify(mapped.to_dict())
        response.status_code = status
        for name, value in error.get_headers():  # Allow on a 405, Content-Range on a 416
            if name.lower() in ("allow", "content-range"):
                response.headers[name] = value
        return response

    @app.errorhandler(Exception)
    async def unexpected(error: Exception) -> tuple[Response, int]:
        log.exception("unhandled error", exc_info=error)
        body = ServiceError(f"internal error: {type(error).__name__}").to_dict()
        return jsonify(body), 500
