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
import string
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
from transformers import T5Tokenizer, UMT5Config, UMT5EncoderModel

UMT5_XXL: dict[str, Any] = dict(
    vocab_size=256384,
    d_model=4096,
    d_kv=64,
    d_ff=10240,
    num_layers=24,
    num_heads=64,
    relative_attention_num_buckets=32,
    feed_forward_proj="gated-gelu",
)
"""google/umt5-xxl's encoder, as Wan2.1 and Wan2.2 ship it."""

CONFIGS: dict[str, dict[str, Any]] = {
    "wan2.1-t2v-1.3b": dict(
        transformer=dict(
            patch_size=(1, 2, 2),
            num_attention_heads=12,
            attention_head_dim=128,
            in_channels=16,
            out_channels=16,
            text_dim=4096,
            freq_dim=256,
            ffn_dim=8960,
            num_layers=30,
            cross_attn_norm=True,
            qk_norm="rms_norm_across_heads",
            eps=1e-6,
            rope_max_seq_len=1024,
        ),
        flow_shift=3.0,  # Wan's 480p setting
    ),
    "wan2.1-t2v-14b": dict(
        transformer=dict(
            patch_size=(1, 2, 2),
            num_attention_heads=40,
            attention_head_dim=128,
            in_channels=16,
            out_channels=16,
            text_dim=4096,
            freq_dim=256,
            ffn_dim=13824,
            num_layers=40,
            cross_attn_norm=True,
            qk_norm="rms_norm_across_heads",
            eps=1e-6,
            rope_max_seq_len=1024,
        ),
        flow_shift=5.0,  # Wan's 720p setting
    ),
}
"""Published `transformer/config.json` values (the VAE is `AutoencoderKLWan`'s defaults,
which are Wan2.1's)."""


def tokenizer() -> T5Tokenizer:
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [(char, -5.0) for char in string.ascii_lowercase + string.digits]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=512)


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
            tokenizer=tokenizer(),
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
    build(args.directory, config["transformer"], UMT5_XXL, config["flow_shift"], args.device)
    print(f"saved a random {args.config} to {args.directory}")


if __name__ == "__main__":
    main()
