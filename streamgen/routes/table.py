"""The route table: every HTTP route registered with what `/openapi.json` says about it
(`streamgen.routespec`), and reading a request's fields."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel
from quart import Blueprint, request

from streamgen.errors import MalformedRequest, UnsupportedMediaType
from streamgen.routespec import Param as Param
from streamgen.routespec import Reply as Reply
from streamgen.routespec import RouteSpec

F = TypeVar("F", bound=Callable[..., Any])
REFUSED_TYPES = frozenset({"text/plain"})

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


async def read_params() -> Any:
    """The request's fields: a JSON body, or a multipart form whose files (an `audio`, a
    `reference_image`, …) arrive as their bytes under their field's name. 400 when the body
    is empty or not JSON, 413 when too large."""
    if request.mimetype == "multipart/form-data":
        return await _read_form()
    if request.mimetype in REFUSED_TYPES:
        raise UnsupportedMediaType(
            f"a {request.mimetype} body is not read here (a page on another site may send "
            "one without asking); send application/json or multipart/form-data"
        )
    data = await request.get_data(cache=False)
    if not data:
        raise MalformedRequest("the request body is empty; send a JSON object")
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedRequest(f"the request body is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise MalformedRequest("the request body nests too deeply to read") from exc


async def _read_form() -> dict[str, Any]:
    """A multipart form as fields: text as sent (the request model converts numbers and
    booleans), files as bytes. A name sent twice is a 400."""
    form, files = await request.form, await request.files
    fields: dict[str, Any] = {}
    for name in [*form.keys(), *files.keys()]:
        if name in fields or len(form.getlist(name)) + len(files.getlist(name)) > 1:
            raise MalformedRequest(f"the form sends {name!r} more than once", param=name)
        if name in files:
            fields[name] = files[name].read()
        else:
            fields[name] = form[name]
    if not fields:
        raise MalformedRequest("the form is empty; send at least a prompt")
    return fields
