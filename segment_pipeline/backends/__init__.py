"""Generator backends and the registry that builds them by name."""

from __future__ import annotations

from pathlib import Path

from ..errors import InvalidRequest
from ..generator import SegmentedGenerator
from ..request import Limits

BACKENDS = ("embedded", "ltx", "ltx2")


def load_generator(
    backend: str = "embedded",
    model_path: str | Path | None = None,
    *,
    limits: Limits | None = None,
    device: str = "cpu",
) -> SegmentedGenerator:
    """Build a generator by backend name; errors name the parameter at fault.

    ``embedded`` loads the shipped default model (or `model_path`, a directory saved by
    training); ``ltx`` loads an LTX-Video diffusers checkpoint from the local `model_path`,
    ``ltx2`` an LTX-2 one (video with its audio).
    """
    if backend == "embedded":
        from .embedded import EmbeddedGenerator

        return EmbeddedGenerator(model_path, limits=limits, device=device)
    if backend == "ltx":
        from .ltx import LTXGenerator

        if model_path is None:
            raise InvalidRequest("the ltx backend needs model_path", param="model_path")
        return LTXGenerator(model_path, limits=limits, device=device)
    if backend == "ltx2":
        from .ltx2 import LTX2Generator

        if model_path is None:
            raise InvalidRequest("the ltx2 backend needs model_path", param="model_path")
        return LTX2Generator(model_path, limits=limits, device=device)
    raise InvalidRequest(
        f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}", param="backend"
    )
