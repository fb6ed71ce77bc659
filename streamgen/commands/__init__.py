"""The subcommands of `streamgen` (one module each, registered by `streamgen.cli`)."""

from __future__ import annotations

import asyncio
import signal


def run_until_signalled() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM (call on the running loop): a command runs until
    it is set, then shuts down gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    return stop
