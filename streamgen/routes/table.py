"""The route table: every HTTP route registered with what `/openapi.json` says about it."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel
from quart import Blueprint, request

from streamgen.errors import MalformedRequest

F = TypeVar("F", bound=Callable[..., Any])


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


ROUTES: list[RouteSpec] = []


def api_route(
    bp: Blueprint,
    method: str,
    path: str,
    *,
    summary: str,
    body: type[BaseModel] | None = None,
    replies: dict[int, Reply] | None = None,
    params: tuple[Param, ...] = (),
) -> Callable[[F], F]:
    """Register `path` (Quart form, ``<job_id>``) on `bp` and record it for OpenAPI."""

    def register(view: F) -> F:
        ROUTES.append(
            RouteSpec(
                method=method.upper(),
                path=re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", path),
                summary=summary,
                tag=bp.name,
                body=body,
                replies=replies or {200: Reply()},
                params=params,
            )
        )
        bp.add_url_rule(path, view_func=view, methods=[method.upper()])
        return view

    return register


async def read_json() -> Any:
    """The request body as JSON; 400 when it is empty or not JSON, 413 when too large."""
    data = await request.get_data(cache=False)
    if not data:
        raise MalformedRequest("the request body is empty; send a JSON object")
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedRequest(f"the request body is not valid JSON: {exc}") from exc
