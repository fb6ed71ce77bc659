"""`GET /` (the browser player, `static/index.html`) and `GET /static/<path>`."""

from __future__ import annotations

from pathlib import Path

from quart import Blueprint, Response, send_from_directory
from werkzeug.exceptions import NotFound as WerkzeugNotFound

from streamgen.errors import NotFound

from .state import app_state
from .table import Reply, api_route

bp = Blueprint("static", __name__)


def default_static_dir() -> Path:
    """The repository's `static/` beside the `streamgen` package."""
    return Path(__file__).resolve().parents[2] / "static"


async def _send(name: str) -> Response:
    directory = app_state().static_dir
    if directory is None or not directory.is_dir():
        raise NotFound("the browser player is not installed (no static/ directory)")
    try:
        response = await send_from_directory(directory, name)
    except WerkzeugNotFound as exc:
        raise NotFound(f"no static file {name!r}", param="path") from exc
    # The player is a few small modules: revalidate each time (ETag), so a browser never
    # mixes an old module with a new one after an upgrade.
    response.cache_control.max_age = None
    response.cache_control.public = False
    response.cache_control.no_cache = True
    return response


@api_route(
    bp, "GET", "/", summary="The browser player", replies={200: Reply("text/html"), 404: Reply()}
)
async def index() -> Response:
    return await _send("index.html")


@api_route(
    bp,
    "GET",
    "/static/<path:path>",
    summary="The player's files",
    replies={200: Reply("application/octet-stream"), 404: Reply()},
)
async def static_file(path: str) -> Response:
    return await _send(path)
