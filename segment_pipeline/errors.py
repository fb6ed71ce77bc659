"""Errors raised by the generation half of streamgen.

The whole tree::

    PipelineError                 base of everything raised here
    ├── InvalidRequest            a request parameter is wrong (carries `param`)
    ├── ModelLoadError            a model directory is missing, incomplete or of the wrong kind
    ├── GenerationCancelled       a cancel token was set; raised between denoising steps
    ├── GenerationFailed          the backend failed mid-generation (out of memory, a bug)
    └── EncoderError              PyAV/libx264 failed, or produced a stream we cannot use

The service maps each to one HTTP status (see `streamgen.errors`).
"""

from __future__ import annotations


class PipelineError(Exception):
    """Base class of every error raised by `segment_pipeline`."""

    code = "pipeline_error"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class InvalidRequest(PipelineError):
    """A request parameter is out of range or inconsistent; `param` names it."""

    code = "invalid_request"


class ModelLoadError(PipelineError):
    """A model could not be loaded from its local path."""

    code = "model_load_error"


class GenerationCancelled(PipelineError):
    """Generation stopped because its cancel token was set."""

    code = "cancelled"

    def __init__(self, message: str = "generation was cancelled") -> None:
        super().__init__(message)


class GenerationFailed(PipelineError):
    """The backend raised while generating a segment; the cause is chained."""

    code = "generation_failed"


class EncoderError(PipelineError):
    """Encoding a segment to fragmented MP4 failed."""

    code = "encoder_error"
