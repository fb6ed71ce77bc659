"""The embedded default model: a small pixel-space video diffusion model.

A window of `frames` RGB frames is pixel-unshuffled (space-to-depth, lossless) by `unshuffle`
and stacked along channels, so a diffusers `UNet2DConditionModel` denoises the whole window
at once on a small spatial grid. Its input per window is::

    [noisy window (F*3*r*r) | given frames, zero where not given (F*3*r*r) | given mask (F)]

and it predicts v (`DDIMScheduler`, v-prediction, zero terminal SNR, trailing spacing); with
`unet_predicts="x0"` the UNet outputs the clean window and `forward` converts it to v. The
prompt is read by a word-level tokenizer and a two-layer transformer encoder whose states
the UNet cross-attends to. Unknown words map to `<unk>`; nothing here downloads anything.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from diffusers import DDIMScheduler, UNet2DConditionModel
from safetensors.torch import load_file, save_file
from torch import nn

from .errors import ModelLoadError

DEFAULT_MODEL_DIR = Path(__file__).parent / "models" / "streamgen-tiny"

PAD, UNK = "<pad>", "<unk>"

# The words of the world the default model is trained on, plus common filler. Any other
# word reads as <unk>.
VOCABULARY = [
    PAD, UNK,
    # shapes
    "circle", "ball", "disc", "disk", "dot", "square", "box", "block", "triangle",
    # colours
    "red", "green", "blue", "yellow", "white", "orange", "purple", "violet", "cyan",
    "black", "dark", "gray", "grey", "navy",
    # motion
    "moving", "moves", "move", "drifting", "drifts", "sliding", "slides", "going", "goes",
    "heading", "heads", "rising", "rises", "falling", "falls", "left", "right", "up", "down",
    "still", "resting", "rests", "standing", "stands", "not", "static", "stationary",
    # filler
    "a", "an", "the", "on", "in", "of", "to", "towards", "toward", "background", "slowly",
    "please", "with", "and", "is", "that", "which", "over", "across", "frame", "screen",
]  # fmt: skip


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild the model; stored as the model directory's config.json."""

    name: str = "streamgen-tiny"
    frames: int = 12
    width: int = 128
    height: int = 128
    fps: float = 8.0
    unshuffle: int = 4
    text_dim: int = 64
    text_layers: int = 2
    text_heads: int = 4
    max_tokens: int = 24
    vocabulary: list[str] = field(default_factory=lambda: list(VOCABULARY))
    block_out_channels: list[int] = field(default_factory=lambda: [64, 128, 128])
    layers_per_block: int = 1
    attention_head_dim: int = 16
    conv_kernel: int = 1  # of the UNet's first and last convolution (1: per 4x4 patch)
    # What the UNet outputs: "v" directly, or "x0" (the clean window), turned into v from the
    # noisy input. A narrow UNet cannot carry the per-pixel noise that v holds at low noise
    # levels through its 64 channels; the clean window of this world is smooth and it can.
    unet_predicts: str = "x0"
    num_train_timesteps: int = 1000
    default_steps: int = 8
    default_overlap: int = 4

    @property
    def frame_channels(self) -> int:
        return 3 * self.unshuffle * self.unshuffle

    @property
    def in_channels(self) -> int:
        return 2 * self.frames * self.frame_channels + self.frames

    @property
    def out_channels(self) -> int:
        return self.frames * self.frame_channels


