"""Generation and encoding for streamgen: no web code here.

`load_generator` builds a `SegmentedGenerator` backend; `SegmentPipeline` runs it with the
fMP4 encoder on a side thread.
"""

from .backends import BACKENDS, load_generator
from .encoder import EncodedFragment, EncoderOptions, FragmentedMP4Encoder
from .errors import (
    EncoderError,
    GenerationCancelled,
    GenerationFailed,
    InvalidRequest,
    ModelLoadError,
    PipelineError,
)
from .generator import CancelEvent, Segment, SegmentCursor, SegmentedGenerator, WindowTask
from .pipeline import EncodedSegment, PipelineJob, SegmentPipeline
from .request import GenerationRequest, GeneratorDefaults, Limits, ResolvedRequest

__all__ = [
    "BACKENDS",
    "CancelEvent",
    "EncodedFragment",
    "EncodedSegment",
    "EncoderError",
    "EncoderOptions",
    "FragmentedMP4Encoder",
    "GenerationCancelled",
    "GenerationFailed",
    "GenerationRequest",
    "GeneratorDefaults",
    "InvalidRequest",
    "Limits",
    "ModelLoadError",
    "PipelineError",
    "PipelineJob",
    "ResolvedRequest",
    "Segment",
    "SegmentCursor",
    "SegmentPipeline",
    "SegmentedGenerator",
    "WindowTask",
    "load_generator",
]
