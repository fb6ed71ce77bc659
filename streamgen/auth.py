"""API keys at the HTTP and WebSocket edge: every request but the open ones (health,
metrics, the OpenAPI document, the player's files) names a key once any key exists
(`streamgen.keys.gate`), counts against its rate limit, and carries its rate-limit headers
back. The routes read the request's key with `routes.state.current_key()`.
"""

from __future__ import annotations

from collections.abc import Callable

from quart import Quart, Response, g, request, websocket
from werkzeug.datastructures import Headers

from .errors import ServiceError
from .keys import KeyGate, Window, rate_headers, secret_from
from .observability import note_key
from .routespec import is_open_path

_QUERY_KEY_METHODS = frozenset({"GET", "HEAD"})


def install(app: Quart, gate_of: Callable[[], KeyGate]) -> None:
    """Check the key of every request and WebSocket handshake that needs one; `gate_of()`
    is the serving app's `KeyGate`."""

    @app.before_request
    async def check_key() -> None:
        if request.method == "OPTIONS" or is_open_path(request.path):
            return
        # EventSource cannot set headers: an event stream may name its key in the query
        readable = request.method in _QUERY_KEY_METHODS and request.path.endswith("/events")
        query = request.args.get("api_key") if readable else None
        g.rate_window = await _admit(gate_of(), request.headers, query)

    @app.after_request
    async def add_rate_headers(response: Response) -> Response:
        window = g.get("rate_window")
        if window is not None:
            response.headers.update(rate_headers(window))
        return response

    @app.before_websocket
    async def check_websocket_key() -> None:
        """A refused key is kept for the route, which closes the socket with its code and
        reason once accepted: a browser cannot read why a handshake was refused."""
        try:
            await _admit(gate_of(), websocket.headers, websocket.args.get("api_key"))
        except ServiceError as exc:
            g.key_refusal = exc


async def _admit(gate: KeyGate, headers: Headers, query: str | None) -> Window | None:
    """Identify the request's key (kept on `g` and noted for the logs) and count the
    request against its rate limit; None in open mode."""
    secret = secret_from(headers.get("Authorization"), headers.get("X-API-Key"), query)
    key = await gate.identify(secret)
    if key is None:
        return None
    note_key(key.id)
    g.api_key = key
    return await gate.count_request(key)
