"""Driving the segment loop window by window (`SegmentCursor`) and denoising windows of
several requests in one batch (`generate_windows`): the embedded model and LTX-Video (tiny,
random) give each window what it would get alone, up to float rounding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from segment_pipeline import (
    CancelEvent,
    GenerationRequest,
    SegmentCursor,
    WindowTask,
    load_generator,
)
from segment_pipeline.backends.embedded import EmbeddedGenerator
from segment_pipeline.backends.ltx import LTXGenerator

from .backends.ltx_tiny import build_tiny_ltx
from .pattern import PatternGenerator


def test_a_cursor_driven_loop_makes_the_segments_the_loop_makes() -> None:
    generator = PatternGenerator()
    request = generator.resolve(GenerationRequest(prompt="p", num_frames=15))
    expected = list(generator.segments(request))
    cursor, got = SegmentCursor(request), []
    while not cursor.done:
        (window,) = generator.run_batch([cursor.next_task()], lambda *_: None)
        got.append(cursor.advance(window, 0.0))
    assert [s.index for s in got] == [s.index for s in expected]
    assert [s.start_frame for s in got] == [s.start_frame for s in expected]
    for mine, theirs in zip(got, expected, strict=True):
        assert np.array_equal(mine.frames, theirs.frames)
    assert cursor.emitted == 15 and cursor.seconds_emitted == 15 / request.fps


def test_the_default_batch_runs_windows_one_by_one_reporting_each() -> None:
    generator = PatternGenerator()
    requests = [generator.resolve(GenerationRequest(prompt="p", seed=s)) for s in (1, 2)]
    tasks = [SegmentCursor(r).next_task() for r in requests]
    steps: list[tuple[int, int, int]] = []
    windows = generator.run_batch(tasks, lambda *args: steps.append(args))
    assert len(windows) == 2 and generator.batch_key(tasks[0]) is None
    assert steps == [(0, 1, 3), (0, 2, 3), (0, 3, 3), (1, 1, 3), (1, 2, 3), (1, 3, 3)]


def test_cancel_event_calls_back_once_and_at_once_when_already_set() -> None:
    calls: list[str] = []
    event = CancelEvent()
    event.on_set(lambda: calls.append("first"))
    event.set()
    event.set()
    event.on_set(lambda: calls.append("late"))
    assert calls == ["first", "late"] and event.is_set()


@pytest.fixture(scope="module")
def embedded() -> EmbeddedGenerator:
    generator = load_generator("embedded")
    assert isinstance(generator, EmbeddedGenerator)
    return generator


def continuation(
    generator: EmbeddedGenerator, prompt: str, seed: int, **fields: object
) -> WindowTask:
    """The second window of a request (given the first one's overlap)."""
    request = generator.resolve(GenerationRequest(prompt=prompt, seed=seed, **fields))  # type: ignore[arg-type]
    cursor = SegmentCursor(request)
    (window,) = generator.run_batch([cursor.next_task()], lambda *_: None)
    cursor.advance(window, 0.0)
    return cursor.next_task()


@pytest.mark.parametrize("guidance", [1.0, 2.5])
def test_embedded_windows_batched_are_the_windows_alone(
    embedded: EmbeddedGenerator, guidance: float
) -> None:
    fields = {"num_frames": 28, "guidance_scale": guidance}
    first = SegmentCursor(
        embedded.resolve(GenerationRequest(prompt="a red ball moving left", seed=3, **fields))  # type: ignore[arg-type]
    ).next_task()
    later = continuation(embedded, "a blue square moving up", 4, **fields)
    other = guidance + 1 if guidance > 1 else guidance  # guided or not, all alike
    other_scale = continuation(
        embedded, "a green triangle moving right", 5, num_frames=28, guidance_scale=other
    )
    tasks = [first, later, other_scale]
    assert len({embedded.batch_key(t) for t in tasks}) == 1  # one forward pass
    steps: list[tuple[int, int, int]] = []
    batched = embedded.run_batch(tasks, lambda *args: steps.append(args))
    for task, window in zip(tasks, batched, strict=True):
        (alone,) = embedded.run_batch([task], lambda *_: None)
        difference = np.abs(window.astype(int) - alone.astype(int))
        assert difference.mean() < 0.05 and difference.max() <= 2, difference.max()
    total = first.request.num_inference_steps
    assert sorted(steps) == sorted((i, s, total) for i in range(3) for s in range(1, total + 1))


def test_embedded_batch_keys_part_shapes_steps_and_guidance(embedded: EmbeddedGenerator) -> None:
    def key(**fields: object) -> object:
        request = embedded.resolve(GenerationRequest(prompt="a", **fields))  # type: ignore[arg-type]
        return embedded.batch_key(SegmentCursor(request).next_task())

    assert key(seed=1) == key(seed=2, negative_prompt="blue")
    assert key() != key(width=64, height=64)
    assert key() != key(num_inference_steps=4)
    assert key() != key(guidance_scale=2.0)
    assert key(guidance_scale=2.0) == key(guidance_scale=3.0)


@pytest.fixture(scope="module")
def ltx(tmp_path_factory: pytest.TempPathFactory) -> LTXGenerator:
    directory = build_tiny_ltx(Path(tmp_path_factory.mktemp("ltx")) / "tiny-ltx")
    generator = load_generator("ltx", directory)
    assert isinstance(generator, LTXGenerator)
    return generator


def test_ltx_windows_batched_are_the_windows_alone(ltx: LTXGenerator) -> None:
    fields = {"width": 32, "height": 32, "fps": 8.0, "num_frames": 33, "segment_frames": 17,
              "overlap_frames": 9, "num_inference_steps": 2}  # fmt: skip
    rng = np.random.default_rng(0)
    tasks = []
    for seed, prompt in ((1, "a red ball"), (2, "the blue circle moving left")):
        request = ltx.resolve(GenerationRequest(prompt=prompt, seed=seed, **fields))  # type: ignore[arg-type]
        given = rng.integers(0, 255, (9, 32, 32, 3), dtype=np.uint8)
        tasks.append(WindowTask(request, 1, given))
    assert ltx.batch_key(tasks[0]) == ltx.batch_key(tasks[1])
    batched = ltx.run_batch(tasks, lambda *_: None)
    for task, window in zip(tasks, batched, strict=True):
        (alone,) = ltx.run_batch([task], lambda *_: None)
        assert window.shape == alone.shape == (17, 32, 32, 3)
        assert np.abs(window.astype(int) - alone.astype(int)).max() <= 2
    # A window given other frames (or none) is not batched with these.
    first = SegmentCursor(tasks[0].request).next_task()
    assert ltx.batch_key(first) != ltx.batch_key(tasks[0])
