"""Generation and encoding for streamgen: no web code here.

`load_generator` builds a `SegmentedGenerator` backend; `SegmentPipeline` runs it with the
fMP4 encoder on a side thread.
"""

from .audio import SAMPLE_RATE, AudioClip, AudioLimits, read_audio
from .backends import BACKENDS, backend_for, load_generator
from .encoder import EncodedFragment, EncoderOptions, FragmentedMP4Encoder
from .errors import (
    EncoderError,
    GenerationCancelled,
    GenerationFailed,
    InvalidRequest,
    ModelLoadError,
    PipelineError,
)
from .generator import (
    CancelEvent,
    GeneratedWindow,
    Segment,
    SegmentCursor,
    SegmentedGenerator,
    StreamState,
    Window,
    WindowTask,
)
from .media import MediaLimits, read_image, read_video, read_video_tail
from .pipeline import EncodedSegment, PipelineJob, SegmentPipeline
from .request import (
    MAX_SEED,
    GenerationRequest,
    GeneratorDefaults,
    Limits,
    ResolvedRequest,
    remix,
)
from .sizes import SIZE_PATTERN, SIZE_PRESETS, SizeRule, parse_size

__all__ = [
    "BACKENDS",
    "MAX_SEED",
    "SAMPLE_RATE",
    "SIZE_PATTERN",
    "SIZE_PRESETS",
    "AudioClip",
    "AudioLimits",
    "CancelEvent",
    "EncodedFragment",
    "EncodedSegment",
    "EncoderError",
    "EncoderOptions",
    "FragmentedMP4Encoder",
    "GeneratedWindow",
    "GenerationCancelled",
    "GenerationFailed",
    "GenerationRequest",
    "GeneratorDefaults",
    "InvalidRequest",
    "Limits",
    "MediaLimits",
    "ModelLoadError",
    "PipelineError",
    "PipelineJob",
    "ResolvedRequest",
    "Segment",
    "SegmentCursor",
    "SegmentPipeline",
    "SegmentedGenerator",
    "SizeRule",
    "StreamState",
    "Window",
    "WindowTask",
    "backend_for",
    "load_generator",
    "parse_size",
    "read_audio",
    "read_image",
    "read_video",
    "read_video_tail",
    "remix",
]
