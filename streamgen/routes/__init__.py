"""HTTP and WebSocket routes. Each module registers its routes on a blueprint through
`table.api_route`, which also records them for `/openapi.json`.

- `health`: ``/health``, ``/v1/models``, ``/openapi.json``
- `stream`: ``/generate-stream`` (SSE), ``/generate-stream-chunked`` (NDJSON), ``/generate``
- `jobs`: ``/v1/jobs`` and its events, video and cancel
- `videos`: OpenAI-style ``/v1/videos``
- `ws`: ``/ws``
- `static`: ``/`` (the browser player) and ``/static/<path>``
"""

from __future__ import annotations

from quart import Blueprint

from . import health, jobs, static, stream, videos, ws

BLUEPRINTS: tuple[Blueprint, ...] = (
    health.bp,
    stream.bp,
    jobs.bp,
    videos.bp,
    ws.bp,
    static.bp,
)
