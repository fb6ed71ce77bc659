"""The OpenAPI 3.1 description, built from the route table and the pydantic models."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel

from segment_pipeline import Limits

from .protocol import ErrorResponse
from .routespec import RouteSpec, is_open_path

_REF = "#/components/schemas/{model}"


def build_openapi(
    routes: list[RouteSpec], version: str, limits: Limits | None = None
) -> dict[str, Any]:
    """An OpenAPI document for `routes` (WebSocket `/ws` is described in `info`), stating
    the server's caps (`limits`) as the request fields' maxima."""
    schemas: dict[str, Any] = {}
    caps = _caps(limits or Limits())

    def ref(model: type[BaseModel]) -> dict[str, str]:
        schema = model.model_json_schema(ref_template=_REF)
        schemas.update(schema.pop("$defs", {}))
        for name, extra in caps.items():
            if name in schema.get("properties", {}):
                schema["properties"][name].update(extra)
        schemas[model.__name__] = schema
        return {"$ref": _REF.format(model=model.__name__)}

    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        operation: dict[str, Any] = {
            "summary": route.summary,
            "tags": [route.tag],
            "operationId": _operation_id(route),
            "responses": {},
        }
        parameters = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in re.findall(r"{(\w+)}", route.path)
        ]
        parameters += [
            {"name": p.name, "in": p.where, "description": p.description,
             "schema": {"type": p.type}}
            for p in route.params
        ]  # fmt: skip
        if parameters:
            operation["parameters"] = parameters
        if route.body is not None:
            operation["requestBody"] = {
                "required": True,
                # a form carries the same fields; files (audio, images, video) as parts
                "content": {
                    "application/json": {"schema": ref(route.body)},
                    "multipart/form-data": {"schema": ref(route.body)},
                },
            }
        for status, reply in sorted(route.replies.items()):
            schema = ref(reply.model) if reply.model is not None else {}
            operation["responses"][str(status)] = {
                "description": reply.description or _REASONS.get(status, ""),
                "content": {reply.media_type: {"schema": schema}},
            }
        operation["responses"].setdefault(
            "default",
            {
                "description": "error",
                "content": {"application/json": {"schema": ref(ErrorResponse)}},
            },
        )
        if is_open_path(route.path):
            operation["security"] = []  # never needs a key
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "streamgen",
            "version": version,
            "description": "Streams AI-generated video while it is being generated. "
            "The WebSocket endpoint GET /ws and the event formats are described in "
            "docs/stream-protocol.md.",
        },
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": _SECURITY_SCHEMES},
        # A key once any exists (`streamgen keys create`); none while the server is open.
        "security": [{"bearer": []}, {"apiKeyHeader": []}, {}],
    }


_SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer", "description": "an API key (sgk_...)"},
    "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
}


def _caps(limits: Limits) -> dict[str, dict[str, Any]]:
    """The maxima of generation fields, as this server is configured."""
    return {
        "prompt": {"maxLength": limits.max_prompt_chars},
        "width": {"maximum": limits.max_width},
        "height": {"maximum": limits.max_height},
        "fps": {"minimum": limits.min_fps, "maximum": limits.max_fps},
        "num_frames": {"maximum": limits.max_frames},
        "num_inference_steps": {"maximum": limits.max_inference_steps},
    }


def _operation_id(route: RouteSpec) -> str:
    slug = re.sub(r"[^a-zA-Z0-9]+", "_", route.path).strip("_") or "root"
    return f"{route.method.lower()}_{slug}"


_REASONS = {
    200: "OK",
    202: "Accepted",
    206: "Partial Content",
    404: "Not Found",
    503: "Unavailable",
}
