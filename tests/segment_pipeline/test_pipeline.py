"""Generator and encoder overlapped on two threads."""

import io
import threading

import av
import numpy as np
import pytest

from segment_pipeline import CancelEvent, GenerationCancelled, GenerationRequest, SegmentPipeline
from segment_pipeline.generator import StepCallback
from segment_pipeline.request import ResolvedRequest

from .pattern import PatternGenerator


class WaitingGenerator(PatternGenerator):
    """Before window k+1, waits until segment k's bytes have been handed over."""

    def __init__(self) -> None:
        super().__init__()
        self.delivered: dict[int, threading.Event] = {}
        self.threads: set[str] = set()

    def generate_window(
        self, request: ResolvedRequest, index: int, given: np.ndarray, on_step: StepCallback
    ):
        self.threads.add(threading.current_thread().name)
        if index > 0:
            assert self.delivered[index - 1].wait(10), f"segment {index - 1} not encoded in time"
        self.delivered[index] = threading.Event()
        return super().generate_window(request, index, given, on_step)


def test_segment_bytes_exist_before_the_next_segment_starts():
    gen = WaitingGenerator()
    job = SegmentPipeline(gen).open(GenerationRequest(prompt="p", num_frames=20))
    out = []
    encoder_threads = set()

    def on_segment(encoded):
        encoder_threads.add(threading.current_thread().name)
        out.append(encoded)
        gen.delivered[encoded.index].set()

    job.run(on_segment)
    assert [e.index for e in out] == [0, 1, 2, 3, 4]
    assert encoder_threads.isdisjoint(gen.threads), "encoding must run on its own thread"
    data = job.init_segment + b"".join(e.fragment for e in out)
    with av.open(io.BytesIO(data)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 20


def test_cancel_hands_over_finished_segments_then_raises():
    gen = PatternGenerator()
    cancel = CancelEvent()
    out = []

    def on_segment(encoded):
        out.append(encoded.index)

    def progress(segment, step, total):
        if segment == 2:
            cancel.set()

    job = SegmentPipeline(gen).open(GenerationRequest(prompt="p", unbounded=True))
    with pytest.raises(GenerationCancelled):
        job.run(on_segment, progress=progress, cancel=cancel)
    assert out == [0, 1]


def test_encoder_failure_surfaces_from_run():
    gen = PatternGenerator()
    job = SegmentPipeline(gen).open(GenerationRequest(prompt="p", num_frames=12))

    def on_segment(encoded):
        raise RuntimeError("sink failed")

    with pytest.raises(RuntimeError, match="sink failed"):
        job.run(on_segment)


def test_open_knows_init_and_codec_before_generating():
    gen = PatternGenerator()
    job = SegmentPipeline(gen).open(GenerationRequest(prompt="p", num_frames=12))
    assert job.init_segment[4:8] == b"ftyp" and job.codec_string.startswith("avc1.")
    assert gen.windows == []
