"""Which web pages may use the server: same-origin pages always (the player at ``/``), pages
of the origins listed in `cors_allowed_origins` through CORS, and no others.

Browsers send ``Origin`` on cross-site requests. A request whose origin is neither the
server's own nor listed is refused (403) unless it is a plain read (GET/HEAD, whose answer
the browser keeps from the page anyway), so a page elsewhere cannot start or cancel jobs,
even with the body types a browser sends without asking first. The WebSocket handshake is
checked the same way (browsers do not apply CORS to it). Clients that are not browsers send
no ``Origin`` and are not affected.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from quart import Quart, Response, request, websocket

from .errors import Forbidden

ALLOWED_METHODS = "GET, POST, DELETE, OPTIONS"
ALLOWED_HEADERS = "Authorization, Content-Type, Last-Event-ID, X-API-Key"
EXPOSED_HEADERS = "X-Job-Id, Retry-After, Content-Range, Accept-Ranges, Content-Length"
PREFLIGHT_MAX_AGE_S = 600
_READS = frozenset({"GET", "HEAD"})


@dataclass(frozen=True)
class CorsPolicy:
    """`allowed`: origins (``scheme://host[:port]``) that may use the server; ``*``: any."""

    allowed: frozenset[str]

    @classmethod
    def parse(cls, setting: str) -> CorsPolicy:
        """From `cors_allowed_origins`: origins separated by commas or spaces."""
        origins = {part.strip().rstrip("/") for part in setting.replace(",", " ").split()}
        return cls(frozenset(origin for origin in origins if origin))

    def listed(self, origin: str) -> bool:
        return "*" in self.allowed or origin in self.allowed

    def allows(self, origin: str | None, host: str | None) -> bool:
        """No origin (not a browser), the server's own (same host), or a listed one."""
        if origin is None:
            return True
        return _same_host(origin, host) or self.listed(origin)


def _same_host(origin: str, host: str | None) -> bool:
    try:
        netloc = urlsplit(origin).netloc
    except ValueError:
        return False
    return bool(netloc) and host is not None and netloc.lower() == host.lower()


def install(app: Quart, policy: CorsPolicy) -> None:
    """Check every request's and WebSocket handshake's origin; answer preflights; add the
    CORS headers to answers for listed origins."""

    @app.before_request
    async def check_origin() -> Response | None:
        origin = request.headers.get("Origin")
        if origin is None or _same_host(origin, request.host):
            return None
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            if not policy.listed(origin):
                raise Forbidden(_refusal(origin), param="Origin")
            return _preflight(origin)
        if request.method not in _READS and not policy.listed(origin):
            raise Forbidden(_refusal(origin), param="Origin")
        return None

    @app.after_request
    async def add_cors_headers(response: Response) -> Response:
        origin = request.headers.get("Origin")
        if origin is not None and not _same_host(origin, request.host) and policy.listed(origin):
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
            response.vary.add("Origin")
        return response

    @app.before_websocket
    async def check_websocket_origin() -> None:
        origin = websocket.headers.get("Origin")
        if not policy.allows(origin, websocket.host):
            raise Forbidden(_refusal(str(origin)), param="Origin")


def _preflight(origin: str) -> Response:
    response = Response("", status=204)
    response.headers["Access-Control-Allow-Origin"] = origin
    response.headers["Access-Control-Allow-Methods"] = ALLOWED_METHODS
    response.headers["Access-Control-Allow-Headers"] = ALLOWED_HEADERS
    response.headers["Access-Control-Max-Age"] = str(PREFLIGHT_MAX_AGE_S)
    response.vary.add("Origin")
    return response


def _refusal(origin: str) -> str:
    return (
        f"pages from {origin} may not use this server; list the origin in "
        "cors_allowed_origins to allow it"
    )
