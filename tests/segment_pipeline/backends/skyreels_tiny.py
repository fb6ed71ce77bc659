"""A tiny, randomly initialised SkyReels-V2 Diffusion Forcing checkpoint, built without any
download.

Every component is the real diffusers/transformers class at a toy size (UMT5 text encoder,
Wan VAE, `SkyReelsV2Transformer3DModel`, flow UniPC scheduler), saved as the published
`SkyReelsV2DiffusionForcingPipeline` directory is, so it loads through `from_pretrained` like
one. The VAE keeps Wan's compression (8x in space, 4x in time, the first frame alone) and the
transformer its 2x2 patches, so the tiny model takes the real model's sizes: 32x32 frames
are 2x2 tokens a latent frame, 9 frames are 3 latent frames.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import (
    SkyReelsV2DiffusionForcingPipeline,
    SkyReelsV2Transformer3DModel,
    UniPCMultistepScheduler,
)

from .ltx_tiny import tiny_tokenizer
from .wan_tiny import TEXT_DIM, tiny_umt5, tiny_wan_vae


def build_tiny_skyreels(
    directory: Path, seed: int = 0, *, num_frame_per_block: int = 1, inject_sample_info: bool = True
) -> Path:
    """Save a tiny random SkyReels-V2 DF pipeline to `directory` (created); returns it.

    `num_frame_per_block` is the transformer's saved causal block size and
    `inject_sample_info` whether it embeds the frame rate (1 and True in the published DF
    checkpoints)."""
    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer()
    text_encoder = tiny_umt5(len(tokenizer))
    vae = tiny_wan_vae(base_dim=8, z_dim=16)  # Wan's latent width: its latents_mean/std
    transformer = SkyReelsV2Transformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=16,
        out_channels=16,
        text_dim=TEXT_DIM,
        freq_dim=32,
        ffn_dim=32,
        num_layers=2,
        rope_max_seq_len=64,  # positions an axis: 64 latent frames, 1024 pixels
        inject_sample_info=inject_sample_info,  # the frame rate's embedding (16 fps or not)
        num_frame_per_block=num_frame_per_block,
    )
    # The published DF checkpoints' scheduler: flow matching with UniPC and a shift of 8.
    scheduler = UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=8.0
    )
    pipe = SkyReelsV2DiffusionForcingPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        transformer=transformer,
        vae=vae,
        scheduler=scheduler,
    )
    pipe.save_pretrained(directory)
    return directory
