"""What `/openapi.json` says about one HTTP route, and which paths need no API key.

Below both the routes (`streamgen.routes.table` records a `RouteSpec` for each route it
registers) and the modules that read the table (`streamgen.openapi`, `streamgen.auth`), so
neither of those imports the routes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import BaseModel

# Paths anyone may read, keys or not: a load balancer's probes, a scraper, the API's
# description and the browser player (which then asks for a key itself).
OPEN_PATHS = frozenset({"/health", "/metrics", "/openapi.json", "/"})
OPEN_PREFIXES = ("/static/",)


def is_open_path(path: str) -> bool:
    """Whether `path` (a request's, or a route's OpenAPI template) needs no API key."""
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


@dataclass(frozen=True)
class Reply:
    """One documented response: media type, body model (None: free-form), description."""

    media_type: str = "application/json"
    model: type[BaseModel] | None = None
    description: str = ""


@dataclass(frozen=True)
class Param:
    """A query or header parameter."""

    name: str
    where: str  # "query" | "header"
    description: str
    type: str = "integer"


@dataclass(frozen=True)
class RouteSpec:
    method: str
    path: str  # OpenAPI form: /v1/jobs/{job_id}
    summary: str
    tag: str
    body: type[BaseModel] | None = None
    replies: dict[int, Reply] = field(default_factory=dict)
    params: tuple[Param, ...] = ()
