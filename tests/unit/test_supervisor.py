"""Background loops are supervised: a crash is logged (types and frames, no message),
counted in keygate_background_restarts_total{task}, and restarted with backoff."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from gateway.observability import metrics
from gateway.supervisor import Supervisor, describe_crash

SECRET_TEXT = "kg_live_SECRETSECRET"  # stands for data an exception message may carry


def restarts(task: str) -> float:
    value = metrics.REGISTRY.get_sample_value("keygate_background_restarts_total", {"task": task})
    return value or 0.0


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_a_crashing_loop_is_logged_counted_and_restarted_with_backoff(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    sleeps: list[float] = []
    real_sleep = asyncio.sleep

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        await real_sleep(0)

    monkeypatch.setattr(asyncio, "sleep", fake_sleep)
    runs = 0
    again = asyncio.Event()

    async def loop() -> None:
        nonlocal runs
        runs += 1
        if runs >= 6:
            again.set()
            await asyncio.Event().wait()  # healthy from now on
        raise ValueError(SECRET_TEXT)

    before = restarts("test-crash")
    supervisor = Supervisor(first_backoff=0.1, max_backoff=0.5)
    with caplog.at_level(logging.ERROR, logger="keygate.background"):
        supervisor.start("test-crash", loop)
        await asyncio.wait_for(again.wait(), 5)
        await supervisor.stop()
    assert runs == 6
    assert restarts("test-crash") - before == 5
    assert sleeps == [0.1, 0.2, 0.4, 0.5, 0.5]  # doubling, capped
    logged = [r.getMessage() for r in caplog.records]
    assert len(logged) == 5
    assert "background task test-crash crashed" in logged[0]
    assert "ValueError" in logged[0] and "in loop" in logged[0]  # type and frames
    assert all(SECRET_TEXT not in line for line in logged)  # never the message


async def test_backoff_starts_again_after_a_healthy_minute(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = Clock()
    sleeps: list[float] = []
    real_sleep = asyncio.sleep

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        await real_sleep(0)

    monkeypatch.setattr(asyncio, "sleep", fake_sleep)
    runs = 0
    done = asyncio.Event()

    async def loop() -> None:
        nonlocal runs
        runs += 1
        if runs == 3:
            clock.now += 61  # this run was healthy for over a minute before it crashed
        if runs == 5:
            done.set()
            await asyncio.Event().wait()
        raise RuntimeError("boom")

    supervisor = Supervisor(first_backoff=0.1, healthy_run=60, clock=clock)
    supervisor.start("test-healthy", loop)
    await asyncio.wait_for(done.wait(), 5)
    await supervisor.stop()
    assert sleeps == [0.1, 0.2, 0.1, 0.2]


def test_crash_description_names_types_and_frames_never_messages() -> None:
    def inner() -> None:
        raise KeyError(SECRET_TEXT)

    try:
        try:
            inner()
        except KeyError as exc:
            raise RuntimeError(SECRET_TEXT) from exc
    except RuntimeError as exc:
        text = describe_crash(exc)
    assert "RuntimeError" in text and "KeyError" in text and "in inner" in text
    assert SECRET_TEXT not in text


async def test_stop_ends_a_loop_that_lost_a_cancellation() -> None:
    """Python 3.11's asyncio.wait_for (inside every redis-py call) can swallow a
    cancellation; a worker stopping must not then wait for that loop forever."""
    swallowed = 0

    async def stubborn() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if swallowed == 0:
                    swallowed += 1
                    continue  # lost, as wait_for loses it when its inner call completes
                raise

    supervisor = Supervisor()
    task = supervisor.start("stubborn", stubborn)
    await asyncio.sleep(0)  # running, inside its sleep
    started = time.monotonic()
    await asyncio.wait_for(supervisor.stop(), 5)  # (a bound, not the measure: see below)
    # Measured, not left to wait_for, which on 3.11 can itself lose its own timeout.
    assert time.monotonic() - started < 2
    assert task.done() and swallowed == 1
