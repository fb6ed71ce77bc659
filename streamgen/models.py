"""The models one process serves, by id, loaded on first use with a cap on how many stay
resident.

The default model (`backend` / `model_path`: the embedded one unless a checkpoint is named)
is loaded when the process starts and stays loaded: a request without `model` gets it, and
the worker measures its batches while idle. Every `--model ID=DIR` (the `models` setting,
``ID=DIR,ID=DIR``) is another model, recognised from its checkpoint (`backend_for`) and
loaded the first time a request (or a claimed job) names it. When more than
`max_loaded_models` would be resident, the one used least recently (never the default) is
dropped; a job still running on it keeps it alive until that job ends.

A worker with a Redis store claims only jobs whose model is in `ids` (`Accept.models`).
"""

from __future__ import annotations

import gc
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from segment_pipeline import (
    GenerationRequest,
    PipelineError,
    SegmentCursor,
    SegmentedGenerator,
    SegmentPipeline,
    backend_for,
    load_generator,
)

from .config import ConfigError, Settings
from .errors import InvalidParameter, from_pipeline_error

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSource:
    """A model to serve: its id and its checkpoint directory."""

    id: str
    path: str


def parse_models(text: str) -> tuple[ModelSource, ...]:
    """The `models` setting (``ID=DIR`` pairs, comma-separated) as sources; `ConfigError`
    naming the entry at fault."""
    sources: list[ModelSource] = []
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        model_id, sep, path = (part.strip() for part in entry.partition("="))
        if not sep or not model_id or not path:
            raise ConfigError(f"models entry {entry!r} must be ID=DIR")
        if any(source.id == model_id for source in sources):
            raise ConfigError(f"model id {model_id!r} is given twice in models")
        sources.append(ModelSource(model_id, path))
    return tuple(sources)


