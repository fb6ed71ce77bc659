"""An API key: a public id, the hash of its secret, a name, and the policy it is held to.

A secret reads ``sgk_<id>_<random>``; only its SHA-256 is stored (the random part carries
256 bits, so a plain hash cannot be searched back). The id is what lists, logs and job
records show; the secret is printed once, by `streamgen keys create`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
import time
from dataclasses import dataclass, field, fields
from typing import Any

SECRET_PREFIX = "sgk_"


class KeyFormatError(ValueError):
    """A stored key record or a policy value is not what it must be; the message names it."""


@dataclass(frozen=True)
class KeyPolicy:
    """What requests made with one key may do. A 0 cap means "no cap"."""

    max_concurrent_jobs: int = 4  # this key's jobs queued or running at once
    max_seconds: float = 60.0  # video seconds one bounded request may ask for
    unbounded: bool = False  # whether it may ask for unbounded streams
    daily_seconds: float = 3600.0  # video seconds a UTC day, over all its jobs
    max_priority: int = 0  # the highest `priority` a request may set
    requests_per_minute: int = 600  # every request with the key counts

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> KeyPolicy:
        """A policy from `values` (missing fields take their defaults); `KeyFormatError`
        for an unknown field or a value of the wrong type or sign."""
        known = {f.name: f for f in fields(cls)}
        for name, value in values.items():
            if name not in known:
                raise KeyFormatError(f"unknown policy field {name!r}")
            kind = known[name].type
            if kind == "bool":
                ok = isinstance(value, bool)
            elif kind == "int":
                ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
            else:
                ok = isinstance(value, int | float) and not isinstance(value, bool) and value >= 0
            if not ok:
                raise KeyFormatError(f"policy field {name!r} must be a {kind} >= 0, got {value!r}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class ApiKey:
    """One stored key (never its secret)."""

    id: str
    name: str
    digest: str  # SHA-256 of the secret, hex
    policy: KeyPolicy = field(default_factory=KeyPolicy)
    created_at: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "digest": self.digest,
            "policy": self.policy.to_dict(),
            "created_at": self.created_at,
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ApiKey:
        try:
            return cls(
                id=str(values["id"]),
                name=str(values.get("name") or ""),
                digest=str(values["digest"]),
                policy=KeyPolicy.from_dict(dict(values.get("policy") or {})),
                created_at=float(values.get("created_at") or 0.0),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise KeyFormatError(f"a stored key record is malformed: {exc!r}") from exc


def digest_of(secret: str) -> str:
    """The stored form of `secret`."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def new_key(name: str, policy: KeyPolicy) -> tuple[ApiKey, str]:
    """A fresh key and its secret (shown once; only its digest is kept)."""
    key_id = "key_" + secrets.token_hex(6)
    secret = f"{SECRET_PREFIX}{key_id[4:]}_{secrets.token_urlsafe(32)}"
    return ApiKey(id=key_id, name=name, digest=digest_of(secret), policy=policy), secret
