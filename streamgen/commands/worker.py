"""`streamgen worker`: a generation worker for scale-out.

Takes jobs from the Redis queue (priority order, FIFO within a priority), runs them on
this machine's model, publishes their events through Redis and heartbeats while it runs
them. API replicas (`streamgen serve` with `embedded_worker: false`) accept the jobs;
any replica streams them. SIGTERM/SIGINT: stop taking jobs, give running ones
`graceful_timeout_seconds` to finish, then hand them back to the queue.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path
from typing import Any

from prometheus_client import start_http_server

from segment_pipeline import BACKENDS

from ..broker.redis_ops import redact
from ..config import ConfigError, Settings, load_settings
from ..jobs import RedisJobStore
from ..observability import REGISTRY, configure_logging
from ..runtime import check_role, open_runtime
from . import add_model_arguments, model_settings, run_until_signalled

log = logging.getLogger("streamgen.worker")


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "worker",
        help="run a generation worker that takes jobs from Redis",
        description="Take jobs from the Redis queue shared with `streamgen serve` replicas, "
        "generate them on this machine and publish their segments through Redis.",
    )
    p.add_argument("--config", type=Path, help="YAML settings file")
    p.add_argument("--broker", help="Redis URL (redis://host:6379/0); required, here or in config")
    p.add_argument(
        "--backend",
        help=f"one of {', '.join(BACKENDS)} (default: the one the --model-path "
        "checkpoint names in its model_index.json; embedded without a path)",
    )
    p.add_argument("--model-path", help="local model directory (real checkpoints)")
    add_model_arguments(p)
    p.add_argument("--device", help="torch device, e.g. cpu or cuda")
    p.add_argument(
        "--offload",
        choices=("none", "model", "sequential"),
        help="a diffusers checkpoint on a small GPU: keep each model (or layer) on the CPU "
        "until it runs (default none)",
    )
    p.add_argument(
        "--concurrency", type=int, help="jobs run at once (default max_concurrent_jobs, 1)"
    )
    p.add_argument("--worker-id", help="name in logs and job state (default host:pid:random)")
    p.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    p.set_defaults(func=run)


def settings_from(args: argparse.Namespace) -> Settings:
    """Defaults, then --config (or STREAMGEN_CONFIG), then STREAMGEN_*, then the flags."""
    settings = load_settings(args.config or os.environ.get("STREAMGEN_CONFIG"))
    settings = settings.replace(
        broker=args.broker,
        backend=args.backend,
        model_path=args.model_path,
        **model_settings(args),
        device=args.device,
        offload=args.offload,
        max_concurrent_jobs=args.concurrency,
    )
    check_role(settings, "worker")
    if settings.max_concurrent_jobs < 1:
        raise ConfigError(f"--concurrency must be at least 1, got {settings.max_concurrent_jobs}")
    return settings


def run(args: argparse.Namespace) -> int:
    try:
        settings = settings_from(args)
        configure_logging(args.log_level, settings.log_format)
    except (ConfigError, ValueError) as exc:
        print(f"streamgen worker: error: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve_worker(settings, worker_id=args.worker_id))
    except Exception as exc:  # model load or Redis unreachable: say what, not a traceback
        log.debug("worker failed", exc_info=exc)
        print(f"streamgen worker: error: {exc}", file=sys.stderr)
        return 1
    return 0


async def serve_worker(
    settings: Settings, *, worker_id: str | None = None, stop: asyncio.Event | None = None
) -> None:
    """Run a worker until `stop` is set (or SIGINT/SIGTERM when `stop` is None)."""
    stop = stop or run_until_signalled()
    runtime = await open_runtime(settings, role="worker", worker_id=worker_id)
    metrics_server = None
    try:
        if settings.metrics_port:
            metrics_server, _ = start_http_server(settings.metrics_port, registry=REGISTRY)
        store, worker = runtime.store, runtime.worker
        assert isinstance(store, RedisJobStore) and worker is not None
        log.info(
            "worker %s ready: model(s) %s, %d job(s) at a time, taking jobs from %s",
            store.identity,
            ", ".join(sorted(runtime.models.ids)),
            worker.concurrency,
            redact(settings.broker),
        )
        await stop.wait()
        log.info("worker %s stopping", store.identity)
    finally:
        if metrics_server is not None:
            metrics_server.shutdown()
        await runtime.close()
