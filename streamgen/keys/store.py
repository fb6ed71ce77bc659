"""Where API keys are kept: in Redis when the service runs on a Redis broker (every replica
sees a key the moment it is created or revoked), else in a JSON file.

Both are read on every authenticated request: the file only when it changed on disk (its
inode, modification time and size), Redis in one round trip (the key, and whether keys are
required).

Keys are required from the first `add` on, until `open_up`: revoking the last key leaves a
server that refuses everyone, not an open one (the file, or a marker in Redis, stays).
"""

from __future__ import annotations

import fcntl
import json
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..broker.redis_ops import RetryingRedis, redact
from .model import ApiKey, KeyFormatError

OP_TIMEOUT_S = 5.0


class KeyStore(ABC):
    """The stored keys (by the digest of their secret)."""

    @abstractmethod
    async def lookup(self, digest: str) -> tuple[ApiKey | None, bool]:
        """(the key whose secret has `digest`, whether keys are required)."""

    @abstractmethod
    async def keys(self) -> list[ApiKey]:
        """Every key, oldest first."""

    @abstractmethod
    async def add(self, key: ApiKey) -> None: ...

    @abstractmethod
    async def revoke(self, key_id: str) -> bool:
        """Delete the key `key_id`; False when there is none."""

    @abstractmethod
    async def open_up(self) -> int:
        """Delete every key and stop requiring keys (open mode); the keys deleted."""

    async def close(self) -> None:  # noqa: B027 (optional)
        """Release connections."""

    @abstractmethod
    def describe(self) -> str:
        """Where the keys are, for messages (no password)."""


class FileKeyStore(KeyStore):
    """Keys in a JSON file (``{"keys": [...]}``), written whole to a temporary file and
    renamed over it, readable by its owner only; writers (the CLI, several at once) take
    an exclusive lock on ``<file>.lock`` first. Keys are required while the file exists."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: tuple[int, int, int] | None = None
        self._by_digest: dict[str, ApiKey] = {}
        self._exists = False

    def describe(self) -> str:
        return f"file {self.path}"

    def _read(self) -> list[ApiKey] | None:
        """The keys, or None when there is no file."""
        try:
            raw = self.path.read_text()
        except FileNotFoundError:
            return None
        try:
            records = json.loads(raw).get("keys", [])
        except (ValueError, AttributeError) as exc:
            raise KeyFormatError(f"the key file {self.path} is not valid JSON: {exc}") from exc
        return [ApiKey.from_dict(record) for record in records]

    def _current(self) -> dict[str, ApiKey]:
        try:
            stat = self.path.stat()
            seen = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        except FileNotFoundError:
            seen = (0, 0, 0)
        if seen != self._seen:
            keys = self._read()
            self._exists = keys is not None
            self._by_digest = {key.digest: key for key in keys or []}
            self._seen = seen
        return self._by_digest

    def _write(self, keys: list[ApiKey]) -> None:
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        body = json.dumps({"keys": [key.to_dict() for key in keys]}, indent=2)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(body + "\n")
        os.replace(temporary, self.path)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    async def lookup(self, digest: str) -> tuple[ApiKey | None, bool]:
        keys = self._current()
        return keys.get(digest), self._exists

    async def keys(self) -> list[ApiKey]:
        return sorted(self._read() or [], key=lambda key: key.created_at)

    async def add(self, key: ApiKey) -> None:
        with self._locked():
            self._write([*(self._read() or []), key])

    async def revoke(self, key_id: str) -> bool:
        with self._locked():
            keys = self._read() or []
            kept = [key for key in keys if key.id != key_id]
            if len(kept) == len(keys):
                return False
            self._write(kept)
            return True

    async def open_up(self) -> int:
        with self._locked():
            count = len(self._read() or [])
            self.path.unlink(missing_ok=True)
            return count


class RedisKeyStore(KeyStore):
    """Keys in one Redis hash, ``{prefix}:apikeys``: digest -> JSON record; keys are
    required while ``{prefix}:apikeys:required`` exists."""

    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        self.hash = f"{prefix}:apikeys"
        self.required = f"{prefix}:apikeys:required"
        self._redis = RetryingRedis(url, OP_TIMEOUT_S)

    def describe(self) -> str:
        return f"Redis at {redact(self.url)} ({self.hash})"

    async def lookup(self, digest: str) -> tuple[ApiKey | None, bool]:
        async def both() -> list[Any]:
            async with self._redis.client.pipeline(transaction=False) as pipe:
                pipe.hget(self.hash, digest)
                pipe.exists(self.required)
                return list(await pipe.execute())

        record, exists = await self._redis.call("look up an API key", both)
        return (None if record is None else ApiKey.from_dict(json.loads(record))), bool(exists)

    async def keys(self) -> list[ApiKey]:
        records = await self._redis.call(
            "list API keys", lambda: self._redis.client.hvals(self.hash)
        )
        keys = [ApiKey.from_dict(json.loads(record)) for record in records]
        return sorted(keys, key=lambda key: key.created_at)

    async def add(self, key: ApiKey) -> None:
        record = json.dumps(key.to_dict())

        async def both() -> None:
            async with self._redis.client.pipeline(transaction=True) as pipe:
                pipe.hset(self.hash, key.digest, record)
                pipe.set(self.required, "1")
                await pipe.execute()

        await self._redis.call("store an API key", both)

    async def revoke(self, key_id: str) -> bool:
        digests = [key.digest for key in await self.keys() if key.id == key_id]
        if not digests:
            return False
        removed = await self._redis.call(
            "revoke an API key", lambda: self._redis.client.hdel(self.hash, *digests)
        )
        return bool(removed)

    async def open_up(self) -> int:
        count = len(await self.keys())
        await self._redis.call(
            "open the server", lambda: self._redis.client.delete(self.hash, self.required)
        )
        return count

    async def close(self) -> None:
        await self._redis.aclose()


def default_keys_file(data_dir: str | None) -> Path:
    """Where keys live without Redis when `keys_file` is not set: in the data directory,
    else under ``$XDG_DATA_HOME`` (``~/.local/share``)."""
    if data_dir:
        return Path(data_dir) / "keys.json"
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "streamgen" / "keys.json"
