"""The procedural world: exact ground truth, prompts that read back, and the quality metrics."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from bench.quality import drift_fraction, encode_decode, score_clip, seam_moves
from segment_pipeline.embedded_model import initial_model
from segment_pipeline.embedded_vocabulary import BACKGROUNDS, COLOURS, DIRECTIONS, SHAPES, UNK
from segment_pipeline.training.world import (
    BACKGROUND_RGB,
    COLOUR_RGB,
    HELD_OUT_TEMPLATES,
    TRAIN_TEMPLATES,
    SceneSpec,
    WorldConfig,
    make_clip,
    make_prompt,
    object_masks,
    observe,
    parse_prompt,
    sample_spec,
    trajectory,
)

from ..tiny_model import TINY

WORLD = WorldConfig()


def test_the_world_paints_every_name_of_the_vocabulary_and_no_other() -> None:
    # The world renders the names the model's heads classify, in their class order.
    assert tuple(COLOUR_RGB) == COLOURS
    assert tuple(BACKGROUND_RGB) == BACKGROUNDS


def test_object_is_where_and_what_the_clip_says() -> None:
    rng = np.random.default_rng(0)
    for _ in range(60):
        spec = sample_spec(rng)
        clip = make_clip(spec, rng, 12, offset=int(rng.integers(0, 100)))
        for frame, (x, y) in zip(clip.frames, clip.centres, strict=True):
            assert tuple(frame[int(y), int(x)]) == COLOUR_RGB[spec.colour]
            assert tuple(frame[0, 64]) in (BACKGROUND_RGB[spec.background], COLOUR_RGB[spec.colour])
            seen = observe(frame)
            assert (seen.colour, seen.shape, seen.background) == (
                spec.colour,
                spec.shape,
                spec.background,
            )
            assert seen.centre is not None
            assert np.abs(np.subtract(seen.centre, (x, y))).max() <= 1.0


def test_object_size_speed_and_start_third() -> None:
    assert WORLD.object_size == round(128 / 5)
    # Crossing the frame (centre from one wall to the other) takes 4 s at 8 fps.
    assert WORLD.speed * 4 * WORLD.fps == pytest.approx(128 - WORLD.object_size)
    rng = np.random.default_rng(1)
    for direction, axis, third in (("right", 0, 0), ("left", 0, 2), ("down", 1, 0), ("up", 1, 2)):
        for _ in range(20):
            clip = make_clip(SceneSpec("square", "red", "black", direction), rng, 2)
            assert third * 128 / 3 <= clip.centres[0, axis] <= (third + 1) * 128 / 3
            area = object_masks("square", clip.centres[:1], WORLD).sum()
            assert area == pytest.approx(WORLD.object_size**2, rel=0.1)


def test_object_bounces_off_edges() -> None:
    spec = SceneSpec("circle", "blue", "navy", "right")
    half = WORLD.object_size / 2
    centres = trajectory(spec, (100.0, 64.0), 80, WORLD)
    x = centres[:, 0]
    assert x.min() >= half and x.max() <= 128 - half
    steps = np.diff(x)
    assert np.allclose(np.abs(steps[np.abs(steps) > 0.9 * WORLD.speed]), WORLD.speed)
    turn = int(np.argmax(steps < 0))  # first move to the left: it hit the right wall
    assert turn > 0 and x[turn] > 128 - half - WORLD.speed
    assert (steps[turn : turn + 20] < 0).all()
    assert np.allclose(centres[:, 1], 64.0)
    still = trajectory(SceneSpec("circle", "blue", "navy", "still"), (30.0, 40.0), 10, WORLD)
    assert np.allclose(still, (30.0, 40.0))


def test_prompts_read_back_from_every_template() -> None:
    rng = np.random.default_rng(2)
    for shape, colour, background, direction in itertools.product(
        SHAPES, COLOURS, BACKGROUNDS, DIRECTIONS
    ):
        spec = SceneSpec(shape, colour, background, direction)
        for held_out in (False, True):
            prompt = make_prompt(spec, rng, held_out=held_out)
            parsed = parse_prompt(prompt)
            assert (parsed.shape, parsed.colour, parsed.background, parsed.direction) == (
                shape,
                colour,
                background,
                direction,
            ), prompt


def test_held_out_templates_are_not_training_templates() -> None:
    assert not set(HELD_OUT_TEMPLATES) & set(TRAIN_TEMPLATES)
    rng = np.random.default_rng(3)
    spec = SceneSpec("triangle", "purple", "gray", "up")
    train = {make_prompt(spec, rng) for _ in range(200)}
    held = {make_prompt(spec, rng, held_out=True) for _ in range(200)}
    assert not train & held


def test_free_sentences_and_unknown_words() -> None:
    parsed = parse_prompt("On a dark blue background, a violet box slides to the left, please!")
    assert (parsed.shape, parsed.colour, parsed.background, parsed.direction) == (
        "square",
        "purple",
        "navy",
        "left",
    )
    assert parse_prompt("a ball that is not moving").direction == "still"
    assert parse_prompt("a yellow dot falling on grey").background == "gray"
    nothing = parse_prompt("zebras quietly juggle 42 pineapples")
    assert (nothing.shape, nothing.colour, nothing.background, nothing.direction) == (
        None,
        None,
        "black",
        "still",
    )
    model = initial_model(TINY)
    ids, mask = model.tokenizer(["zebras juggle a red ball", ""])
    assert ids[0, 0] == model.tokenizer.ids[UNK] and ids[0, 3] == model.tokenizer.ids["red"]
    text = model.encode_prompts(["zebras juggle a red ball", "§§§", "x " * 200])
    assert text.shape == (3, model.config.cond_dim) and bool(mask[1].any())
    assert bool(text.isfinite().all())


def test_quality_metrics_score_ground_truth_fully() -> None:
    rng = np.random.default_rng(4)
    for spec in (
        SceneSpec("circle", "red", "black", "right"),
        SceneSpec("square", "cyan", "navy", "up"),
        SceneSpec("triangle", "white", "gray", "still"),
        SceneSpec("triangle", "orange", "navy", "left"),
    ):
        clip = make_clip(spec, rng, 40)
        # Cut like a generator with 12-frame windows and a 4-frame overlap: 12, 8, 8, ...
        starts = [0, *range(12, 40, 8)]
        segments = [
            (i, clip.frames[a:b], a) for i, (a, b) in enumerate(itertools.pairwise([*starts, 40]))
        ]
        decoded = encode_decode(segments, WORLD.fps)
        assert decoded.shape == clip.frames.shape
        moving = {"start_third": True} if spec.direction != "still" else {}
        assert score_clip(spec, decoded, WORLD.fps) == {
            "colour": True,
            "shape": True,
            "background": True,
            "direction": True,
            **moving,
        }
        if spec.direction in ("left", "right"):  # it starts where the other heading ends
            other = "left" if spec.direction == "right" else "right"
            flipped = SceneSpec(spec.shape, spec.colour, spec.background, other)
            assert score_clip(flipped, decoded, WORLD.fps)["start_third"] is False
        assert drift_fraction(spec, decoded) == 1.0
        seam, inside = seam_moves(decoded, starts[1:])
        assert len(seam) == len(starts) - 1
        if spec.direction != "still":
            assert np.mean(seam) / np.mean(inside) == pytest.approx(1.0, abs=0.2)
