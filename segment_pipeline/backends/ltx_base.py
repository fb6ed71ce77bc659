"""What the LTX-Video and LTX-2 backends share: checking and loading a local diffusers
checkpoint, the device and dtype, the request checks the VAEs' compression implies, and one
pipeline call per window (per-step progress, noise seeded per window, one call at a time).

Each backend (`ltx`, `ltx2`) keeps only what differs: which pipeline and components, how
given frames become conditions, guidance, and what comes back (frames; frames and audio).
Everything that can go wrong with a checkpoint is found while the generator is built and
raised as `ModelLoadError`, never in the middle of a job.
"""

from __future__ import annotations

import json
import threading
from abc import abstractmethod
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from ..errors import InvalidRequest, ModelLoadError
from ..generator import BatchedGenerator
from ..request import GeneratorDefaults, Limits, ResolvedRequest
from .embedded import window_seed
from .registry import OFFLOAD_MODES

StepEnd = Callable[[Any, int, torch.Tensor, dict[str, Any]], dict[str, Any]]
"""A diffusers `callback_on_step_end`: (pipeline, step, timestep, tensors) -> tensors."""


class DiffusersGenerator(BatchedGenerator):
    """A backend over a local diffusers checkpoint: where it lies, the device it runs on and
    the dtype its weights run in there (`weights_dtype`)."""

    def __init__(self, model_path: str | Path, *, limits: Limits | None, device: str) -> None:
        super().__init__(limits)
        self.model_path = Path(model_path)
        self.device = torch_device(device)
        self.dtype = weights_dtype(self.device)


class LTXFamilyGenerator(DiffusersGenerator):
    """A generator over one diffusers pipeline of the LTX family, on CPU or GPU.

    A subclass names its family and pipelines, loads its components (`_load_components`)
    and says its size and frame multiples (`_multiples`: `size_multiple` is what
    `SegmentedGenerator.size_rule` rounds sizes to); windows go through `_call`.
    """

    backend: ClassVar[str]  # the registry's name, in `describe`
    family: ClassVar[str]  # the model family's name, in error messages
    pipelines: ClassVar[tuple[str, ...]]  # `_class_name`s of `model_index.json` it can run
    components: ClassVar[tuple[str, ...]]  # what `model_index.json` must list
    native_defaults: ClassVar[GeneratorDefaults]
    unnamed: ClassVar[str]  # the generator's name when `model_path` has none

    def __init__(
        self,
        model_path: str | Path,
        *,
        limits: Limits | None = None,
        device: str = "cpu",
        defaults: GeneratorDefaults | None = None,
        offload: str = "none",
    ) -> None:
        super().__init__(model_path, limits=limits, device=device)
        # Load and check every component now, so a broken checkpoint never fails mid-job.
        read_index(self.model_path, self.pipelines, self.components, self.family)
        pipe = self._load_components(self.model_path, self.dtype)
        # Typed `Any`: diffusers registers components at run time (`pipe.vae` and the like).
        self.pipe: Any = to_device(pipe, self.device, self.dtype, self.family, offload)
        self.name = self.model_path.name or self.unnamed
        self.defaults = defaults or self.native_defaults
        self.size_multiple, self.frame_multiple = self._multiples()
        self.max_width, self.max_height = self._max_sides()
        # One pipeline object holds per-call state (guidance scale, timesteps): one call at a time.
        self._lock = threading.Lock()

    @abstractmethod
    def _load_components(self, path: Path, dtype: torch.dtype) -> Any:
        """The family's pipeline from `path` in `dtype` (on the CPU), each component checked."""

    @abstractmethod
    def _multiples(self) -> tuple[int, int]:
        """(what frame sides must be a multiple of, n in the frame counts n*k+1)."""

    def _max_sides(self) -> tuple[int | None, int | None]:
        """The checkpoint's own caps on (width, height) in pixels; None: the service's."""
        return None, None

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(
            backend=self.backend,
            weights=self.model_path.name,  # its directory, not where it lies on disk
            device=str(self.device),
            dtype=str(self.dtype).removeprefix("torch."),
        )
        return info

    def check_inputs(self, request: ResolvedRequest) -> None:
        check_shape(request, self.frame_multiple, self.family)

    def _call(self, request: ResolvedRequest, on_step_end: StepEnd, **inputs: Any) -> Any:
        """One pipeline call at `request`'s size, length, frame rate and step count, frames
        out as numpy in [0, 1]; `inputs` are the family's own (prompts, conditions, seeds,
        guidance). `on_step_end` raising GenerationCancelled stops the pipeline."""
        with self._lock:
            return self.pipe(
                height=request.height,
                width=request.width,
                num_frames=request.segment_frames,
                frame_rate=request.fps,
                num_inference_steps=request.num_inference_steps,
                output_type="np",
                callback_on_step_end=on_step_end,
                callback_on_step_end_tensor_inputs=[],
                **inputs,
            )


def step_end(report: Callable[[int, int], None]) -> StepEnd:
    """A `callback_on_step_end` that reports (steps done, total steps) after every step."""

    def on_step_end(
        pipe: Any, step: int, timestep: torch.Tensor, tensors: dict[str, Any]
    ) -> dict[str, Any]:
        report(step + 1, pipe.num_timesteps)
        return tensors

    return on_step_end


def window_noise(seed: int, index: int) -> torch.Generator:
    """The noise generator of window `index` of a request with `seed`."""
    return torch.Generator().manual_seed(window_seed(seed, index))


def to_uint8(video: np.ndarray) -> np.ndarray:
    """(T, H, W, 3) floats in [0, 1] to uint8 frames."""
    return (np.asarray(video) * 255.0).round().clip(0, 255).astype(np.uint8)


