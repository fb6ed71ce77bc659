"""Background tasks that belong to an owner (a store, the manager): kept referenced until
they end (asyncio holds only weak references to tasks), their failures logged, and
waited for or cancelled when the owner closes. And `woken`, how an owner's loop waits for
a signal or a period, whichever comes first."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Iterator
from typing import Any


class TaskSet:
    """The owner's running background tasks. A task that fails with an exception of a
    type in `quiet` is not logged (an expected outcome, e.g. a job that finished meanwhile).
    """

    def __init__(
        self, log: logging.Logger, what: str, quiet: tuple[type[BaseException], ...] = ()
    ) -> None:
        self._log = log
        self._what = what
        self._quiet = quiet
        self._tasks: set[asyncio.Future[Any]] = set()

    def spawn(self, coro: Awaitable[Any]) -> None:
        """Run `coro` in the background, on the running loop."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(self._report)

    def __iter__(self) -> Iterator[asyncio.Future[Any]]:
        return iter(list(self._tasks))

    def __len__(self) -> int:
        return len(self._tasks)

    async def wait(self, timeout_s: float) -> None:
        """Wait up to `timeout_s` seconds for the tasks running now to end."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout_s)

    def _report(self, task: asyncio.Future[Any]) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            exc = task.exception()
            if exc is not None and not isinstance(exc, self._quiet):
                self._log.error("%s background task failed: %r", self._what, exc)


async def woken(event: asyncio.Event, timeout_s: float | None) -> None:
    """Wait until `event` is set or `timeout_s` seconds have passed (None: no limit)."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout_s)
