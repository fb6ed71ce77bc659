"""A test-pattern generator: a real `SegmentedGenerator` that draws instead of denoising.

Frame values encode the frame's position in the video, so tests can tell exactly which
frames were emitted, in which order, and whether the overlap was honoured. Each window
continues from its last given frame: pixel value = (previous value + 1) mod 256.
"""

from __future__ import annotations

import numpy as np

from segment_pipeline.generator import SegmentedGenerator, StepCallback
from segment_pipeline.request import GeneratorDefaults, ResolvedRequest


class PatternGenerator(SegmentedGenerator):
    name = "test-pattern"
    defaults = GeneratorDefaults(
        width=32,
        height=32,
        fps=8,
        seconds=2,
        num_inference_steps=3,
        segment_frames=6,
        overlap_frames=2,
    )

    def __init__(self) -> None:
        super().__init__()
        self.windows: list[tuple[int, int]] = []  # (index, given frames) per window

    def generate_window(
        self, request: ResolvedRequest, index: int, given: np.ndarray, on_step: StepCallback
    ) -> np.ndarray:
        self.windows.append((index, len(given)))
        for step in range(request.num_inference_steps):
            on_step(step + 1, request.num_inference_steps)
        start = int(given[-1, 0, 0, 0]) + 1 if len(given) else 0
        values = (start - len(given) + np.arange(request.segment_frames)) % 256
        frames = np.empty((request.segment_frames, request.height, request.width, 3), np.uint8)
        frames[:] = values[:, None, None, None]
        return frames
