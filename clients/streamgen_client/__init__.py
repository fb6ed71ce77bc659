"""The streamgen streaming client: start or attach to a job, stream its segments over SSE,
NDJSON or WebSocket, resume after a dropped connection, and save the video.

    from streamgen_client import GenerateRequest, StreamClient, save

    with StreamClient("http://127.0.0.1:8000") as client:
        stream = client.generate(GenerateRequest(prompt="a red ball", seconds=2), transport="ws")
        recording = save(stream, "out/", concatenate_to="out.mp4")

The command line is ``streamgen-client`` (``python -m streamgen_client.stream_client``).
"""

from .client import TRANSPORTS, EventStream, RetryPolicy, StreamClient, Timeouts, Transport
from .errors import (
    ClientError,
    IncompleteVideo,
    JobFailed,
    ProtocolError,
    RequestRejected,
    StreamInterrupted,
)
from .events import (
    CompleteEvent,
    ErrorEvent,
    ProgressEvent,
    QueuedEvent,
    SegmentEvent,
    StartEvent,
    StreamEvent,
)
from .mp4 import Recording, SegmentWriter, concatenate, save
from .request import GenerateRequest

__all__ = [
    "TRANSPORTS",
    "ClientError",
    "CompleteEvent",
    "ErrorEvent",
    "EventStream",
    "GenerateRequest",
    "IncompleteVideo",
    "JobFailed",
    "ProgressEvent",
    "ProtocolError",
    "QueuedEvent",
    "Recording",
    "RequestRejected",
    "RetryPolicy",
    "SegmentEvent",
    "SegmentWriter",
    "StartEvent",
    "StreamClient",
    "StreamEvent",
    "StreamInterrupted",
    "Timeouts",
    "Transport",
    "concatenate",
    "save",
]
