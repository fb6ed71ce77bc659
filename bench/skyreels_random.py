"""Save a randomly initialised SkyReels-V2 Diffusion Forcing checkpoint of a published size.

Real weights cannot reach the GPU machine (no network, a few MiB of carried files), so the
benchmark times a model of the published configuration with random weights: the same
shapes, so the same work a window. Build it on the device, then run the benchmark on it:

    python bench/skyreels_random.py /tmp/skyreels-df-1.3b --preset 1.3b-540p --device cuda
    python bench/pipeline.py --backend skyreels --model-path /tmp/skyreels-df-1.3b \\
        --device cuda --size 960x544 --steps 30 --segments 2 --repeats 1

The text encoder is UMT5-XXL's shape (what the published checkpoints ship); the tokenizer is
a small one built in code (the published one is a download): the encoder still runs over
the pipelines' 512 padded tokens, so its cost is the same. Frames are noise either way.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKLWan,
    SkyReelsV2DiffusionForcingPipeline,
    SkyReelsV2Transformer3DModel,
    UniPCMultistepScheduler,
)
from transformers import UMT5Config, UMT5EncoderModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.wan_family import letter_tokenizer, umt5_xxl, wan_transformer


@dataclass(frozen=True)
class Preset:
    """The published configuration of one SkyReels-V2 DF checkpoint."""

    transformer: dict[str, Any]
    text_encoder: dict[str, Any] = field(default_factory=umt5_xxl)
    vae: dict[str, Any] = field(default_factory=dict)  # Wan2.1's VAE: the class defaults
    flow_shift: float = 8.0  # the DF checkpoints' scheduler (5.0 suits I2V)


def _transformer(heads: int, ffn_dim: int, layers: int) -> dict[str, Any]:
    """Wan2.1's transformer with the DF checkpoints' frame-rate embedding and causal blocks
    of one latent frame."""
    return {
        **wan_transformer(heads, ffn_dim, layers),
        "inject_sample_info": True,
        "num_frame_per_block": 1,
    }


PRESETS = {
    "1.3b-540p": Preset(_transformer(heads=12, ffn_dim=8960, layers=30)),  # 960x544, 97 frames
    "14b-720p": Preset(_transformer(heads=40, ffn_dim=13824, layers=40)),  # 1280x720, 121
}


def build(directory: Path, preset: Preset, device: str, dtype: torch.dtype) -> Path:
    """Initialise `preset`'s components at random on `device` in `dtype` and save them as a
    `SkyReelsV2DiffusionForcingPipeline` directory; returns `directory`."""
    torch.manual_seed(0)
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # initialise in the saved dtype: half the memory and time
    try:
        with torch.device(device):
            pipe = SkyReelsV2DiffusionForcingPipeline(
                tokenizer=letter_tokenizer(),
                text_encoder=UMT5EncoderModel(UMT5Config(**preset.text_encoder)),
                transformer=SkyReelsV2Transformer3DModel(**preset.transformer),
                vae=AutoencoderKLWan(**preset.vae),
                scheduler=UniPCMultistepScheduler(
                    prediction_type="flow_prediction",
                    use_flow_sigmas=True,
                    flow_shift=preset.flow_shift,
                ),
            )
    finally:
        torch.set_default_dtype(default_dtype)
    pipe.save_pretrained(directory)
    return directory


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("directory", type=Path)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="1.3b-540p")
    parser.add_argument("--device", default="cuda", help="where to initialise: cuda or cpu")
    args = parser.parse_args()
    started = time.perf_counter()
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    build(args.directory, PRESETS[args.preset], args.device, dtype)
    print(f"saved {args.preset} to {args.directory} in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
