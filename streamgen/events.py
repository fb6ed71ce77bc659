"""What each event of a job says, on the server side of the wire.

The schema itself, one frozen dataclass per event type, lives in the client distribution's
`streamgen_client.wire`, the one module both sides import; this module names it for the
server and reads a broker `Event` back as its typed payload. A job's log
(`streamgen.broker`) is a list of `Event(job_id, seq, type, data)`; `data` is a payload's
`to_data()` plus ``time`` (its publish time, Unix seconds). Code that reads an event back
uses `payload_of`, not string keys.
"""

from __future__ import annotations

from streamgen_client.wire import (
    PAYLOADS,
    CompletePayload,
    ErrorPayload,
    Payload,
    ProgressPayload,
    QueuedPayload,
    SegmentPayload,
    StartPayload,
    Terminal,
    from_data,
    to_data,
)

from .broker.base import Event

__all__ = [
    "PAYLOADS",
    "CompletePayload",
    "ErrorPayload",
    "Payload",
    "ProgressPayload",
    "QueuedPayload",
    "SegmentPayload",
    "StartPayload",
    "Terminal",
    "from_data",
    "payload_of",
    "to_data",
]


def payload_of(event: Event) -> Payload:
    """The typed payload of `event`."""
    return from_data(event.type, event.data)
