"""Generator backends and the registry that builds them by name or from a checkpoint."""

from __future__ import annotations

from pathlib import Path

from ..errors import InvalidRequest
from ..generator import SegmentedGenerator
from ..request import Limits
from .registry import BACKENDS, OFFLOAD_MODES, REGISTRY, Backend, backend_for, backend_named

__all__ = [
    "BACKENDS",
    "OFFLOAD_MODES",
    "REGISTRY",
    "Backend",
    "backend_for",
    "backend_named",
    "load_generator",
]


def load_generator(
    backend: str | None = None,
    model_path: str | Path | None = None,
    *,
    limits: Limits | None = None,
    device: str = "cpu",
    offload: str = "none",
) -> SegmentedGenerator:
    """Build a generator; errors name the parameter at fault.

    `backend` None: the one `model_path` holds (its `model_index.json`; see
    `registry.backend_for`), the shipped embedded model without a path. By name:
    ``embedded`` loads the shipped default model (or `model_path`, a directory saved by
    training); the diffusers families (``ltx``, ``ltx2``, ``wan``, ``skyreels``,
    ``helios``) load a local checkpoint directory `model_path`. `offload` (diffusers
    checkpoints on a GPU only: ``none``, ``model``, ``sequential``) keeps weights on the CPU
    until they run (`ltx_base.OFFLOAD_MODES`).
    """
    chosen = backend_named(backend if backend is not None else backend_for(model_path))
    if chosen.needs_path and model_path is None:
        raise InvalidRequest(f"the {chosen.name} backend needs model_path", param="model_path")
    if offload not in OFFLOAD_MODES:
        raise InvalidRequest(
            f"offload must be one of {', '.join(OFFLOAD_MODES)}, got {offload!r}", param="offload"
        )
    if offload == "none":
        return chosen.generator_class()(model_path, limits=limits, device=device)
    if not chosen.needs_path:  # the embedded model: small, and not a diffusers pipeline
        raise InvalidRequest(
            f"offload applies to diffusers checkpoints, not the {chosen.name} model",
            param="offload",
        )
    return chosen.generator_class()(model_path, limits=limits, device=device, offload=offload)
