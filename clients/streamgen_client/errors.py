"""Exceptions of the streaming client. The whole tree:

    ClientError                 base; every error the client raises on purpose
    ├── ProtocolError           the server sent bytes that break the wire protocol
    ├── RequestRejected         the server refused a request: HTTP 4xx/5xx with
    │                           ``{"error": {...}}``, or a WebSocket close 1008 / 4404 / 1011
    ├── JobFailed               the job's event log ended with an ``error`` event
    ├── StreamInterrupted       the connection dropped and resuming failed within the
    │                           retry budget (carries the job id and the last seq received)
    └── IncompleteVideo         the segments received do not form a whole video (a gap,
                                no init segment, a fragment that is not ``moof``+``mdat``)

Foreign exceptions (httpx, websockets, json, base64) are mapped to these at the boundary,
with the original kept as ``__cause__``.
"""

from __future__ import annotations


class ClientError(Exception):
    """Base of every error the streaming client raises."""


class ProtocolError(ClientError):
    """The server sent something the wire protocol (docs/stream-protocol.md) does not allow."""


class _ServerReported(ClientError):
    """An error the server described as ``{"code", "message", "param"}``."""

    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        self.code = code
        self.message = message
        self.param = param
        super().__init__(self.describe())

    def describe(self) -> str:
        where = f" (parameter: {self.param})" if self.param else ""
        return f"{self.code}{where}: {self.message}"


class RequestRejected(_ServerReported):
    """The server refused the request. `status` is the HTTP status (4xx/5xx) or, for a
    WebSocket, the close code (1008, 4404, 1011)."""

    def __init__(self, status: int, code: str, message: str, param: str | None = None) -> None:
        self.status = status
        super().__init__(code, message, param)

    def describe(self) -> str:
        return f"{super().describe()} [{self.status}]"


class JobFailed(_ServerReported):
    """The job ended with an ``error`` event (``cancelled`` for a cancelled job)."""

    def __init__(
        self, code: str, message: str, param: str | None = None, *, job_id: str = ""
    ) -> None:
        self.job_id = job_id
        super().__init__(code, message, param)


class StreamInterrupted(ClientError):
    """The connection dropped and could not be resumed.

    `job_id` is "" if the drop came before the server named the job; `last_seq` is the last
    sequence number received (-1 if none), so ``last_seq + 1`` is where to resume.
    """

    def __init__(self, message: str, *, job_id: str, last_seq: int) -> None:
        self.job_id = job_id
        self.last_seq = last_seq
        super().__init__(message)


class IncompleteVideo(ClientError):
    """The received segments do not make one whole video."""
