"""One typed settings object: defaults, then a YAML file, then `STREAMGEN_*` environment
variables (``STREAMGEN_MAX_WIDTH=512``). Unknown keys are errors that name the key.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from segment_pipeline import EncoderOptions, Limits, MediaLimits

ENV_PREFIX = "STREAMGEN_"
MiB = 1024 * 1024


class ConfigError(ValueError):
    """A settings file or variable is wrong; the message names the key."""


@dataclass(frozen=True)
class Settings:
    """Everything the service and CLI can be configured with (units in the names)."""

    # Model
    backend: str | None = None  # None: the one model_path's checkpoint names (embedded without)
    model_path: str | None = None
    model_id: str | None = None  # the default model's id (None: its own name)
    models: str = ""  # more models to serve, "ID=DIR,ID=DIR" (`--model ID=DIR`, repeatable)
    max_loaded_models: int = 2  # models resident at once, the default one included
    device: str = "cpu"
    offload: str = "none"  # diffusers checkpoints on a GPU: none | model | sequential
    torch_threads: int = 0  # 0: torch's own choice
    # Request caps (defaults: segment_pipeline's `Limits`, the one place they are set)
    max_width: int = Limits.max_width
    max_height: int = Limits.max_height
    max_pixels: int = Limits.max_pixels  # width * height of a frame made
    max_frames: int = Limits.max_frames
    max_fps: float = Limits.max_fps
    max_inference_steps: int = Limits.max_inference_steps
    max_prompt_chars: int = Limits.max_prompt_chars
    # A request's pictures, checked by their headers before decoding (`MediaLimits`)
    max_input_pixels: int = MediaLimits.max_pixels  # of an image, or of one video frame
    max_input_frames: int = MediaLimits.max_frames  # of a video to extend
    # Encoder (defaults: `EncoderOptions`)
    encoder_preset: str = EncoderOptions.preset
    encoder_crf: int = EncoderOptions.crf
    encoder_threads: int = EncoderOptions.threads
    # Server
    host: str = "127.0.0.1"
    port: int = 8000
    broker: str = "memory"
    embedded_worker: bool = True
    max_queued_jobs: int = 64
    # Scheduling (each worker): jobs run side by side, window by window, in batches
    max_concurrent_jobs: int = 8  # jobs one worker holds at once (live streams + offline)
    max_live_streams: int = 4  # live streams one worker admits at once
    max_batch_size: int = 4  # windows denoised in one forward pass
    startup_buffer_seconds: float = 1.0  # a live segment is due this long before it plays
    live_lead_seconds: float = 2.0  # a live stream this far ahead yields to offline work
    live_max_ahead_seconds: float = 10.0  # ...and this far ahead waits (room for joiners)
    live_utilization: float = 1.0  # share of a worker's time its live streams may need
    max_unbounded_seconds: float = 3600.0  # an unbounded job completes after this much video
    max_job_seconds: float = 6 * 3600.0  # a job running this long (wall time) fails; 0: never
    calibrate_at_start: bool = True  # measure batch sizes 1 and max before taking jobs
    calibrate_when_idle: bool = True  # ...and the sizes between while idle
    max_body_bytes: int = 32 * MiB
    cors_allowed_origins: str = ""  # origins (comma-separated; "*": any) whose pages may call
    subscriber_buffer_events: int = 256
    sse_heartbeat_seconds: float = 15.0
    sse_retry_ms: int = 2000
    backlog_ttl_seconds: float = 3600.0
    max_backlog_bytes: int = 256 * MiB
    graceful_timeout_seconds: float = 10.0
    write_timeout_seconds: float = 30.0  # a client that reads nothing this long is cut off
    send_buffer_bytes: int = 128 * 1024  # unsent bytes a connection may hold (0: the kernel's)
    resume_grace_seconds: float = 10.0  # a cut-off request-scoped stream may resume this long
    max_finished_jobs: int = 1000  # finished jobs (and their MP4 files) kept for queries
    max_jobs_dir_bytes: int = 20 * 1024 * MiB  # ...and at most this much of their files
    jobs_dir: str | None = None  # where job MP4s are written; a temporary directory if None
    data_dir: str | None = None  # job records and videos kept across restarts (memory broker)
    keys_file: str | None = None  # API keys without Redis; default data_dir/keys.json or XDG
    static_dir: str | None = None  # the browser player; the repository's static/ if None
    certfile: str | None = None  # TLS (HTTP/2 over TLS) when both are given
    keyfile: str | None = None
    # Workers (scale-out)
    worker_heartbeat_seconds: float = 2.0
    worker_dead_after_seconds: float = 10.0
    worker_retry_failed_jobs: bool = False
    redis_key_prefix: str = "streamgen"  # namespace of every key and channel in Redis
    # Observability
    log_format: str = "text"  # "text" or "json" (one JSON object a line)
    metrics_port: int = 0  # `streamgen worker`: serve /metrics on this port (0: none)

    @property
    def limits(self) -> Limits:
        return Limits(
            max_width=self.max_width,
            max_height=self.max_height,
            max_pixels=self.max_pixels,
            max_frames=self.max_frames,
            max_fps=self.max_fps,
            max_inference_steps=self.max_inference_steps,
            max_prompt_chars=self.max_prompt_chars,
        )

    @property
    def media_limits(self) -> MediaLimits:
        return MediaLimits(
            max_pixels=self.max_input_pixels,
            max_frames=self.max_input_frames,
            max_bytes=self.max_body_bytes,
        )

    @property
    def videos_dir(self) -> str | None:
        """Where job MP4s go: `jobs_dir`, else the data directory's ``jobs/`` (None: a
        temporary directory)."""
        if self.jobs_dir:
            return self.jobs_dir
        return str(Path(self.data_dir) / "jobs") if self.data_dir else None

    @property
    def encoder_options(self) -> EncoderOptions:
        return EncoderOptions(
            preset=self.encoder_preset, crf=self.encoder_crf, threads=self.encoder_threads
        )

    def replace(self, **changes: Any) -> Settings:
        """A copy with `changes` applied (None values are ignored), checked like a file."""
        return _build({**dataclasses.asdict(self), **_drop_none(changes)}, source="arguments")


def load_settings(
    path: str | Path | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Defaults, then the YAML file at `path` (if any), then `STREAMGEN_*` variables."""
    values: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read config {str(path)!r}: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"config {str(path)!r} must be a mapping of settings")
        values.update(loaded)
        _build(values, source=str(path))
    environ = os.environ if environ is None else environ
    known = {f.name: f for f in fields(Settings)}
    for key, raw in environ.items():
        if not key.startswith(ENV_PREFIX) or key == ENV_PREFIX + "CONFIG":
            continue
        name = key[len(ENV_PREFIX) :].lower()
        if name not in known:
            raise ConfigError(f"unknown setting {key}")
        values[name] = _coerce(raw, known[name].type, key)
    return _build(values, source="environment")


def _build(values: Mapping[str, Any], source: str) -> Settings:
    known = {f.name for f in fields(Settings)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown setting {unknown[0]!r} in {source}")
    settings = Settings(**values)
    for field in fields(Settings):
        value = getattr(settings, field.name)
        expected = field.type if isinstance(field.type, str) else field.type.__name__
        if not _matches(value, expected):
            raise ConfigError(
                f"setting {field.name!r} in {source} must be {expected}, got {value!r}"
            )
    return settings


def _matches(value: Any, expected: str) -> bool:
    if expected == "str | None":
        return value is None or isinstance(value, str)
    if expected == "bool":
        return isinstance(value, bool)
    if expected == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if expected == "float":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, str)


def _coerce(raw: str, expected: Any, key: str) -> Any:
    kind = expected if isinstance(expected, str) else expected.__name__
    try:
        if kind == "bool":
            lowered = raw.strip().lower()
            if lowered not in {"1", "0", "true", "false", "yes", "no"}:
                raise ValueError(raw)
            return lowered in {"1", "true", "yes"}
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
    except ValueError as exc:
        raise ConfigError(f"{key}={raw!r} is not a valid {kind}") from exc
    if kind == "str | None":
        return raw or None
    return raw


def _drop_none(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}