def check_shape(request: ResolvedRequest, frames: int, family: str) -> None:
    """Windows and overlaps of `frames`k+1 frames (the VAE encodes the given frames as one
    clip), for the LTX family `family`; sizes were rounded to its multiple by `resolve`."""
    if (request.segment_frames - 1) % frames:
        raise InvalidRequest(
            f"segment_frames must be {frames}k+1 ({_examples(frames)}) for {family}, "
            f"got {request.segment_frames}",
            param="segment_frames",
        )
    if request.overlap_frames and (request.overlap_frames - 1) % frames:
        raise InvalidRequest(
            f"overlap_frames must be 0 or {frames}k+1 ({_examples(frames)}) for {family}: "
            f"its VAE encodes the overlap as one clip; got {request.overlap_frames}",
            param="overlap_frames",
        )
    given = request.first_given_frames
    if request.extend_video is not None and (given - 1) % frames:
        raise InvalidRequest(
            f"extend_video has {len(request.extend_video)} frames; {family} conditions on "
            f"its last overlap_frames ({request.overlap_frames}) frames, so give at least "
            f"that many (or {frames}k+1 frames in all)",
            param="extend_video",
        )


def _examples(multiple: int) -> str:
    return ", ".join(str(multiple * k + 1) for k in range(1, 4)) + ", ..."


def weights_dtype(device: torch.device) -> torch.dtype:
    """The dtype a diffusers checkpoint runs in on `device`: bfloat16 on a GPU, float32 on
    the CPU (whose bfloat16 kernels are slow or missing)."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def torch_device(device: str) -> torch.device:
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ModelLoadError(f"unknown device {device!r}: {exc}", param="device") from exc


def read_index(
    path: Path, pipelines: tuple[str, ...], components: tuple[str, ...], family: str
) -> dict[str, Any]:
    """Check `path` is a diffusers directory of one of `pipelines` with every one of
    `components`; return its `model_index.json`. Errors are `ModelLoadError` naming
    `model_path`."""
    if not path.is_dir():
        raise ModelLoadError(
            f"model_path {str(path)!r} is not a directory; give a local {family} diffusers "
            "checkpoint directory",
            param="model_path",
        )
    index_file = path / "model_index.json"
    if not index_file.is_file():
        raise ModelLoadError(
            f"model_path {str(path)!r} has no model_index.json, so it is not a diffusers "
            "pipeline directory",
            param="model_path",
        )
    try:
        index = json.loads(index_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"cannot read {str(index_file)!r}: {exc}", param="model_path") from exc
    kind = index.get("_class_name") if isinstance(index, dict) else None
    if kind not in pipelines:
        raise ModelLoadError(
            f"model_path {str(path)!r} holds a {kind} pipeline, not {family} "
            f"(model_index.json _class_name must be one of {', '.join(pipelines)})",
            param="model_path",
        )
    missing = [name for name in components if not _listed(index.get(name))]
    if missing:
        raise ModelLoadError(
            f"{family} checkpoint {str(path)!r} lacks {', '.join(missing)}", param="model_path"
        )
    return index


def _listed(entry: object) -> bool:
    """Whether a `model_index.json` entry names a component (``[library, class]``)."""
    return isinstance(entry, list) and len(entry) == 2 and entry[1] is not None


def load_checked(
    pipeline: Any, path: Path, dtype: torch.dtype, expected: Mapping[str, type], family: str
) -> Any:
    """`pipeline.from_pretrained(path)` from local files, each component in `expected` of
    its class; every failure is a `ModelLoadError` naming `model_path`."""
    try:
        pipe = pipeline.from_pretrained(path, local_files_only=True, dtype=dtype)
    except Exception as exc:  # diffusers/transformers/safetensors raise many kinds
        raise ModelLoadError(
            f"cannot load the {family} checkpoint at {str(path)!r}: {exc}", param="model_path"
        ) from exc
    for name, cls in expected.items():
        component = getattr(pipe, name, None)
        if not isinstance(component, cls):
            raise ModelLoadError(
                f"{family} checkpoint {str(path)!r}: {name} is "
                f"{type(component).__name__}, expected {cls.__name__}",
                param="model_path",
            )
    return pipe


def to_device(
    pipe: Any, device: torch.device, dtype: torch.dtype, family: str, offload: str = "none"
) -> Any:
    """`pipe` in `dtype` on `device` (or offloaded to it, see `OFFLOAD_MODES`), without
    progress bars; a `ModelLoadError` naming `device` when it does not fit or the device
    does not exist, naming `offload` when it cannot apply."""
    if offload not in OFFLOAD_MODES:
        raise ModelLoadError(
            f"offload must be one of {', '.join(OFFLOAD_MODES)}, got {offload!r}",
            param="offload",
        )
    if offload != "none" and device.type != "cuda":
        raise ModelLoadError(
            f"offload {offload!r} moves weights between the CPU and a GPU; the device is "
            f"{device}: give a CUDA device, or offload none",
            param="offload",
        )
    try:
        if pipe.transformer.dtype != dtype:  # diffusers that predate `dtype=` load float32
            pipe.to(dtype=dtype)
        if offload == "model":
            pipe.enable_model_cpu_offload(device=device)
        elif offload == "sequential":
            pipe.enable_sequential_cpu_offload(device=device)
        else:
            pipe.to(device)
    except (RuntimeError, AssertionError) as exc:  # no CUDA build, out of memory, bad index
        raise ModelLoadError(
            f"cannot move the {family} pipeline to {device}: {exc}", param="device"
        ) from exc
    pipe.set_progress_bar_config(disable=True)
    return pipe
