"""Save a randomly initialised Helios checkpoint of a published configuration.

Real weights cannot reach the GPU machine (no network, a few MiB of carried files), so the
benchmark times a model of the published configuration with random weights: the same
shapes, so the same work a chunk. Build it on the device, then run the benchmark on it:

    python bench/helios_random.py /tmp/helios-distilled --preset distilled --device cuda
    python bench/pipeline.py --backend helios --model-path /tmp/helios-distilled \\
        --device cuda --size 640x384 --steps 6 --segments 6 --repeats 2

The full presets are about 40 GB in bfloat16 (a 14B transformer, UMT5-XXL's 5.7B encoder):
build on a disk with room for them. `--shrink` saves a copy a CPU runs in seconds (same
classes and scheduler, toy widths), which is how this path is tested.

Where the numbers come from:
- Pipelines and components: the model_index of Helios-Distilled (`HeliosPyramidPipeline`,
  `is_distilled: true`, `is_cfg_zero_star: false`, `HeliosDMDScheduler`, `UMT5EncoderModel`,
  `T5TokenizerFast`, `AutoencoderKLWan`) and of Helios-Base (`HeliosPipeline`,
  `HeliosScheduler`), as published on the Hub: read from copies others uploaded
  (rAVEUK/Alpha-Distilled, jotham26/Helios-Base), the BestWishYsh originals not being in
  the sources searched.
- Transformer: `HeliosTransformer3DModel`'s defaults in diffusers 0.42 (40 layers, 40 heads
  of 128, so width 5120; ffn 13824; text_dim 4096; freq_dim 256; rope_dim (44, 42, 42);
  patch (1, 2, 2); 16 latent channels). They are Wan2.1-T2V-14B's sizes, the model card's
  `base_model`, and match an independent port's config (Blaizzy/mlx-video's Helios). The
  published transformer config.json itself was not found, so its flags
  (`is_amplify_history`, `guidance_cross_attn`, ...) are the class defaults: unconfirmed,
  though none of them changes a step's work beyond a per-head scale.
- Text encoder: UMT5-XXL (`wan_family.umt5_xxl`, shared with `wan_random.py` and
  `skyreels_random.py`), what Wan2.1 ships.
  The tokenizer is a small one built in code (the published one is a download); prompts are
  padded to 512 tokens either way, so the encoder's cost is the same.
- VAE: `AutoencoderKLWan`'s defaults (Wan2.1's VAE, 8x space, 4x time, 16 channels).
- Scheduler, Distilled: 3 pyramid stages (the Helios docs' and `infer_helios.py`'s
  three-entry `pyramid_num_inference_steps_list`), `gamma` 1/3: the class default, the
  "shipped gamma=1/3" of vllm-omni's Helios block-noise fixes (PRs 7224, 7643) and the
  mlx-video port's config. The other
  settings are `HeliosDMDScheduler`'s defaults; the published scheduler_config.json was not
  found, so they are unconfirmed (they move no work: the step count is the request's).
  With gamma 1/3 the block-noise covariance of the pyramid's stage change is singular by
  construction (eigenvalue 1 - 3 gamma = 0; the 1e-8 ridge rounds away in float32): CPU
  LAPACK rejects it, CUDA's solver has been reported to factor it. `--gamma` rebuilds with
  another value if the device run fails there (the tests use 0.25 on the CPU).
- Scheduler, Base: `HeliosScheduler(stages=1)` with the class defaults, as Hugging Face's
  tiny Helios test checkpoint saves it; `HeliosPipeline` denoises in one stage.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKLWan,
    HeliosDMDScheduler,
    HeliosPipeline,
    HeliosPyramidPipeline,
    HeliosScheduler,
    HeliosTransformer3DModel,
)
from transformers import UMT5Config, UMT5EncoderModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.wan_family import letter_tokenizer, umt5_xxl


def _helios_14b() -> dict[str, Any]:
    return {
        "patch_size": (1, 2, 2),
        "num_attention_heads": 40,
        "attention_head_dim": 128,
        "in_channels": 16,
        "out_channels": 16,
        "text_dim": 4096,
        "freq_dim": 256,
        "ffn_dim": 13824,
        "num_layers": 40,
        "rope_dim": (44, 42, 42),  # sums to the head dim
    }


@dataclass(frozen=True)
class Preset:
    """The published configuration of one Helios checkpoint."""

    distilled: bool  # HeliosPyramidPipeline + HeliosDMDScheduler, else HeliosPipeline
    scheduler: dict[str, Any]
    transformer: dict[str, Any] = field(default_factory=_helios_14b)
    text_encoder: dict[str, Any] = field(default_factory=umt5_xxl)
    vae: dict[str, Any] = field(default_factory=dict)  # Wan2.1's VAE: the class defaults


PRESETS = {
    "distilled": Preset(distilled=True, scheduler={"stages": 3, "gamma": 1 / 3}),
    "base": Preset(distilled=False, scheduler={"stages": 1}),
}


def shrunk(preset: Preset) -> Preset:
    """`preset` at toy widths (one block, two heads of 12, a 16-wide text encoder, a narrow
    VAE), keeping its pipeline, scheduler, patching and latent channels: a CPU check of the
    path the full size takes."""
    transformer = {**preset.transformer, "num_attention_heads": 2, "attention_head_dim": 12,
                   "rope_dim": (4, 4, 4), "ffn_dim": 32, "num_layers": 1, "text_dim": 16,
                   "freq_dim": 16}  # fmt: skip
    text_encoder = {**preset.text_encoder, "vocab_size": 64, "d_model": 16, "d_kv": 8,
                    "d_ff": 32, "num_layers": 1, "num_heads": 2,
                    "relative_attention_num_buckets": 8}  # fmt: skip
    vae = {**preset.vae, "base_dim": 8, "num_res_blocks": 1}
    return replace(preset, transformer=transformer, text_encoder=text_encoder, vae=vae)


def build(directory: Path, preset: Preset, device: str, dtype: torch.dtype) -> Path:
    """Initialise `preset`'s components at random on `device` in `dtype` and save them as a
    Helios (`HeliosPipeline`) or Helios-Distilled (`HeliosPyramidPipeline`) directory;
    returns `directory`."""
    torch.manual_seed(0)
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # initialise in the saved dtype: half the memory and time
    try:
        with torch.device(device):
            components: dict[str, Any] = {
                "tokenizer": letter_tokenizer(),
                "text_encoder": UMT5EncoderModel(UMT5Config(**preset.text_encoder)),
                "transformer": HeliosTransformer3DModel(**preset.transformer),
                "vae": AutoencoderKLWan(**preset.vae),
            }
    finally:
        torch.set_default_dtype(default_dtype)
    if preset.distilled:
        pipe: Any = HeliosPyramidPipeline(
            scheduler=HeliosDMDScheduler(**preset.scheduler), is_distilled=True, **components
        )
    else:
        pipe = HeliosPipeline(scheduler=HeliosScheduler(**preset.scheduler), **components)
    pipe.save_pretrained(directory)
    return directory


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("directory", type=Path)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="distilled")
    parser.add_argument("--device", default="cuda", help="where to initialise: cuda or cpu")
    parser.add_argument("--shrink", action="store_true", help="toy widths, for a CPU check")
    parser.add_argument("--gamma", type=float, help="the pyramid scheduler's gamma (1/3)")
    args = parser.parse_args()
    preset = PRESETS[args.preset]
    if args.shrink:
        preset = shrunk(preset)
    if args.gamma is not None:
        preset = replace(preset, scheduler={**preset.scheduler, "gamma": args.gamma})
    started = time.perf_counter()
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    build(args.directory, preset, args.device, dtype)
    print(f"saved {args.preset} to {args.directory} in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
