"""Following a job and answering with it, in every response form.

- `follow`: one subscriber's view of a job (`Follower`: its subscription, lease, heartbeats,
  slow-consumer cut-off), `StreamBody` (the streaming HTTP body built on it) and the frame
  cache that lets N subscribers of one form frame an event once
- `sse`: ``text/event-stream`` responses
- `ndjson`: ``application/x-ndjson`` responses
- `mp4`: the live ``video/mp4`` body and the finished file with byte ranges
- `ws`: the WebSocket: msgpack messages out, client commands in, close codes

The wire form itself (event fields, SSE lines, NDJSON lines, the msgpack message) is
`streamgen_client.wire`, shared with the client; the routes (`streamgen.routes`) register
the URLs and call into these.
"""
