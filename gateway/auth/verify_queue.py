"""argon2 verifies, shared fairly: per-org round robin over a few threads, bounded queues.

Each verify holds a thread (and `memory_kib` of RAM) for ~20 ms, so one tenant's flood of
first-seen or wrong secrets must not queue ahead of everyone else: waiting verifies are
queued per org, and a free thread takes the next org in turn, so another org's first
request waits for at most the verifies already running plus one per org ahead of it.
Queues are bounded (per org and in all): beyond them the request is answered 503
`auth_unavailable` at once instead of waiting without bound. A thread is counted busy
until its verify finishes, even when whoever awaited it has gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

from gateway.auth.errors import AuthUnavailable
from gateway.keys.hashing import SecretHasher


class VerifyQueueFull(AuthUnavailable):
    message = "Too many API keys are being checked right now; retry shortly."
    retry_after = 1


@dataclass(eq=False)
class _Job:
    org: str
    encoded: str
    secret: str
    result: asyncio.Future[bool]


class FairVerifier:
    def __init__(
        self,
        hasher: SecretHasher,
        slots: int,
        max_queued_per_org: int,
        max_queued: int,
        on_start: Callable[[str], None] | None = None,
    ) -> None:
        self.hasher = hasher
        self.slots = slots
        self.max_queued_per_org = max_queued_per_org
        self.max_queued = max_queued
        self.on_start = on_start  # observes each verify as it takes a thread (tests)
        self.running = 0
        self.queued = 0
        # Orgs with waiting verifies, in turn order: the first one is served next.
        self._queues: OrderedDict[str, deque[_Job]] = OrderedDict()

    async def verify(self, org: str, encoded: str, secret: str) -> bool:
        """Whether `secret` matches `encoded`; raises VerifyQueueFull when queues are full."""
        queue = self._queues.get(org)
        if self.queued >= self.max_queued or (
            queue is not None and len(queue) >= self.max_queued_per_org
        ):
            raise VerifyQueueFull()
        if queue is None:
            queue = self._queues[org] = deque()
        job = _Job(org, encoded, secret, asyncio.get_running_loop().create_future())
        queue.append(job)
        self.queued += 1
        self._dispatch()
        # Cancelled while still queued: the job is skipped. Cancelled while running: its
        # thread still runs to the end and only then frees its slot (`_finished`).
        return await job.result

    def _dispatch(self) -> None:
        while self.running < self.slots and self._queues:
            org, queue = next(iter(self._queues.items()))
            job = queue.popleft()
            self.queued -= 1
            if queue:
                self._queues.move_to_end(org)  # its next verify waits for the others' turns
            else:
                del self._queues[org]
            if job.result.done():  # its waiter was cancelled before a thread was free
                continue
            self.running += 1
            if self.on_start is not None:
                self.on_start(org)
            done = self.hasher.submit_verify(job.encoded, job.secret)
            done.add_done_callback(
                functools.partial(_call_soon, asyncio.get_running_loop(), self._finished, job)
            )

    def _finished(self, job: _Job, done: Future[bool]) -> None:
        self.running -= 1
        if job.result.done():
            pass
        elif done.cancelled():  # the pool shut down
            job.result.cancel()
        else:
            error = done.exception()
            if error is not None:
                job.result.set_exception(error)
            else:
                job.result.set_result(done.result())
        self._dispatch()


def _call_soon(
    loop: asyncio.AbstractEventLoop,
    finished: Callable[[_Job, Future[bool]], None],
    job: _Job,
    done: Future[bool],
) -> None:
    """Runs on the verify thread: hand the result back to the event loop."""
    with contextlib.suppress(RuntimeError):  # the loop closed while a thread finished
        loop.call_soon_threadsafe(finished, job, done)
