"""The subcommands of `streamgen` (one module each, registered by `streamgen.cli`)."""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Any


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of the models a server or worker serves besides `--model-path`."""
    p.add_argument(
        "--model",
        action="append",
        metavar="ID=DIR",
        help="also serve the checkpoint in DIR as model ID (repeatable; requests choose with "
        "`model`; loaded on first use)",
    )
    p.add_argument("--model-id", help="the default model's id (default: its name)")
    p.add_argument("--max-loaded-models", type=int, help="models resident at once (default 2)")


def model_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The settings `add_model_arguments`' flags give (None: not given)."""
    return {
        "models": ",".join(args.model) if args.model else None,
        "model_id": args.model_id,
        "max_loaded_models": args.max_loaded_models,
    }


def run_until_signalled() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM (call on the running loop): a command runs until
    it is set, then shuts down gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    return stop
