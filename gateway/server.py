"""`keygate serve`: worker processes sharing the proxy port, signals, graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import multiprocessing
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine
from multiprocessing.synchronize import Event as EventType
from typing import Any

from aiohttp import web

from gateway.admin.health import Readiness
from gateway.app import admin_app, build_gateway, check_server, checker, proxy_server, server_secret
from gateway.config import Config
from gateway.keys.errors import StoreUnavailable
from gateway.observability import logs as observability_logs
from gateway.observability.processes import register_worker
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


def configure_logging(config: Config) -> None:
    """Application logs as the config says (JSON lines or text, RFC 3339 UTC times)."""
    observability_logs.configure_logging(config.log.format, config.log.level)


# Admin requests are short (a store call each, bounded by server.store_timeout): the
# admin listener waits this long for those in flight when it closes, last.
ADMIN_DRAIN_TIMEOUT = 5.0


class StopSignals:
    """Stop signals as a worker sees them. The first one turns /readyz to 503 ("draining")
    at once, in the signal callback itself; a second one cuts the drain delay short."""

    def __init__(self, readiness: Readiness) -> None:
        self.readiness = readiness
        self.requested = asyncio.Event()
        self.hurry = asyncio.Event()

    def received(self) -> None:
        if self.requested.is_set():
            self.hurry.set()
            return
        self.requested.set()
        self.readiness.phase = "draining"

    def orphaned(self) -> None:
        """The parent process is gone (killed, say): stop without the drain delay, since
        no one is left to take this worker out of a load balancer or to signal again."""
        log.error("the parent process exited: stopping (in-flight requests drain)")
        self.received()
        self.received()

    async def drain_delay(self, seconds: float) -> None:
        """Wait `seconds` (the listener still accepting), or until a second signal."""
        if seconds > 0 and not self.hurry.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.hurry.wait(), seconds)


async def run_worker(
    config: Config,
    secret: bytes,
    *,
    shared_port: bool,
    on_ready: Callable[[], None] | None = None,
    stop_requested: Callable[[], bool] = lambda: False,
    parent_sentinel: int | None = None,
) -> None:
    """One worker, SPEC §9: /readyz says "starting" until both listeners serve; on
    SIGTERM/SIGINT it says "draining" while the proxy listener keeps accepting for
    `server.drain_delay`; then the listener closes, requests in flight get up to
    `server.drain_timeout`, the admin listener closes and the stores close last.

    `stop_requested` says whether the parent asked every worker to stop before this one
    handled signals (its SIGTERM would have been lost). `parent_sentinel` (a spawned
    worker's) becomes readable when the parent exits: a parent killed outright (SIGKILL,
    the OOM killer) can forward no signal, and the worker would serve on unsupervised."""
    gw = build_gateway(config, secret)
    stops = StopSignals(gw.readiness)
    loop = asyncio.get_running_loop()
    for sig in _STOP_SIGNALS:
        loop.add_signal_handler(sig, stops.received)
    if parent_sentinel is not None:
        _watch_parent(loop, parent_sentinel, stops)
    if _early_stop.is_set() or stop_requested():
        stops.received()
    proxy_runner = web.ServerRunner(
        proxy_server(gw), shutdown_timeout=config.server.drain_timeout, handle_signals=False
    )
    admin_runner = web.AppRunner(
        admin_app(gw), access_log=None, handle_signals=False, shutdown_timeout=ADMIN_DRAIN_TIMEOUT
    )
    # The admin listener first: probes read "starting" while the rest comes up.
    await admin_runner.setup()  # cleanup_ctx: stores, key lookup, flushes
    admin_host, admin_port = split_host_port(config.listen.admin)
    await web.TCPSite(admin_runner, admin_host, admin_port, reuse_port=shared_port).start()
    await proxy_runner.setup()
    host, port = split_host_port(config.listen.proxy)
    await web.TCPSite(proxy_runner, host, port, reuse_port=shared_port, backlog=2048).start()
    checks = None
    if config.listen.check is not None:
        checks = check_server(gw)
        host, port = split_host_port(config.listen.check)
        await checks.start(host, port, reuse_port=shared_port)
    grpc_server = None
    if config.listen.check_grpc is not None:
        # Imported here: a gateway without the gRPC listener never loads grpcio.
        from gateway.check.grpc_api import start_grpc

        grpc_server = await start_grpc(
            checker(gw), config.server, config.listen.check_grpc, shared_port=shared_port
        )
    # Start-up objects live forever: keep the cyclic GC from rescanning them per request.
    gc.collect()
    gc.freeze()
    log.info("proxy listening on %s, admin on %s", config.listen.proxy, config.listen.admin)
    for name in ("check", "check_grpc"):
        if getattr(config.listen, name) is not None:
            log.info("%s listening on %s", name, getattr(config.listen, name))
    was_ready = not stops.requested.is_set()
    if was_ready:
        gw.readiness.phase = "ready"
    if on_ready is not None:
        on_ready()  # serving, and stop signals are handled from here on
    await stops.requested.wait()
    if was_ready:  # (stopped while starting: it never said ready, no one to wait for)
        log.info("stop signal: /readyz 503, still accepting for %gs", config.server.drain_delay)
        await stops.drain_delay(config.server.drain_delay)
    log.info("shutting down: draining in-flight requests (up to %gs)", config.server.drain_timeout)
    # WebSocket sessions never end by themselves: told to go away (1001), their clients
    # reconnect elsewhere instead of holding the drain and then being cut (1006).
    gw.sessions.going_away()
    # Stop accepting, then wait for requests in flight: the proxy's and the checks' at once.
    closing = [proxy_runner.cleanup()]
    if checks is not None:
        closing.append(checks.close(config.server.drain_timeout))
    if grpc_server is not None:
        closing.append(grpc_server.stop(config.server.drain_timeout))
    await asyncio.gather(*closing)
    await admin_runner.cleanup()  # its cleanup_ctx closes the stores, after the flushes


def _watch_parent(loop: asyncio.AbstractEventLoop, sentinel: int, stops: StopSignals) -> None:
    def gone() -> None:
        loop.remove_reader(sentinel)  # readable for good from now on: once is enough
        stops.orphaned()

    loop.add_reader(sentinel, gone)


_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# Set by a stop signal that arrives before the event loop's handlers are in place.
_early_stop = threading.Event()


def _catch_early_stop() -> None:
    for sig in _STOP_SIGNALS:
        signal.signal(sig, lambda _signum, _frame: _early_stop.set())


def _worker_process(
    config: Config, secret: bytes, ready: EventType, stop: Any, index: int = 0
) -> None:
    # Started with stop signals ignored (so one arriving while Python starts up cannot
    # kill us half-made); from here on they mean "stop cleanly". A stop the parent sent
    # before that is read from `stop` (a shared flag) once the handlers are in place.
    _catch_early_stop()
    configure_logging(config)
    register_worker(index)  # for the process metrics of every worker (worker="<index>")
    run_async(
        run_worker(
            config,
            secret,
            shared_port=True,
            on_ready=ready.set,
            stop_requested=lambda: bool(stop.value),
            parent_sentinel=_parent_sentinel(),
        )
    )
    # Closing the loop restored the default action: a late stop signal (e.g. one sent to
    # the whole process group) must not turn this clean exit into a kill.
    for sig in _STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def _parent_sentinel() -> int | None:
    parent = multiprocessing.parent_process()
    return None if parent is None else parent.sentinel


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
    # Set before any stop signal is sent: a worker still starting (stop signals ignored)
    # reads it once its handlers are in place, so no stop is ever lost. (Repeating the
    # signal until the worker said ready was not enough: one lost just before it became
    # ready left it serving until the parent's deadline killed it, exit code 1.) A raw
    # shared byte, not an Event: it is set in a signal handler, so it must take no lock.
    stop = ctx.RawValue("b", 0)
    procs = [
        ctx.Process(
            target=_worker_process,
            args=(config, secret, ready, stop, i),
            name=f"keygate-worker-{i}",
        )
        for i, ready in enumerate(readies)
    ]
    stopping = threading.Event()

    def forward(_signum: int, _frame: object) -> None:
        stopping.set()
        stop.value = 1  # before the signals: see `stop` above
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
    server = config.server
    deadline = (
        time.monotonic() + server.drain_delay + server.drain_timeout + ADMIN_DRAIN_TIMEOUT + 15
    )
    while any(p.is_alive() for p in procs) and time.monotonic() < deadline:
        for proc in procs:
            proc.join(timeout=1.0)
    for proc in procs:
        if proc.is_alive():
            log.error("worker %s did not stop in time; killing it", proc.pid)
            proc.kill()
            proc.join()
    shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0 if all(p.exitcode == 0 for p in procs) else 1
