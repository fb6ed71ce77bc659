"""Where API keys are kept: in Redis when the service runs on a Redis broker (every replica
sees a key the moment it is created or revoked), else in a JSON file.

Both are read on every authenticated request: the file only when it changed on disk (its
modification time and size), Redis in one round trip (the key and whether any key exists).
"""

from __future__ import annotations

import asyncio
import json
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from ..broker.redis_ops import connect, redact, retrying
from .model import ApiKey, KeyFormatError

OP_TIMEOUT_S = 5.0


class KeyStore(ABC):
    """The stored keys (by the digest of their secret)."""

    @abstractmethod
    async def lookup(self, digest: str) -> tuple[ApiKey | None, bool]:
        """(the key whose secret has `digest`, whether any key exists at all)."""

    @abstractmethod
    async def keys(self) -> list[ApiKey]:
        """Every key, oldest first."""

    @abstractmethod
    async def add(self, key: ApiKey) -> None: ...

    @abstractmethod
    async def revoke(self, key_id: str) -> bool:
        """Delete the key `key_id`; False when there is none."""

    async def close(self) -> None:  # noqa: B027 (optional)
        """Release connections."""

    @abstractmethod
    def describe(self) -> str:
        """Where the keys are, for messages (no password)."""


class FileKeyStore(KeyStore):
    """Keys in a JSON file (``{"keys": [...]}``), written whole to a temporary file and
    renamed over it, readable by its owner only."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: tuple[int, int] | None = None
        self._by_digest: dict[str, ApiKey] = {}
        self._lock = asyncio.Lock()

    def describe(self) -> str:
        return f"file {self.path}"

    def _read(self) -> list[ApiKey]:
        try:
            raw = self.path.read_text()
        except FileNotFoundError:
            return []
        try:
            records = json.loads(raw).get("keys", [])
        except (ValueError, AttributeError) as exc:
            raise KeyFormatError(f"the key file {self.path} is not valid JSON: {exc}") from exc
        return [ApiKey.from_dict(record) for record in records]

    def _current(self) -> dict[str, ApiKey]:
        try:
            stat = self.path.stat()
            seen = (stat.st_mtime_ns, stat.st_size)
        except FileNotFoundError:
            seen = (0, 0)
        if seen != self._seen:
            self._by_digest = {key.digest: key for key in self._read()}
            self._seen = seen
        return self._by_digest

    def _write(self, keys: list[ApiKey]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        body = json.dumps({"keys": [key.to_dict() for key in keys]}, indent=2)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(body + "\n")
        os.replace(temporary, self.path)

    async def lookup(self, digest: str) -> tuple[ApiKey | None, bool]:
        keys = self._current()
        return keys.get(digest), bool(keys)

    async def keys(self) -> list[ApiKey]:
        return sorted(self._read(), key=lambda key: key.created_at)

    async def add(self, key: ApiKey) -> None:
        async with self._lock:
            self._write([*self._read(), key])

    async def revoke(self, key_id: str) -> bool:
        async with self._lock:
            keys = self._read()
            kept = [key for key in keys if key.id != key_id]
            if len(kept) == len(keys):
                return False
            self._write(kept)
            return True


class RedisKeyStore(KeyStore):
    """Keys in one Redis hash, ``{prefix}:apikeys``: digest -> JSON record."""

    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        self.hash = f"{prefix}:apikeys"
        self._redis: Redis = connect(url)
        self._closed = False

    def describe(self) -> str:
        return f"Redis at {redact(self.url)} ({self.hash})"

    async def _call(self, what: str, call: Any) -> Any:
        return await retrying(
            what,
            lambda _: call(),
            where=f"Redis at {redact(self.url)}",
            timeout_s=OP_TIMEOUT_S,
            closed=lambda: self._closed,
        )

    async def lookup(self, digest: str) -> tuple[ApiKey | None, bool]:
        async def both() -> list[Any]:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.hget(self.hash, digest)
                pipe.exists(self.hash)
                return list(await pipe.execute())

        record, exists = await self._call("look up an API key", both)
        return (None if record is None else ApiKey.from_dict(json.loads(record))), bool(exists)

    async def keys(self) -> list[ApiKey]:
        records = await self._call("list API keys", lambda: self._redis.hvals(self.hash))
        keys = [ApiKey.from_dict(json.loads(record)) for record in records]
        return sorted(keys, key=lambda key: key.created_at)

    async def add(self, key: ApiKey) -> None:
        record = json.dumps(key.to_dict())
        await self._call(
            "store an API key", lambda: self._redis.hset(self.hash, key.digest, record)
        )

    async def revoke(self, key_id: str) -> bool:
        digests = [key.digest for key in await self.keys() if key.id == key_id]
        if not digests:
            return False
        removed = await self._call(
            "revoke an API key", lambda: self._redis.hdel(self.hash, *digests)
        )
        return bool(removed)

    async def close(self) -> None:
        self._closed = True
        await self._redis.aclose()


def default_keys_file(data_dir: str | None) -> Path:
    """Where keys live without Redis when `keys_file` is not set: in the data directory,
    else under ``$XDG_DATA_HOME`` (``~/.local/share``)."""
    if data_dir:
        return Path(data_dir) / "keys.json"
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "streamgen" / "keys.json"
