"""Readers for the deployment files under `docker/` and what a container would run.

Pure functions over text (Dockerfile, .dockerignore, nginx.conf, durations) and one that
turns a container's command line, environment and mounted files into the `Settings` the
CLI would build, through the real argparse parser and the command's own `settings_from`.
"""

from __future__ import annotations

import argparse
import fnmatch
import importlib
import json
import os
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from unittest.mock import patch
from urllib.parse import urlsplit

import yaml

from streamgen.cli import build_parser
from streamgen.config import ENV_PREFIX, ConfigError, Settings

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
K8S = DOCKER / "k8s"
SETTING_NAMES = frozenset(f.name for f in fields(Settings))


class DeployFileError(AssertionError):
    """A deployment file says something the project cannot run; the message says where."""


# --- Dockerfile -----------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction: keyword (upper case) and its text, ARGs substituted."""

    keyword: str
    text: str


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions of a Dockerfile, continuation lines joined, comments dropped, and
    `${NAME}` / `$NAME` replaced by the default of an earlier `ARG NAME=default`."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # comment lines inside a continued instruction are dropped
        if line.endswith("\\"):
            pending += line[:-1].rstrip() + " "
            continue
        logical.append(pending + line)
        pending = ""
    if pending:
        raise DeployFileError(f"Dockerfile ends inside a continued line: {pending!r}")
    args: dict[str, str] = {}
    out: list[Instruction] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        rest = _substitute(rest.strip(), args)
        if keyword.upper() == "ARG":
            name, _, default = rest.partition("=")
            args[name] = default.strip().strip('"')
        out.append(Instruction(keyword.upper(), rest))
    return out


def _substitute(text: str, args: Mapping[str, str]) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return args.get(name, match.group(0))

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, text)


def exec_form(text: str) -> list[str]:
    """The argv of an exec-form (JSON array) CMD, ENTRYPOINT or HEALTHCHECK CMD."""
    try:
        argv = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DeployFileError(f"not an exec-form JSON array: {text!r}") from exc
    if not (isinstance(argv, list) and all(isinstance(a, str) for a in argv)):
        raise DeployFileError(f"not a list of strings: {text!r}")
    return argv


def env_instructions(instructions: Sequence[Instruction]) -> dict[str, str]:
    """Variables set by `ENV K=V ...` instructions (the legacy `ENV K V` form too)."""
    env: dict[str, str] = {}
    for ins in instructions:
        if ins.keyword != "ENV":
            continue
        words = shlex.split(ins.text)
        if words and "=" not in words[0]:
            env[words[0]] = " ".join(words[1:])
            continue
        for word in words:
            key, _, value = word.partition("=")
            env[key] = value
    return env


def dockerignore_patterns(text: str) -> list[str]:
    """Patterns of a .dockerignore, comments and blanks dropped, leading '/' removed."""
    patterns = []
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            patterns.append(line.lstrip("/").rstrip("/"))
    return patterns


def is_ignored(rel_path: str, patterns: Sequence[str]) -> bool:
    """Whether `rel_path` (relative to the build context) is left out of the context.

    Stricter than Docker's matcher (fnmatch's `*` also crosses `/`), so a path this calls
    kept is kept by Docker too. Exceptions (`!pattern`) are not supported."""
    if any(p.startswith("!") for p in patterns):
        raise DeployFileError("exceptions (!pattern) in .dockerignore are not understood here")
    parts = rel_path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        bare = pattern.removeprefix("**/")
        for prefix in prefixes:
            if fnmatch.fnmatchcase(prefix, pattern):
                return True
            if pattern.startswith("**/") and any(
                fnmatch.fnmatchcase("/".join(prefix.split("/")[i:]), bare)
                for i in range(prefix.count("/") + 1)
            ):
                return True
    return False


# --- nginx ------------------------------------------------------------------------------


def nginx_directives(text: str) -> list[tuple[str, list[str]]]:
    """Every simple directive (`name args;`) of an nginx config with its arguments, in
    order, blocks flattened (`upstream x {` is reported as ('upstream', ['x']))."""
    body = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    out: list[tuple[str, list[str]]] = []
    for token in re.split(r"[;{}]", body):
        words = shlex.split(token)
        if words:
            out.append((words[0], words[1:]))
    return out


