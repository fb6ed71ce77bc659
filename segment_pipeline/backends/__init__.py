"""Generator backends and the registry that builds them by name or from a checkpoint."""

from __future__ import annotations

from pathlib import Path

from ..errors import InvalidRequest
from ..generator import SegmentedGenerator
from ..request import Limits
from .registry import BACKENDS, REGISTRY, Backend, backend_for, backend_named

__all__ = ["BACKENDS", "REGISTRY", "Backend", "backend_for", "backend_named", "load_generator"]


def load_generator(
    backend: str | None = None,
    model_path: str | Path | None = None,
    *,
    limits: Limits | None = None,
    device: str = "cpu",
) -> SegmentedGenerator:
    """Build a generator; errors name the parameter at fault.

    `backend` None: the one `model_path` holds (its `model_index.json`; see
    `registry.backend_for`), the shipped embedded model without a path. By name:
    ``embedded`` loads the shipped default model (or `model_path`, a directory saved by
    training); the diffusers families (``ltx``, ``ltx2``, ``wan``, ``skyreels``,
    ``helios``) load a local checkpoint directory `model_path`.
    """
    chosen = backend_named(backend if backend is not None else backend_for(model_path))
    if chosen.needs_path and model_path is None:
        raise InvalidRequest(f"the {chosen.name} backend needs model_path", param="model_path")
    return chosen.generator_class()(model_path, limits=limits, device=device)
