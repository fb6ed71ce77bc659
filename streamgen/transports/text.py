"""The JSON form of an event for text transports (SSE, NDJSON).

Byte fields are sent base64 under the name with a ``_base64`` suffix (``fragment`` →
``fragment_base64``); everything else goes as is. `job_id` and `seq` come first.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

from streamgen.broker.base import Event


def text_fields(event: Event, omit: frozenset[str] = frozenset()) -> dict[str, Any]:
    """``{"job_id", "seq", "type", **data}`` with bytes base64-encoded; the byte fields
    named in `omit` (e.g. ``segment``) are left out."""
    fields: dict[str, Any] = {"job_id": event.job_id, "seq": event.seq, "type": event.type}
    fields.update(base64_bytes(event.data, omit))
    return fields


def base64_bytes(data: Mapping[str, Any], omit: frozenset[str] = frozenset()) -> dict[str, Any]:
    """A copy of `data` whose `bytes` values are base64 text under ``<key>_base64``
    (those named in `omit` are dropped)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key in omit:
            continue
        if isinstance(value, bytes | bytearray | memoryview):
            out[f"{key}_base64"] = base64.b64encode(value).decode("ascii")
        else:
            out[key] = value
    return out


def dumps(value: Any) -> str:
    """Compact JSON on one line (json escapes every newline inside strings)."""
    return json.dumps(value, separators=(",", ":"))
