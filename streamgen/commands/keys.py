"""`streamgen keys create|list|revoke`: manage API keys where the server reads them (Redis
with a Redis broker, else the key file; see `streamgen.keys`).

    streamgen keys create --name ci --max-seconds 30 --daily-seconds 600
    streamgen keys list
    streamgen keys revoke key_0123456789ab
    streamgen keys open --yes            # delete every key: anyone may use the server again

`create` prints the secret once; only its hash is stored. `--json` prints machine-readable
output. The first key created turns open mode off: from then on every request needs a key,
also once every key is revoked (then nobody gets in), until `open`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from ..config import ConfigError, Settings, load_settings
from ..keys import KeyFormatError, KeyGate, KeyPolicy, new_key

_POLICY_FLAGS = {
    "max_concurrent_jobs": ("--max-concurrent-jobs", int, "jobs queued or running at once"),
    "max_seconds": ("--max-seconds", float, "video seconds one bounded request may ask for"),
    "daily_seconds": ("--daily-seconds", float, "video seconds a UTC day"),
    "max_priority": ("--max-priority", int, "the highest priority a request may set"),
    "requests_per_minute": ("--requests-per-minute", int, "requests a minute"),
}


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "keys",
        help="create, list or revoke API keys",
        description="Manage the API keys the server requires once one exists.",
    )
    p.add_argument("--config", type=Path, help="YAML settings file (as the server's)")
    p.add_argument("--broker", help="Redis URL: keys shared by every replica")
    p.add_argument("--keys-file", help="key file without Redis (default: data dir or XDG)")
    p.add_argument("--data-dir", help="the server's data directory (holds keys.json)")
    p.add_argument("--json", action="store_true", help="print JSON")
    actions = p.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="create a key and print its secret once")
    create.add_argument("--name", default="", help="what the key is for")
    defaults = KeyPolicy()
    for name, (flag, kind, what) in _POLICY_FLAGS.items():
        default = getattr(defaults, name)
        create.add_argument(flag, type=kind, help=f"{what}; 0: no cap (default {default})")
    create.add_argument(
        "--unbounded", action="store_true", help="allow unbounded streams (default: not)"
    )
    actions.add_parser("list", help="list keys (ids, names, policies; never secrets)")
    revoke = actions.add_parser("revoke", help="delete a key: its requests get 401 at once")
    revoke.add_argument("key_id", help="the key's id (key_...)")
    opened = actions.add_parser("open", help="delete every key: the server is open to anyone")
    opened.add_argument("--yes", action="store_true", help="yes, open it (required)")
    p.set_defaults(func=run)


def settings_from(args: argparse.Namespace) -> Settings:
    settings = load_settings(args.config or os.environ.get("STREAMGEN_CONFIG"))
    return settings.replace(broker=args.broker, keys_file=args.keys_file, data_dir=args.data_dir)


def run(args: argparse.Namespace) -> int:
    try:
        settings = settings_from(args)
        return asyncio.run(_run(args, KeyGate.for_settings(settings)))
    except (ConfigError, KeyFormatError, ValueError) as exc:
        print(f"streamgen keys: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # Redis unreachable, a file that cannot be written
        print(f"streamgen keys: error: {exc}", file=sys.stderr)
        return 1


async def _run(args: argparse.Namespace, gate: KeyGate) -> int:
    try:
        if args.action == "create":
            return await _create(args, gate)
        if args.action == "list":
            return await _list(args, gate)
        if args.action == "open":
            return await _open(args, gate)
        return await _revoke(args, gate)
    finally:
        await gate.close()


async def _create(args: argparse.Namespace, gate: KeyGate) -> int:
    values: dict[str, Any] = {
        name: getattr(args, name) for name in _POLICY_FLAGS if getattr(args, name) is not None
    }
    values["unbounded"] = bool(args.unbounded)
    policy = KeyPolicy.from_dict(values)
    key, secret = new_key(args.name, policy)
    await gate.store.add(key)
    if args.json:
        print(json.dumps({"id": key.id, "secret": secret, "name": key.name,
                          "policy": policy.to_dict()}))  # fmt: skip
    else:
        print(f"created {key.id} in {gate.store.describe()}")
        print(f"secret (shown once; send it as `Authorization: Bearer ...`): {secret}")
    return 0


async def _list(args: argparse.Namespace, gate: KeyGate) -> int:
    keys = await gate.store.keys()
    if args.json:
        print(json.dumps([{k: v for k, v in key.to_dict().items() if k != "digest"}
                          for key in keys]))  # fmt: skip
        return 0
    if not keys:
        print(f"no keys in {gate.store.describe()}: the server is open to anyone")
        return 0
    for key in keys:
        created = time.strftime("%Y-%m-%d %H:%M", time.gmtime(key.created_at))
        policy = " ".join(f"{k}={v}" for k, v in key.policy.to_dict().items())
        print(f"{key.id}  {created} UTC  {key.name or '-'}  {policy}")
    return 0


async def _revoke(args: argparse.Namespace, gate: KeyGate) -> int:
    if not await gate.store.revoke(args.key_id):
        print(f"streamgen keys: error: no key {args.key_id!r} in {gate.store.describe()}",
              file=sys.stderr)  # fmt: skip
        return 1
    if args.json:
        print(json.dumps({"revoked": args.key_id}))
    else:
        print(f"revoked {args.key_id}")
    return 0


async def _open(args: argparse.Namespace, gate: KeyGate) -> int:
    if not args.yes:
        print("streamgen keys: error: `open` deletes every key and lets anyone use the server; "
              "add --yes to do it", file=sys.stderr)  # fmt: skip
        return 2
    count = await gate.store.open_up()
    if args.json:
        print(json.dumps({"deleted": count, "open": True}))
    else:
        print(f"deleted {count} key(s) from {gate.store.describe()}: the server is OPEN to anyone")
    return 0
