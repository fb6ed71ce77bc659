"""Tiny, randomly initialised Helios checkpoints (Helios and Helios-Distilled), built in code.

Every component is the real diffusers/transformers class at a toy size (Wan's VAE, Helios's
transformer with its multi-term memory patches, a UMT5 text encoder), saved with
`save_pretrained`, so the directories load through `from_pretrained` exactly as the published
ones do. The VAE keeps Wan's compression (8x in space, 4x in time): a 64x64 frame is 8x8
latent pixels, a 9-frame chunk 3 latent frames.
"""

from __future__ import annotations

from pathlib import Path

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

from .ltx_tiny import tiny_tokenizer

TEXT_DIM = 16
LATENT_CHANNELS = 4


def _components(seed: int) -> dict[str, object]:
    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer()
    text_encoder = UMT5EncoderModel(
        UMT5Config(
            vocab_size=len(tokenizer),
            d_model=TEXT_DIM,
            d_kv=8,
            d_ff=32,
            num_layers=1,
            num_heads=2,
            relative_attention_num_buckets=8,
        )
    )
    vae = AutoencoderKLWan(
        base_dim=4,
        z_dim=LATENT_CHANNELS,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
        latents_mean=[0.0] * LATENT_CHANNELS,
        latents_std=[1.0] * LATENT_CHANNELS,
    )
    transformer = HeliosTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        text_dim=TEXT_DIM,
        freq_dim=16,
        ffn_dim=16,
        num_layers=1,
        rope_dim=(4, 4, 4),
    )
    return {"tokenizer": tokenizer, "text_encoder": text_encoder, "vae": vae,
            "transformer": transformer}  # fmt: skip


def build_tiny_helios(directory: Path, seed: int = 0) -> Path:
    """Save a tiny random Helios (`HeliosPipeline`, one-stage `HeliosScheduler`) to
    `directory` (created); returns it."""
    pipe = HeliosPipeline(scheduler=HeliosScheduler(stages=1), **_components(seed))  # type: ignore[arg-type]
    pipe.save_pretrained(directory)
    return directory


def build_tiny_helios_distilled(directory: Path, seed: int = 0) -> Path:
    """Save a tiny random Helios-Distilled (`HeliosPyramidPipeline` with a three-stage
    `HeliosDMDScheduler`, `is_distilled`) to `directory` (created); returns it."""
    pipe = HeliosPyramidPipeline(
        scheduler=HeliosDMDScheduler(stages=3, gamma=0.25),
        is_distilled=True,
        **_components(seed),  # type: ignore[arg-type]
    )
    pipe.save_pretrained(directory)
    return directory
