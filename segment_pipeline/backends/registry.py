"""Which backend runs a checkpoint, found from the checkpoint itself.

A diffusers checkpoint directory names its pipeline in `model_index.json` (``_class_name``);
each pipeline class maps to one backend here, and a backend is a module of this package
with one `SegmentedGenerator` class, imported only when a model of it is loaded (the
diffusers families import torch-heavy code, and a server of the embedded model needs none
of it). A directory saved by the embedded model's training has no `model_index.json` but
its own ``config.json``.

    backend_for("/models/Wan2.1-T2V-1.3B-Diffusers")  # -> "wan"
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, cast

from ..errors import InvalidRequest, ModelLoadError
from ..generator import SegmentedGenerator
from ..request import Limits


class GeneratorClass(Protocol):
    """What every backend's generator class is called with (the diffusers families also
    take `offload`)."""

    def __call__(
        self, model_path: str | Path | None, *, limits: Limits | None, device: str, **options: str
    ) -> SegmentedGenerator: ...


@dataclass(frozen=True)
class Backend:
    """One backend: its name, where its generator class lives, the `model_index.json`
    ``_class_name``s it runs, and whether it needs a `model_path` (a checkpoint)."""

    name: str
    module: str  # relative to this package
    class_name: str
    pipelines: tuple[str, ...]
    needs_path: bool = True

    def generator_class(self) -> GeneratorClass:
        """The generator class (its module imported now); `ModelLoadError` when the
        module or class is missing (a family not installed in this build)."""
        try:
            module = importlib.import_module(f"{__package__}.{self.module}")
            cls = getattr(module, self.class_name)
        except (ImportError, AttributeError) as exc:
            raise ModelLoadError(
                f"the {self.name} backend cannot be imported: {exc}", param="backend"
            ) from exc
        if not (isinstance(cls, type) and issubclass(cls, SegmentedGenerator)):
            raise ModelLoadError(
                f"{self.module}.{self.class_name} is not a SegmentedGenerator", param="backend"
            )
        return cast(GeneratorClass, cls)


REGISTRY: tuple[Backend, ...] = (
    Backend("embedded", "embedded", "EmbeddedGenerator", (), needs_path=False),
    Backend(
        "ltx", "ltx", "LTXGenerator",
        ("LTXPipeline", "LTXConditionPipeline", "LTXImageToVideoPipeline"),
    ),
    Backend(
        "ltx2", "ltx2", "LTX2Generator",
        ("LTX2Pipeline", "LTX2ConditionPipeline", "LTX2ImageToVideoPipeline"),
    ),
    Backend(
        "wan", "wan", "WanGenerator",
        ("WanPipeline", "WanImageToVideoPipeline", "WanVideoToVideoPipeline"),
    ),
    Backend(
        "skyreels", "skyreels", "SkyReelsGenerator",
        (
            "SkyReelsV2DiffusionForcingPipeline",
            "SkyReelsV2DiffusionForcingImageToVideoPipeline",
            "SkyReelsV2DiffusionForcingVideoToVideoPipeline",
        ),
    ),
    Backend("helios", "helios", "HeliosGenerator", ("HeliosPipeline", "HeliosPyramidPipeline")),
)  # fmt: skip
"""Every backend; `BACKENDS` are their names."""

BACKENDS = tuple(backend.name for backend in REGISTRY)

OFFLOAD_MODES = ("none", "model", "sequential")
"""How a diffusers pipeline's weights sit on a GPU: all of them there (`none`); each model
moved there while it runs and back after (`model`, diffusers' model CPU offload: about the
largest model's memory); each layer moved there as it runs (`sequential`: least memory,
slowest)."""

_BY_NAME = {backend.name: backend for backend in REGISTRY}
_BY_PIPELINE = {pipeline: backend for backend in REGISTRY for pipeline in backend.pipelines}


def backend_named(name: str) -> Backend:
    """The backend called `name`; `InvalidRequest` naming `backend` when there is none."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise InvalidRequest(
            f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}", param="backend"
        ) from None


def backend_for(model_path: str | Path | None) -> str:
    """The name of the backend that runs the checkpoint at `model_path`: the embedded model
    without one, else the backend of its `model_index.json` ``_class_name`` (a directory
    without that file and with a ``config.json`` is the embedded model's). Errors are
    `ModelLoadError` naming `model_path` and saying what was found."""
    if model_path is None:
        return "embedded"
    path = Path(model_path)
    if not path.is_dir():
        raise ModelLoadError(
            f"model_path {str(path)!r} is not a directory; give a local checkpoint directory",
            param="model_path",
        )
    index_file = path / "model_index.json"
    if not index_file.is_file():
        if (path / "config.json").is_file():
            return "embedded"
        raise ModelLoadError(
            f"model_path {str(path)!r} has neither a model_index.json (a diffusers "
            "checkpoint) nor a config.json (an embedded model saved by training)",
            param="model_path",
        )
    try:
        index = json.loads(index_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"cannot read {str(index_file)!r}: {exc}", param="model_path") from exc
    kind = index.get("_class_name") if isinstance(index, dict) else None
    backend = _BY_PIPELINE.get(kind) if isinstance(kind, str) else None
    if backend is None:
        known = ", ".join(sorted(_BY_PIPELINE))
        raise ModelLoadError(
            f"model_path {str(path)!r} holds a {kind} pipeline, which no backend runs "
            f"(model_index.json _class_name must be one of {known}); name one with --backend "
            "if its components fit",
            param="model_path",
        )
    return backend.name