def nginx_upstreams(text: str) -> dict[str, list[str]]:
    """`upstream NAME { server HOST:PORT; ... }` blocks: NAME to its server addresses."""
    upstreams: dict[str, list[str]] = {}
    for match in re.finditer(r"upstream\s+(\S+)\s*\{([^}]*)\}", text):
        servers = re.findall(r"^\s*server\s+(\S+?)(?:\s[^;]*)?;", match.group(2), re.M)
        upstreams[match.group(1)] = servers
    return upstreams


def nginx_size_bytes(value: str) -> int:
    """An nginx size (`32m`, `512k`, `1g`, bytes) in bytes."""
    match = re.fullmatch(r"(\d+)([kKmMgG]?)", value)
    if not match:
        raise DeployFileError(f"not an nginx size: {value!r}")
    scale = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[match.group(2).lower()]
    return int(match.group(1)) * scale


def duration_seconds(value: str | int | float) -> float:
    """A compose or nginx duration (`60s`, `1m30s`, `1h`, `500ms`, or a number of
    seconds) in seconds."""
    if isinstance(value, int | float):
        return float(value)
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", value)
    if not parts or "".join(n + u for n, u in parts) != value:
        if re.fullmatch(r"\d+(?:\.\d+)?", value):
            return float(value)
        raise DeployFileError(f"not a duration: {value!r}")
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    return sum(float(n) * scale[u] for n, u in parts)


# --- what a container runs ----------------------------------------------------------------


def parse_command(argv: Sequence[str], where: str) -> argparse.Namespace:
    """`streamgen ARGV...` through the real CLI parser; a bad flag names `where`."""
    try:
        return build_parser().parse_args(list(argv))
    except SystemExit as exc:
        raise DeployFileError(f"{where}: `streamgen {shlex.join(argv)}` does not parse") from exc


def effective_settings(
    argv: Sequence[str],
    env: Mapping[str, str],
    files: Mapping[str, str],
    scratch: Path,
    where: str,
) -> tuple[argparse.Namespace, Settings]:
    """The parsed command and the settings `streamgen ARGV` would run with, built by the
    command's own `settings_from(args)`: defaults, the `--config` (or STREAMGEN_CONFIG)
    file taken from `files` (container path to text), the STREAMGEN_* variables of `env`
    (in place of this process's for the call), then the flags."""
    args = parse_command(argv, where)
    command = importlib.import_module(f"streamgen.commands.{args.command}")
    variables = {k: v for k, v in env.items() if k.startswith(ENV_PREFIX)}
    config = getattr(args, "config", None) or variables.pop(ENV_PREFIX + "CONFIG", None)
    if config is not None:
        if str(config) not in files:
            raise DeployFileError(f"{where}: config {str(config)!r} is not mounted there")
        local = scratch / "settings.yaml"
        local.write_text(files[str(config)])
        args.config = local
    with patch.dict(os.environ):
        for key in [k for k in os.environ if k.startswith(ENV_PREFIX)]:
            del os.environ[key]
        os.environ.update(variables)
        try:
            settings = command.settings_from(args)
        except ConfigError as exc:
            raise DeployFileError(f"{where}: {exc}") from exc
    return args, settings


@dataclass(frozen=True)
class RedisAddress:
    """Where a `redis://host:port/db` broker URL points."""

    host: str
    port: int


def redis_address(url: str, where: str) -> RedisAddress:
    """The host and port of a Redis broker URL (the port defaults to 6379)."""
    parts = urlsplit(url)
    if parts.scheme not in {"redis", "rediss"} or not parts.hostname:
        raise DeployFileError(f"{where}: broker {url!r} is not a redis://host:port/db URL")
    return RedisAddress(parts.hostname, parts.port or 6379)


def load_yaml_documents(path: Path) -> list[dict]:
    """Every document of a YAML file (empty ones dropped); each must be a mapping."""
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    for doc in docs:
        if not isinstance(doc, dict):
            raise DeployFileError(f"{path}: a document is not a mapping: {doc!r}")
    return docs


def redis_server_port(argv: Sequence[str]) -> int:
    """The port a `redis-server [--port N] ...` command line listens on."""
    words = list(argv)
    if "--port" in words:
        return int(words[words.index("--port") + 1])
    return 6379
