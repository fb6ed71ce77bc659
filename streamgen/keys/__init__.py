"""API keys: who may use the server and how much (see `gate`)."""

from .gate import KeyGate, rate_headers, secret_from
from .model import ApiKey, KeyFormatError, KeyPolicy, digest_of, new_key
from .store import FileKeyStore, KeyStore, RedisKeyStore, default_keys_file
from .usage import MemoryUsage, RedisUsage, Usage, Window

__all__ = [
    "ApiKey",
    "FileKeyStore",
    "KeyFormatError",
    "KeyGate",
    "KeyPolicy",
    "KeyStore",
    "MemoryUsage",
    "RedisKeyStore",
    "RedisUsage",
    "Usage",
    "Window",
    "default_keys_file",
    "digest_of",
    "new_key",
    "rate_headers",
    "secret_from",
]
