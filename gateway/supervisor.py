"""Supervision of a worker's long-running tasks: a crash is logged, counted and restarted.

A background loop that dies silently takes a guarantee with it (the invalidation listener
is the freshness bound, the flushes are the metrics and last-used stamps), so every one
runs under a Supervisor: an exception that escapes it is logged with its traceback (types
and frames only, never an exception's message, which may carry data), counted in
`keygate_background_restarts_total{task}`, and the loop restarted after a backoff that
doubles from 0.1 s to 30 s and starts again from 0.1 s once the loop has run a healthy
minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import traceback
from collections.abc import Awaitable, Callable

from gateway.observability import metrics

log = logging.getLogger("keygate.background")

FIRST_BACKOFF = 0.1
MAX_BACKOFF = 30.0
HEALTHY_RUN = 60.0
STOP_RETRY = 0.2  # how often `stop` repeats a cancellation that a loop did not act on


def describe_crash(exc: BaseException) -> str:
    """The exception's type and frames (and those of its causes), without any message."""
    lines: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if lines:
            lines.append("caused by:")
        lines.append(type(current).__qualname__)
        for frame in traceback.extract_tb(current.__traceback__):
            lines.append(f'  File "{frame.filename}", line {frame.lineno}, in {frame.name}')
        current = current.__cause__ or current.__context__
    return "\n".join(lines)


class Supervisor:
    """Runs named loops, restarting each one that raises; `stop()` cancels them all."""

    def __init__(
        self,
        *,
        first_backoff: float = FIRST_BACKOFF,
        max_backoff: float = MAX_BACKOFF,
        healthy_run: float = HEALTHY_RUN,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.first_backoff = first_backoff
        self.max_backoff = max_backoff
        self.healthy_run = healthy_run
        self.clock = clock
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, name: str, loop: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
        """Run `loop()` under supervision; `name` is the metric label (a fixed word)."""
        task = asyncio.create_task(self._supervise(name, loop), name=name)
        self._tasks.append(task)
        return task

    async def _supervise(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        restarts = metrics.background_restarts.labels(name)
        backoff = self.first_backoff
        while True:
            started = self.clock()
            try:
                await loop()
                problem = "returned"  # a loop is meant to run until cancelled
            except Exception as exc:
                problem = "crashed:\n" + describe_crash(exc)
            if self.clock() - started >= self.healthy_run:
                backoff = self.first_backoff
            restarts.inc()
            log.error("background task %s %s\nrestarting in %gs", name, problem, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff)

    async def stop(self) -> None:
        """Cancel every loop and wait until each has ended.

        A cancellation can be lost: on Python 3.11, `asyncio.wait_for` (which redis-py
        wraps around every socket call) swallows one that arrives as its inner call
        completes, and the loop then carries on as if never cancelled. So the request is
        repeated until the task is really done, instead of awaiting it once and forever.
        """
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            while not task.done():
                await asyncio.wait({task}, timeout=STOP_RETRY)
                if not task.done():
                    task.cancel()
            if not task.cancelled():
                with contextlib.suppress(Exception):
                    task.result()
