"""The `streamgen` command: one subcommand per module in `streamgen.commands`."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from . import __version__

# Each module has `add_parser(subparsers)` that registers its subcommand and sets `func`.
COMMANDS = ["generate", "keys", "serve", "worker"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamgen", description="Stream AI-generated video while it is being generated."
    )
    parser.add_argument("--version", action="version", version=f"streamgen {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"streamgen.commands.{name}").add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
