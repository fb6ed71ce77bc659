"""Framing of job events for each transport: pure functions over events and bytes, no I/O.

- `text`: the JSON form shared by the text transports (bytes become ``<name>_base64``)
- `sse`: ``text/event-stream`` (``event:``/``id:``/``data:`` lines, comments, ``retry:``)
- `ndjson`: one JSON object a line (``application/x-ndjson``)
- `ws`: msgpack binary messages and client commands for the WebSocket
- `mp4`: the live ``video/mp4`` body (init segment, then fragments)

The route modules (`streamgen.routes`) do the I/O around these.
"""
