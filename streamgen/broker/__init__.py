"""Brokers: an ordered event log per job with live fan-out (see `base` for the contract).

`make_broker("memory")` gives the in-process `MemoryBroker`; `make_broker("redis://...")`
gives `RedisBroker` (pub/sub fan-out across replicas plus a backlog in Redis).
"""

from __future__ import annotations

from typing import Any

from streamgen.broker.base import (
    TERMINAL_TYPES,
    BacklogTrimmed,
    Broker,
    BrokerClosed,
    BrokerError,
    BrokerUnavailable,
    Event,
    OutOfOrderEvent,
    SubscriberOverflow,
    Subscription,
)
from streamgen.broker.memory import MemoryBroker
from streamgen.broker.redis import RedisBroker, RedisBrokerStats
from streamgen.broker.redis_ops import SCHEMES as REDIS_SCHEMES

__all__ = [
    "REDIS_SCHEMES",
    "TERMINAL_TYPES",
    "BacklogTrimmed",
    "Broker",
    "BrokerClosed",
    "BrokerError",
    "BrokerUnavailable",
    "Event",
    "MemoryBroker",
    "OutOfOrderEvent",
    "RedisBroker",
    "RedisBrokerStats",
    "SubscriberOverflow",
    "Subscription",
    "make_broker",
]


def make_broker(url: str, **options: Any) -> Broker:
    """The broker named by `url`: ``"memory"`` or a Redis URL (``redis://host:port/db``).

    `options` go to the broker's constructor (e.g. `backlog_ttl_s`, `max_backlog_bytes`).
    Call ``await broker.start()`` before use and ``await broker.close()`` after.
    """
    if url == "memory":
        return MemoryBroker(**options)
    if url.startswith(REDIS_SCHEMES):
        return RedisBroker(url, **options)
    raise ValueError(
        f"url must be 'memory' or a Redis URL starting with one of {REDIS_SCHEMES}, got {url!r}"
    )
