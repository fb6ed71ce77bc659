"""The segment loop, with the test-pattern generator (fast) and the embedded model (real)."""

import threading

import numpy as np
import pytest

from segment_pipeline import CancelEvent, GenerationCancelled, GenerationRequest, load_generator

from .pattern import PatternGenerator


def frame_values(segments):
    return [int(f[0, 0, 0]) for s in segments for f in s.frames]


def test_overlap_frames_are_emitted_once():
    gen = PatternGenerator()
    segments = list(gen.segments(GenerationRequest(prompt="p", num_frames=15, seed=1)))
    # 6 + 4 + 4 + 4 >= 15: four windows; the output counts 0..14 without repeats or gaps.
    assert frame_values(segments) == list(range(15))
    assert [s.start_frame for s in segments] == [0, 6, 10, 14]
    assert [s.num_frames for s in segments] == [6, 4, 4, 1]
    assert [w for w in gen.windows] == [(0, 0), (1, 2), (2, 2), (3, 2)]
    assert [s.is_final for s in segments] == [False, False, False, True]
    assert all(s.total_segments == 4 for s in segments)


def test_reference_image_is_frame_zero_and_conditions_segment_zero():
    gen = PatternGenerator()
    image = np.full((32, 32, 3), 100, np.uint8)
    segments = list(
        gen.segments(GenerationRequest(prompt="p", num_frames=6, reference_image=image))
    )
    assert gen.windows[0] == (0, 1)
    assert frame_values(segments) == [100, 101, 102, 103, 104, 105]


def test_extend_video_continues_after_its_last_frame():
    gen = PatternGenerator()
    video = np.stack([np.full((32, 32, 3), v, np.uint8) for v in (50, 51, 52, 53)])
    segments = list(gen.segments(GenerationRequest(prompt="p", num_frames=8, extend_video=video)))
    assert gen.windows[0] == (0, 2)  # conditioned on the last overlap_frames frames
    assert frame_values(segments) == list(range(54, 62))


def test_unbounded_runs_until_cancelled():
    gen = PatternGenerator()
    cancel = CancelEvent()
    seen = []
    with pytest.raises(GenerationCancelled):
        for segment in gen.segments(GenerationRequest(prompt="p", unbounded=True), cancel=cancel):
            seen.append(segment)
            assert segment.total_segments is None and not segment.is_final
            if len(seen) == 5:
                cancel.set()
    assert len(seen) == 5
    assert frame_values(seen) == list(range(6 + 4 * 4))


def test_progress_reports_every_step_of_every_segment():
    calls = []
    list(
        PatternGenerator().segments(
            GenerationRequest(prompt="p", num_frames=10), progress=lambda *a: calls.append(a)
        )
    )
    assert calls == [(s, step, 3) for s in range(2) for step in (1, 2, 3)]


@pytest.fixture(scope="module")
def embedded():
    return load_generator("embedded")


SMALL = dict(
    prompt="a red ball moving right", width=64, height=64, num_frames=16, num_inference_steps=3
)


def test_embedded_same_seed_same_output(embedded):
    a = [s.frames for s in embedded.segments(GenerationRequest(seed=7, **SMALL))]
    b = [s.frames for s in embedded.segments(GenerationRequest(seed=7, **SMALL))]
    c = [s.frames for s in embedded.segments(GenerationRequest(seed=8, **SMALL))]
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))
    assert sum(len(f) for f in a) == 16 and a[0].shape[1:] == (64, 64, 3)


def test_embedded_cancel_stops_within_one_step(embedded):
    cancel = CancelEvent()
    steps = []

    def progress(segment, step, total):
        steps.append((segment, step))
        if (segment, step) == (1, 2):
            cancel.set()

    with pytest.raises(GenerationCancelled):
        list(
            embedded.segments(GenerationRequest(seed=1, **SMALL), progress=progress, cancel=cancel)
        )
    assert steps[-1] == (1, 2)  # not one more denoising step after the cancel


def test_embedded_cancel_from_another_thread(embedded):
    cancel = CancelEvent()
    started = threading.Event()
    steps = []

    def progress(segment, step, total):
        steps.append(step)
        started.set()
        cancel.wait(5)  # hold the generator here until the other thread has cancelled

    thread = threading.Thread(target=lambda: (started.wait(5), cancel.set()))
    thread.start()
    with pytest.raises(GenerationCancelled):
        list(
            embedded.segments(
                GenerationRequest(
                    seed=1, unbounded=True, **{k: v for k, v in SMALL.items() if k != "num_frames"}
                ),
                progress=progress,
                cancel=cancel,
            )
        )
    thread.join()
    assert steps == [1]


def test_embedded_rounds_sizes_and_rejects_what_it_cannot_take(embedded):
    from segment_pipeline import InvalidRequest

    # 40 is off its multiple of 16: made at the nearest (a tie goes down).
    assert embedded.resolve(GenerationRequest(prompt="p", width=40)).width == 32
    for fields, param in (({"width": 520, "height": 1024}, "height"),
                          ({"segment_frames": 20}, "segment_frames")):  # fmt: skip
        with pytest.raises(InvalidRequest) as info:
            embedded.resolve(GenerationRequest(prompt="p", **fields))
        assert info.value.param == param


def test_unknown_backend_and_missing_model_path():
    from segment_pipeline import InvalidRequest, ModelLoadError

    with pytest.raises(InvalidRequest) as info:
        load_generator("nope")
    assert info.value.param == "backend"
    with pytest.raises(ModelLoadError):
        load_generator("embedded", "/nonexistent/model")
