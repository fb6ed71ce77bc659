"""What the random-checkpoint builders of the Wan family (`wan_random.py`,
`skyreels_random.py`, `helios_random.py`) share: the published text encoder's shape, a
tokenizer built in code, and Wan2.1's transformer layout at a given width and depth."""

from __future__ import annotations

import string
from typing import Any

from transformers import T5Tokenizer


def umt5_xxl() -> dict[str, Any]:
    """UMT5-XXL's encoder, the text encoder Wan2.1 and the models built on it ship."""
    return {
        "vocab_size": 256384,
        "d_model": 4096,
        "d_kv": 64,
        "d_ff": 10240,
        "num_layers": 24,
        "num_heads": 64,
        "relative_attention_num_buckets": 32,
        "feed_forward_proj": "gated-gelu",
    }


def letter_tokenizer() -> T5Tokenizer:
    """A T5 (Unigram) tokenizer over single letters and digits, built in code (the published
    one is a download): token ids only index the full-size embedding, so the encoder's cost
    over the pipelines' padded tokens is the same."""
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [(char, -5.0) for char in string.ascii_lowercase + string.digits]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=512)


def wan_transformer(heads: int, ffn_dim: int, layers: int) -> dict[str, Any]:
    """Wan2.1's published `transformer/config.json` at `heads` x 128 wide, `ffn_dim` and
    `layers` (1.3B: 12, 8960, 30; 14B: 40, 13824, 40)."""
    return {
        "patch_size": (1, 2, 2),
        "num_attention_heads": heads,
        "attention_head_dim": 128,
        "in_channels": 16,
        "out_channels": 16,
        "text_dim": 4096,
        "freq_dim": 256,
        "ffn_dim": ffn_dim,
        "num_layers": layers,
        "cross_attn_norm": True,
        "qk_norm": "rms_norm_across_heads",
        "eps": 1e-6,
        "rope_max_seq_len": 1024,
    }
