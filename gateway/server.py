"""`keygate serve`: worker processes sharing the proxy port, signals, graceful shutdown."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Coroutine
from multiprocessing.synchronize import Event as EventType
from typing import Any

from aiohttp import web

from gateway.app import admin_app, build_gateway, proxy_server, server_secret
from gateway.config import Config
from gateway.keys.errors import StoreUnavailable
from gateway.store.db import Database
from gateway.store.migrate import pending_migrations

log = logging.getLogger("keygate")


def split_host_port(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)  # noqa: S104 - empty host means all


def run_async(main: Coroutine[Any, Any, Any]) -> Any:
    """Run on uvloop when it is installed, else on asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def traceback_without_messages(exc: BaseException) -> str:
    """An exception's stack frames and type names, its chain included, never its message.

    Exception messages may quote input (a header, a request line, a key); the frames name
    only code. Every formatter below prints this instead of `logging`'s usual traceback,
    so nothing logged with `exc_info`, by us or by aiohttp, can carry request data.
    """
    chain: list[BaseException] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append(current)
        current = current.__cause__ or (
            None if current.__suppress_context__ else current.__context__
        )
    parts: list[str] = []
    for link in reversed(chain):
        if parts:
            parts.append("\nThe above exception led to:\n\n")
        parts.append("Traceback (most recent call last):\n")
        parts.extend(traceback.format_tb(link.__traceback__))
        kind = type(link)
        parts.append(f"{kind.__module__}.{kind.__qualname__}\n")
    return "".join(parts).rstrip("\n")


class _NoMessageTracebacks(logging.Formatter):
    def formatException(self, ei: Any) -> str:
        return traceback_without_messages(ei[1]) if ei[1] is not None else ""


class _JsonFormatter(_NoMessageTracebacks):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": self.formatTime(record), "level": record.levelname.lower(),
                 "logger": record.name, "message": record.getMessage()}
        if record.exc_info and record.exc_info[1] is not None:
            entry["error"] = type(record.exc_info[1]).__name__
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(config: Config) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if config.log.format == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(
            _NoMessageTracebacks("%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(config.log.level.upper())


async def run_worker(
    config: Config,
    secret: bytes,
    *,
    shared_port: bool,
    on_ready: Callable[[], None] | None = None,
) -> None:
    """One worker: proxy and admin listeners until SIGTERM/SIGINT, then a graceful stop."""
    gw = build_gateway(config, secret)
    proxy_runner = web.ServerRunner(
        proxy_server(gw), shutdown_timeout=config.server.drain_timeout, handle_signals=False
    )
    admin_runner = web.AppRunner(admin_app(gw), access_log=None, handle_signals=False)
    await proxy_runner.setup()
    await admin_runner.setup()
    host, port = split_host_port(config.listen.proxy)
    await web.TCPSite(proxy_runner, host, port, reuse_port=shared_port, backlog=2048).start()
    admin_host, admin_port = split_host_port(config.listen.admin)
    await web.TCPSite(admin_runner, admin_host, admin_port, reuse_port=shared_port).start()
    # Start-up objects live forever: keep the cyclic GC from rescanning them per request.
    gc.collect()
    gc.freeze()
    log.info("proxy listening on %s, admin on %s", config.listen.proxy, config.listen.admin)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in _STOP_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    if on_ready is not None:
        on_ready()  # serving, and stop signals are handled from here on
    if _early_stop.is_set():
        stop.set()
    await stop.wait()
    log.info("shutting down: draining in-flight requests (up to %ss)", config.server.drain_timeout)
    await proxy_runner.cleanup()  # stops accepting, then waits for in-flight requests
    await admin_runner.cleanup()  # its cleanup_ctx closes the stores, after the flushes


_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# Set by a stop signal that arrives before the event loop's handlers are in place.
_early_stop = threading.Event()


def _catch_early_stop() -> None:
    for sig in _STOP_SIGNALS:
        signal.signal(sig, lambda _signum, _frame: _early_stop.set())


def _worker_process(config: Config, secret: bytes, ready: EventType) -> None:
    # Started with stop signals ignored (so one arriving while Python starts up cannot
    # kill us half-made); from here on they mean "stop cleanly". The parent repeats its
    # SIGTERM until `ready` says the event loop handles them.
    _catch_early_stop()
    configure_logging(config)
    run_async(run_worker(config, secret, shared_port=True, on_ready=ready.set))
    # Closing the loop restored the default action: a late stop signal (e.g. one sent to
    # the whole process group) must not turn this clean exit into a kill.
    for sig in _STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


async def check_schema(config: Config) -> None:
    """Refuse to serve on a database that lacks this version's migrations.

    An unreachable database is not a reason to refuse: cached keys can still be served.
    """
    db = Database(config.database_url, timeout=config.server.store_timeout)
    try:
        pending = await pending_migrations(db)
    except StoreUnavailable as exc:
        log.warning("could not check the database schema: %s", exc)
        return
    finally:
        await db.close()
    if pending:
        names = ", ".join(f"{m.version:04d}_{m.name}" for m in pending)
        raise SystemExit(f"keygate: the database lacks migrations {names}: run `keygate migrate`")


def serve(config: Config, workers: int | None = None) -> int:
    """Run until signalled; returns the exit code."""
    configure_logging(config)
    secret = server_secret(config)
    run_async(check_schema(config))
    count = workers or config.server.workers
    if count < 1:
        raise SystemExit("keygate: --workers must be at least 1")
    if count == 1:
        _catch_early_stop()
        run_async(run_worker(config, secret, shared_port=False))
        return 0
    metrics_dir = tempfile.mkdtemp(prefix="keygate-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir  # inherited by the workers
    ctx = multiprocessing.get_context("spawn")
    readies = [ctx.Event() for _ in range(count)]
    procs = [
        ctx.Process(target=_worker_process, args=(config, secret, ready),
                    name=f"keygate-worker-{i}")
        for i, ready in enumerate(readies)
    ]
    stopping = threading.Event()

    def forward(_signum: int, _frame: object) -> None:
        stopping.set()
        for proc in procs:
            if proc.is_alive():
                proc.terminate()  # SIGTERM: each worker drains and exits 0

    # Workers inherit ignored stop signals until they install their own handlers.
    for sig in _STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    for proc in procs:
        proc.start()
    for sig in _STOP_SIGNALS:
        signal.signal(sig, forward)
    while any(p.is_alive() for p in procs) and not stopping.is_set():
        for proc in procs:
            proc.join(timeout=0.5)
        if any(p.exitcode not in (None, 0) for p in procs):
            log.error("a worker exited with %s; stopping", [p.exitcode for p in procs])
            forward(signal.SIGTERM, None)  # one worker died: stop the instance, loudly
    deadline = time.monotonic() + config.server.drain_timeout + 15
    while any(p.is_alive() for p in procs) and time.monotonic() < deadline:
        for proc in procs:
            proc.join(timeout=1.0)
        for proc, ready in zip(procs, readies, strict=True):
            if proc.is_alive() and not ready.is_set():
                proc.terminate()  # again: it was still starting, with stop signals ignored
    for proc in procs:
        if proc.is_alive():
            log.error("worker %s did not stop in time; killing it", proc.pid)
            proc.kill()
            proc.join()
    shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0 if all(p.exitcode == 0 for p in procs) else 1