class ModelSet:
    """The served models (see the module docstring). `pipeline(id)` blocks while a model
    loads: call it off the event loop."""

    def __init__(
        self,
        settings: Settings,
        default: SegmentedGenerator,
        *,
        load: Callable[[ModelSource], SegmentedGenerator] | None = None,
    ) -> None:
        if settings.max_loaded_models < 1:
            raise ConfigError(
                f"max_loaded_models must be >= 1 (models), got {settings.max_loaded_models}"
            )
        self.settings = settings
        self.default = SegmentPipeline(default, settings.encoder_options)
        self.default_id = settings.model_id or default.name
        self.sources = {source.id: source for source in parse_models(settings.models)}
        if self.default_id in self.sources:
            raise ConfigError(
                f"model id {self.default_id!r} is the default model's; give the other one "
                "another id"
            )
        self.ids = frozenset({self.default_id, *self.sources})
        # Recognised now (a small file each), so a wrong directory fails at start, not
        # at the first request for it.
        self.backends = {model: _backend_of(source) for model, source in self.sources.items()}
        self._load = load or (lambda source: _load(settings, source))
        self._loaded: OrderedDict[str, SegmentPipeline] = OrderedDict()  # least recent first
        self._cards: dict[str, dict[str, Any]] = {self.default_id: card(default, self.default_id)}
        self._lock = threading.Lock()  # guards `_loaded` and `_loading`
        self._loading: dict[str, threading.Lock] = {}  # one load of a model at a time

    def check(self, model: str | None) -> str:
        """The id a request for `model` (None: the default) runs on; `InvalidParameter`
        (422) naming `model` when it is not served here."""
        if model is None:
            return self.default_id
        if model not in self.ids:
            raise InvalidParameter(
                f"model {model!r} is not served here; choose one of "
                f"{', '.join(sorted(self.ids))} (see /v1/models)",
                param="model",
            )
        return model

    def loaded(self, model: str) -> SegmentPipeline | None:
        """Model `model`'s pipeline if it is resident now, else None (nothing loads)."""
        if model == self.default_id:
            return self.default
        with self._lock:
            return self._loaded.get(model)

    def pipeline(self, model: str | None) -> SegmentPipeline:
        """Model `model`'s pipeline (None: the default), loaded now if it is not resident.
        Raises `InvalidParameter` for a model not served and `ServiceUnavailable` when
        its checkpoint does not load."""
        model = self.check(model)
        if model == self.default_id:
            return self.default
        with self._lock:
            gate = self._loading.setdefault(model, threading.Lock())
        with gate:  # a second request for a loading model waits for that load
            with self._lock:
                pipeline = self._loaded.get(model)
                if pipeline is not None:
                    self._loaded.move_to_end(model)
                    return pipeline
            generator = self._generator(model)
            pipeline = SegmentPipeline(generator, self.settings.encoder_options)
            with self._lock:
                self._loaded[model] = pipeline
                self._cards[model] = card(generator, model)
                dropped = self._over_cap()
        if dropped:
            log.info("unloaded model(s) %s (max_loaded_models %d)", ", ".join(dropped),
                     self.settings.max_loaded_models)  # fmt: skip
            _free_memory()
        return pipeline

    def cards(self) -> list[dict[str, Any]]:
        """What `/v1/models` lists of each model, the default first: a model loaded once is
        described in full (its `describe()`, modes, sizes, fps, frames per window, batching);
        one never loaded by its id and backend only. `loaded` says whether it is resident."""
        out = []
        for model in [self.default_id, *sorted(self.sources)]:
            with self._lock:
                known = self._cards.get(model)
                resident = model == self.default_id or model in self._loaded
            if known is None:
                known = {"id": model, "backend": self.backends[model]}
            out.append({**known, "loaded": resident, "default": model == self.default_id})
        return out

    def _generator(self, model: str) -> SegmentedGenerator:
        source = self.sources[model]
        log.info("loading model %s from %s", model, source.path)
        try:
            return self._load(source)
        except PipelineError as exc:
            raise from_pipeline_error(exc) from exc

    def _over_cap(self) -> list[str]:
        """Drop the least recently used models past `max_loaded_models` (the default
        counts, and stays); the ids dropped."""
        dropped = []
        while len(self._loaded) + 1 > self.settings.max_loaded_models and self._loaded:
            model, _ = self._loaded.popitem(last=False)
            dropped.append(model)
        return dropped


def card(generator: SegmentedGenerator, model: str) -> dict[str, Any]:
    """What `/v1/models` says of a loaded `generator` served as `model`: its `describe()`,
    with what it can do (`modes`), its sizes, fps, frames per window and whether it
    batches windows."""
    info = {**generator.describe(), "id": model}
    defaults = generator.defaults
    # `describe()` gives the size rule (multiple, caps, presets); the card adds the default.
    info["sizes"] = {"default": f"{defaults.width}x{defaults.height}", **info["sizes"]}
    info.setdefault("fps", defaults.fps)
    info.setdefault("frames_per_window", defaults.segment_frames)
    info.setdefault("overlap_frames", defaults.overlap_frames)
    info.setdefault("batching", batches(generator))
    return info


def batches(generator: SegmentedGenerator) -> bool:
    """Whether `generator` denoises windows of its default request together."""
    try:
        request = generator.resolve(GenerationRequest(prompt="batching"))
    except PipelineError:
        return False
    return generator.batch_key(SegmentCursor(request).next_task()) is not None


def _load(settings: Settings, source: ModelSource) -> SegmentedGenerator:
    return load_generator(
        None, source.path, limits=settings.limits, device=settings.device, offload=settings.offload
    )


def _backend_of(source: ModelSource) -> str:
    try:
        return backend_for(source.path)
    except PipelineError as exc:
        raise ConfigError(f"model {source.id!r}: {exc.message}") from exc


def _free_memory() -> None:
    """Give the memory of dropped models back (the GPU's cache too)."""
    gc.collect()
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
