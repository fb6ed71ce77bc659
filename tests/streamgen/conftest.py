"""Fixtures of the service's tests: the JSON lines of the access log."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from streamgen.observability import ContextFilter, JsonFormatter


class Lines(logging.Handler):
    """The JSON lines a logger writes, formatted as they are emitted."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[dict] = []
        self.addFilter(ContextFilter())
        self.setFormatter(JsonFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


@pytest.fixture
def access_lines() -> Iterator[Lines]:
    handler, logger = Lines(), logging.getLogger("streamgen.access")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
