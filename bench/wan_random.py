"""Build a randomly initialised Wan checkpoint of a published configuration, for timing.

Real weights cannot reach the benchmark machine (no network, little carried data), and
speed does not depend on the weights' values: this saves a diffusers directory with the
published classes and shapes (UMT5-XXL text encoder, Wan's VAE, the transformer, the UniPC
flow scheduler) filled with random numbers, which `bench/pipeline.py --backend wan
--model-path DIR` then runs like the real checkpoint:

    python bench/wan_random.py /tmp/wan2.1-1.3b --config wan2.1-t2v-1.3b --device cuda
    python bench/pipeline.py --backend wan --model-path /tmp/wan2.1-1.3b --device cuda \
        --size 832x480 --steps 30 --segments 4 --repeats 2

Modules are initialised on `--device` (a 4.7B-parameter text encoder initialises in seconds
on a GPU, minutes on a CPU) and saved in bf16 (the VAE in float32): about 12.5 GB for
Wan2.1 1.3B, 38 GB for the 14B. The
tokenizer is a small one built in code: token ids only index the (full-size) embedding.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
from transformers import UMT5Config, UMT5EncoderModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.wan_family import letter_tokenizer, umt5_xxl, wan_transformer

CONFIGS: dict[str, dict[str, Any]] = {
    "wan2.1-t2v-1.3b": dict(
        transformer=wan_transformer(heads=12, ffn_dim=8960, layers=30),
        flow_shift=3.0,  # Wan's 480p setting
    ),
    "wan2.1-t2v-14b": dict(
        transformer=wan_transformer(heads=40, ffn_dim=13824, layers=40),
        flow_shift=5.0,  # Wan's 720p setting
    ),
}
"""Published `transformer/config.json` values (the VAE is `AutoencoderKLWan`'s defaults,
which are Wan2.1's)."""


def build(
    directory: Path,
    transformer: dict[str, Any],
    text_encoder: dict[str, Any],
    flow_shift: float,
    device: str,
) -> Path:
    """Save a random Wan pipeline of these configurations to `directory`."""
    torch.manual_seed(0)
    with torch.device(device):
        pipe = WanPipeline(
            tokenizer=letter_tokenizer(),
            text_encoder=UMT5EncoderModel(UMT5Config(**text_encoder)).to(torch.bfloat16),
            vae=AutoencoderKLWan(),  # float32, as Wan runs its VAE
            # bf16 on disk (random values lose nothing); the loader's `dtype=` upcasts the
            # modules Wan keeps in float32, so the timed model is the published one.
            transformer=WanTransformer3DModel(**transformer).to(torch.bfloat16),
            scheduler=UniPCMultistepScheduler(
                prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=flow_shift
            ),
        )
    pipe.save_pretrained(directory)
    return directory


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("directory", type=Path)
    parser.add_argument("--config", choices=sorted(CONFIGS), default="wan2.1-t2v-1.3b")
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    config = CONFIGS[args.config]
    build(args.directory, config["transformer"], umt5_xxl(), config["flow_shift"], args.device)
    print(f"saved a random {args.config} to {args.directory}")


if __name__ == "__main__":
    main()
