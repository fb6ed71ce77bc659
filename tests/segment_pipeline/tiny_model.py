"""A tiny configuration of the embedded model: real layers, seconds to build and train."""

from __future__ import annotations

from segment_pipeline.embedded_model import ModelConfig

TINY = ModelConfig(
    frames=4,
    width=32,
    height=32,
    text_dim=16,
    block_out_channels=[8, 16, 16],
    attention_head_dim=8,
    norm_groups=4,
    decoder_channels=8,
    decoder_blocks=1,
)
