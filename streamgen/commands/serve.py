"""`streamgen serve`: the streaming server (Quart on Hypercorn)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path
from typing import Any

from segment_pipeline import BACKENDS

from ..config import ConfigError, Settings, load_settings
from ..observability import configure_logging
from . import add_model_arguments, model_settings, run_until_signalled


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "serve",
        help="run the streaming server",
        description="Serve /generate-stream (SSE), /generate-stream-chunked (NDJSON), /ws, "
        "/v1/jobs, /v1/videos and the browser player over HTTP/1.1, h2c and WebSocket "
        "(HTTP/2 over TLS with --certfile/--keyfile).",
    )
    p.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to listen on (default 8000)")
    p.add_argument("--config", type=Path, help="YAML settings file")
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
    p.add_argument("--broker", help="'memory' (one process) or a Redis URL (redis://host:6379/0)")
    p.add_argument(
        "--embedded-worker",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run jobs in this process (default) or, with --no-embedded-worker, leave them to "
        "`streamgen worker` processes on the Redis queue (an API-only replica)",
    )
    p.add_argument(
        "--data-dir",
        help="keep job records and videos here across restarts (memory broker), and API "
        "keys in its keys.json",
    )
    p.add_argument("--certfile", help="TLS certificate (PEM) for HTTP/2 over TLS")
    p.add_argument("--keyfile", help="TLS private key (PEM)")
    p.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    p.set_defaults(func=run)


def settings_from(args: argparse.Namespace) -> Settings:
    """Defaults, then --config (or STREAMGEN_CONFIG), then STREAMGEN_*, then the flags."""
    settings = load_settings(args.config or os.environ.get("STREAMGEN_CONFIG"))
    if (args.certfile is None) != (args.keyfile is None):
        raise ConfigError("give both --certfile and --keyfile, or neither")
    settings = settings.replace(
        host=args.host,
        port=args.port,
        backend=args.backend,
        model_path=args.model_path,
        **model_settings(args),
        device=args.device,
        offload=args.offload,
        broker=args.broker,
        embedded_worker=args.embedded_worker,
        certfile=args.certfile,
        keyfile=args.keyfile,
        data_dir=args.data_dir,
    )
    return settings


def run(args: argparse.Namespace) -> int:
    try:
        settings = settings_from(args)
        configure_logging(args.log_level, settings.log_format)
    except (ConfigError, ValueError) as exc:
        print(f"streamgen serve: error: {exc}", file=sys.stderr)
        return 2
    from ..app import create_app
    from ..http_server import serve

    async def main() -> None:
        await serve(create_app(settings), settings, run_until_signalled())

    try:
        asyncio.run(main())
    except Exception as exc:  # model load or bind failure: say what, not a traceback
        logging.getLogger("streamgen").debug("serve failed", exc_info=exc)
        print(f"streamgen serve: error: {exc}", file=sys.stderr)
        return 1
    return 0