class WordTokenizer:
    """Lower-cases, splits on anything but letters, maps words to ids (<unk> if unknown)."""

    def __init__(self, vocabulary: list[str], max_tokens: int) -> None:
        self.ids = {word: i for i, word in enumerate(vocabulary)}
        self.max_tokens = max_tokens

    def __call__(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(token ids, attention mask), both (B, max_tokens); at least one token each."""
        ids = torch.zeros(len(prompts), self.max_tokens, dtype=torch.long)
        mask = torch.zeros(len(prompts), self.max_tokens, dtype=torch.bool)
        for row, prompt in enumerate(prompts):
            words = re.findall(r"[a-z]+", prompt.lower())[: self.max_tokens] or [PAD]
            for col, word in enumerate(words):
                ids[row, col] = self.ids.get(word, self.ids[UNK])
                mask[row, col] = True
        return ids, mask


class TextEncoder(nn.Module):
    """Token embeddings + positions + a small transformer encoder: (B, L) -> (B, L, dim)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.tokens = nn.Embedding(len(config.vocabulary), config.text_dim)
        self.positions = nn.Embedding(config.max_tokens, config.text_dim)
        layer = nn.TransformerEncoderLayer(
            config.text_dim,
            config.text_heads,
            dim_feedforward=4 * config.text_dim,
            dropout=0.0,
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, config.text_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(config.text_dim)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(ids.shape[1], device=ids.device)
        hidden = self.tokens(ids) + self.positions(positions)[None]
        hidden = self.encoder(hidden, src_key_padding_mask=~mask)
        return self.norm(hidden)


class TinyVideoDiffusion(nn.Module):
    """Text encoder + UNet over pixel-unshuffled frame windows (see the module docstring)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.tokenizer = WordTokenizer(config.vocabulary, config.max_tokens)
        self.text_encoder = TextEncoder(config)
        channels = list(config.block_out_channels)
        self.unet = UNet2DConditionModel(
            sample_size=config.height // config.unshuffle,
            in_channels=config.in_channels,
            out_channels=config.out_channels,
            down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (len(channels) - 1),
            up_block_types=("CrossAttnUpBlock2D",) * (len(channels) - 1) + ("UpBlock2D",),
            block_out_channels=tuple(channels),
            layers_per_block=config.layers_per_block,
            cross_attention_dim=config.text_dim,
            attention_head_dim=config.attention_head_dim,
            norm_num_groups=min(32, channels[0]),
            conv_in_kernel=config.conv_kernel,
            conv_out_kernel=config.conv_kernel,
        )

        if config.unet_predicts not in ("v", "x0"):
            raise ValueError(f"unet_predicts must be 'v' or 'x0', got {config.unet_predicts!r}")
        # Not a parameter: rebuilt from the config, so saved weights do not carry it.
        scheduler: Any = self.make_scheduler()  # diffusers config attributes are untyped
        alphas = scheduler.alphas_cumprod.clone().float()
        self.register_buffer("alphas_cumprod", alphas, persistent=False)

    def encode_prompts(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Text states (B, L, dim) and their mask (B, L)."""
        device = self.text_encoder.tokens.weight.device
        ids, mask = self.tokenizer(prompts)
        ids, mask = ids.to(device), mask.to(device)
        return self.text_encoder(ids, mask), mask

    def to_channels(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, F, 3, H, W) in [-1, 1] -> (B, F*3*r*r, H/r, W/r)."""
        b, f, c, h, w = frames.shape
        r = self.config.unshuffle
        packed = nn.functional.pixel_unshuffle(frames.reshape(b * f, c, h, w), r)
        return packed.reshape(b, f * c * r * r, h // r, w // r)

    def from_channels(self, packed: torch.Tensor) -> torch.Tensor:
        """(B, F*3*r*r, H/r, W/r) -> (B, F, 3, H, W)."""
        b, _, h, w = packed.shape
        r, f = self.config.unshuffle, self.config.frames
        frames = nn.functional.pixel_shuffle(packed.reshape(b * f, 3 * r * r, h, w), r)
        return frames.reshape(b, f, 3, h * r, w * r)

    def forward(
        self,
        noisy: torch.Tensor,
        timesteps: torch.Tensor,
        given: torch.Tensor,
        given_mask: torch.Tensor,
        text: torch.Tensor,
        text_mask: torch.Tensor,
    ) -> torch.Tensor:
        """Predict v for `noisy` (B, C, h, w) packed windows.

        `given` is packed like `noisy` (zeros where no frame is given); `given_mask` is (B, F)
        with 1 for given frames.
        """
        _, _, h, w = noisy.shape
        mask_planes = given_mask[:, :, None, None].to(noisy.dtype).expand(-1, -1, h, w)
        sample = torch.cat([noisy, given, mask_planes], dim=1)
        unet: Any = self.unet  # diffusers' ModelMixin hides __call__ from mypy
        out = unet(
            sample, timesteps, encoder_hidden_states=text, encoder_attention_mask=text_mask
        ).sample
        if self.config.unet_predicts == "v":
            return out
        # x_t = a x0 + s eps and v = a eps - s x0 give v = (a x_t - x0) / s.
        alphas_cumprod: torch.Tensor = self.alphas_cumprod  # type: ignore[assignment]
        alpha_bar = alphas_cumprod[timesteps.long()].to(noisy.dtype)[:, None, None, None]
        return (alpha_bar.sqrt() * noisy - out) / (1 - alpha_bar).sqrt()

    def make_scheduler(self) -> DDIMScheduler:
        return DDIMScheduler(
            num_train_timesteps=self.config.num_train_timesteps,
            beta_schedule="squaredcos_cap_v2",
            prediction_type="v_prediction",
            rescale_betas_zero_snr=True,
            timestep_spacing="trailing",
            clip_sample=False,
        )

    # Persistence ------------------------------------------------------------------------
    def save(self, directory: str | Path, metadata: dict[str, Any] | None = None) -> None:
        """Write config.json and model.safetensors (float16, to keep the repo small)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "config.json").write_text(json.dumps(asdict(self.config), indent=2) + "\n")
        state = {k: v.detach().half().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(state, str(directory / "model.safetensors"), metadata=metadata)

    @classmethod
    def load(cls, directory: str | Path) -> TinyVideoDiffusion:
        """Load a model saved by `save`; a missing or broken directory is `ModelLoadError`."""
        directory = Path(directory)
        config_path = directory / "config.json"
        weights_path = directory / "model.safetensors"
        for path in (config_path, weights_path):
            if not path.is_file():
                raise ModelLoadError(
                    f"embedded model directory {str(directory)!r} has no {path.name}"
                )
        try:
            config = ModelConfig(**json.loads(config_path.read_text()))
            model = cls(config)
            model.load_state_dict({k: v.float() for k, v in load_file(str(weights_path)).items()})
        except (OSError, ValueError, TypeError, RuntimeError) as exc:
            raise ModelLoadError(
                f"cannot load embedded model from {str(directory)!r}: {exc}"
            ) from exc
        return model.eval()


def initial_model(config: ModelConfig | None = None, seed: int = 0) -> TinyVideoDiffusion:
    """A model with deterministic initial (untrained) weights."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return TinyVideoDiffusion(config or ModelConfig())
