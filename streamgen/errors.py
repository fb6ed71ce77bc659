"""The service's errors: one hierarchy, each class mapped to one HTTP status and one WebSocket
close code, rendered as ``{"error": {"code", "message", "param"}}``.

The whole tree::

    ServiceError                    500 / 1011  base; an unexpected server fault
    ├── MalformedRequest            400 / 1008  the body is not JSON, or not a JSON object
    ├── Unauthorized                401 / 4401  no API key, or one that is unknown or revoked
    ├── Forbidden                   403 / 1008  an origin that is not allowed; a key's policy
    ├── NotFound                    404 / 4404  unknown job or route
    │   └── JobNotFound             404 / 4404
    ├── MethodNotAllowed            405 / 1008
    ├── Conflict                    409 / 1008  e.g. cancelling a finished job
    ├── BacklogGone                 410 / 4410  the asked-for events rolled out of the backlog
    ├── PayloadTooLarge             413 / 1009  body over `max_body_bytes`
    ├── UnsupportedMediaType        415 / 1003  a body type that is not read (text/plain)
    ├── RangeNotSatisfiable         416 / 1008  a byte range outside the file
    ├── InvalidParameter            422 / 1008  a well-formed field with a bad value (`param`)
    ├── TooManyRequests             429 / 1013  a key's rate, job or daily video limit
    │   └── QueueFull               429 / 1013  `max_queued_jobs` reached
    ├── SlowConsumer                429 / 4408  a subscriber fell behind (sent in-stream)
    ├── ServiceUnavailable          503 / 1001  shutting down, or the model is not loaded
    └── GenerationFailed            500 / 1011  the generator or the encoder failed

`from_pipeline_error` maps `segment_pipeline` errors onto this tree; `from_http_exception`
maps Quart's (werkzeug's) HTTP exceptions, so bad input never comes back as a bare 500.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from segment_pipeline import (
    EncoderError,
    GenerationCancelled,
    InvalidRequest,
    ModelLoadError,
    PipelineError,
)


class ServiceError(Exception):
    """Base of every error the service reports to a client."""

    status = 500
    close_code = 1011
    code = "internal_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code

    def to_dict(self) -> dict[str, Any]:
        """The JSON error object: ``{"error": {"code", "message", "param"}}``."""
        return {"error": {"code": self.code, "message": self.message, "param": self.param}}

    def headers(self) -> dict[str, str]:
        """HTTP headers that go with this error's response."""
        return {}


class MalformedRequest(ServiceError):
    status, close_code, code = 400, 1008, "malformed_request"


class Unauthorized(ServiceError):
    status, close_code, code = 401, 4401, "unauthorized"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="streamgen"'}


class Forbidden(ServiceError):
    status, close_code, code = 403, 1008, "forbidden"


class NotFound(ServiceError):
    status, close_code, code = 404, 4404, "not_found"


class JobNotFound(NotFound):
    code = "job_not_found"

    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job with id {job_id!r}", param="job_id")
        self.job_id = job_id


class MethodNotAllowed(ServiceError):
    status, close_code, code = 405, 1008, "method_not_allowed"


class Conflict(ServiceError):
    status, close_code, code = 409, 1008, "conflict"


class BacklogGone(ServiceError):
    """`resume_from` is the first sequence number still stored."""

    status, close_code, code = 410, 4410, "backlog_trimmed"

    def __init__(self, message: str, *, resume_from: int) -> None:
        super().__init__(message, param="from_seq")
        self.resume_from = resume_from

    def to_dict(self) -> dict[str, Any]:
        body = super().to_dict()
        body["error"]["resume_from"] = self.resume_from
        return body


class PayloadTooLarge(ServiceError):
    status, close_code, code = 413, 1009, "payload_too_large"


class UnsupportedMediaType(ServiceError):
    status, close_code, code = 415, 1003, "unsupported_media_type"


class RangeNotSatisfiable(ServiceError):
    """`length`: the file's size, sent as ``Content-Range: bytes */length``."""

    status, close_code, code = 416, 1008, "range_not_satisfiable"

    def __init__(self, message: str, *, length: int | None = None) -> None:
        super().__init__(message, param="Range")
        self.length = length

    def headers(self) -> dict[str, str]:
        return {} if self.length is None else {"Content-Range": f"bytes */{self.length}"}


class InvalidParameter(ServiceError):
    status, close_code, code = 422, 1008, "invalid_request"


class TooManyRequests(ServiceError):
    """`retry_after_s`: when to try again (whole seconds, at least 1); `extra_headers`
    (rate-limit headers) go with it."""

    status, close_code, code = 429, 1013, "rate_limited"

    def __init__(
        self,
        message: str,
        *,
        retry_after_s: float = 1,
        param: str | None = None,
        code: str | None = None,
        extra_headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, param=param, code=code)
        self.retry_after_s = max(1, math.ceil(retry_after_s))
        self.extra_headers = extra_headers or {}

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s), **self.extra_headers}


class QueueFull(TooManyRequests):
    """`retry_after_s`: when a worker should have room again."""

    code = "queue_full"


class SlowConsumer(ServiceError):
    """A subscriber fell more than its buffer behind; it may resume at `resume_from`."""

    status, close_code, code = 429, 4408, "slow_consumer"

    def __init__(self, job_id: str, resume_from: int, bound: int) -> None:
        super().__init__(
            f"subscriber of job {job_id} fell more than {bound} events behind; "
            f"resume from seq {resume_from}"
        )
        self.resume_from = resume_from


class ServiceUnavailable(ServiceError):
    status, close_code, code = 503, 1001, "unavailable"


class GenerationFailed(ServiceError):
    status, close_code, code = 500, 1011, "generation_failed"


_HTTP_STATUS = {
    400: MalformedRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    405: MethodNotAllowed,
    409: Conflict,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    416: RangeNotSatisfiable,
    422: InvalidParameter,
    429: QueueFull,
    503: ServiceUnavailable,
}


def from_pipeline_error(exc: PipelineError) -> ServiceError:
    """The service error for a `segment_pipeline` error (raise it ``from exc``)."""
    if isinstance(exc, InvalidRequest):
        return InvalidParameter(exc.message, param=exc.param)
    if isinstance(exc, GenerationCancelled):
        return Conflict(exc.message, code="cancelled")
    if isinstance(exc, ModelLoadError):
        return ServiceUnavailable(exc.message, param=exc.param, code="model_load_error")
    if isinstance(exc, EncoderError):
        return GenerationFailed(exc.message, code="encoder_error")
    return GenerationFailed(exc.message, param=exc.param)


def from_http_exception(status: int, description: str) -> ServiceError:
    """The service error for an HTTP exception raised by Quart/werkzeug (status, text)."""
    cls = _HTTP_STATUS.get(status)
    if cls is None:
        error = ServiceError(description, code="http_error")
        error.status = status
        return error
    return cls(description)


@contextmanager
def unavailable(what: str, *, code: str | None = None) -> Iterator[None]:
    """Inside, a `BrokerError` (Redis away past its retries, a closed broker) becomes
    `ServiceUnavailable` (503) ``from`` it: "the {what} is unavailable: {error}". The one
    place broker errors meet HTTP statuses."""
    from .broker.base import BrokerError  # the broker package imports nothing from here

    try:
        yield
    except BrokerError as exc:
        extra = {} if code is None else {"code": code}
        raise ServiceUnavailable(f"the {what} is unavailable: {exc}", **extra) from exc
