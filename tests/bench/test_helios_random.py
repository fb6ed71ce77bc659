"""bench/helios_random.py: its presets are Helios's published sizes, and what it saves loads
through the registry and streams, on the CPU at the shrunken widths."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from diffusers import HeliosTransformer3DModel

from bench.helios_random import PRESETS, build, shrunk
from segment_pipeline import GenerationRequest, load_generator
from segment_pipeline.backends.helios import HeliosGenerator


def test_the_distilled_preset_is_a_14b_transformer() -> None:
    with torch.device("meta"):  # the shapes without the memory
        transformer = HeliosTransformer3DModel(**PRESETS["distilled"].transformer)
    parameters = sum(p.numel() for p in transformer.parameters())
    assert 14e9 < parameters < 15e9, parameters
    assert PRESETS["distilled"].scheduler == {"stages": 3, "gamma": 1 / 3}
    assert PRESETS["base"].scheduler == {"stages": 1}


@pytest.mark.parametrize(
    ("name", "variant", "size", "steps"),
    [("distilled", "Helios-Distilled", 64, 3), ("base", "Helios", 32, 2)],
)
def test_a_shrunken_build_loads_by_its_index_and_makes_a_chunk(
    tmp_path: Path, name: str, variant: str, size: int, steps: int
) -> None:
    preset = shrunk(PRESETS[name])
    if preset.distilled:
        # 1/3's block-noise covariance is singular and the CPU's Cholesky refuses it.
        preset = replace(preset, scheduler={**preset.scheduler, "gamma": 0.25})
    path = build(tmp_path / name, preset, "cpu", torch.float32)
    index = json.loads((path / "model_index.json").read_text())
    pipeline = "HeliosPyramidPipeline" if preset.distilled else "HeliosPipeline"
    assert index["_class_name"] == pipeline
    assert index.get("is_distilled", False) is preset.distilled

    generator = load_generator(model_path=path)
    assert isinstance(generator, HeliosGenerator)
    assert generator.describe()["variant"] == variant
    assert generator.stages == (3 if preset.distilled else 1)
    request = GenerationRequest(prompt="a red ball", seed=3, width=size, height=size,
                                num_frames=9, segment_frames=9, num_inference_steps=steps,
                                guidance_scale=1.0)  # fmt: skip
    (segment,) = generator.segments(request)
    assert segment.frames.shape == (9, size, size, 3)
    assert segment.frames.std() > 0
