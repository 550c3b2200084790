"""Liveness and readiness (SPEC §9).

`/healthz`: the process serves. `/readyz`: this worker should receive traffic. Readiness
is the worker's lifecycle, never the stores': 503 while it starts and from the moment a
stop signal arrives (`server.drain_delay` ahead of closing its listener, so load
balancers stop sending first), 200 otherwise, even with a store down: keys are still
decided from the caches, and a Redis blip must not pull every instance out of service at
once. The stores' state is reported in the body, from pings bounded by `PING_TIMEOUT` so
a hung store cannot make the probe itself time out.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from aiohttp import web

Check = Callable[[], Awaitable[bool]]
Phase = Literal["starting", "ready", "draining"]
# A store that has not answered within this is reported "down" (probes time out at 1 s
# by default in Kubernetes; both stores are pinged at once).
PING_TIMEOUT = 0.5


@dataclass
class Readiness:
    """Where this worker is in its life; `gateway.server` moves it forward."""

    phase: Phase = "starting"

    @property
    def draining(self) -> bool:
        return self.phase == "draining"


async def store_state(check: Check) -> str:
    """ "up" when `check` says so within PING_TIMEOUT, else "down".

    The check runs as its own task, cancelled but not awaited at the deadline: a ping
    cancelled on a hung PostgreSQL connection is cleaned up by asyncpg (the connection's
    release waits for the query's cancellation, up to the store timeout), which would
    otherwise hold the probe's answer past PING_TIMEOUT."""
    ping = asyncio.ensure_future(check())
    done, _ = await asyncio.wait({ping}, timeout=PING_TIMEOUT)
    if not done:
        ping.cancel()
        ping.add_done_callback(_retrieve)
        return "down"
    return "up" if ping.result() else "down"


def _retrieve(task: asyncio.Future[bool]) -> None:
    """A ping given up on: its outcome is not wanted, but must be retrieved."""
    if not task.cancelled():
        task.exception()


def health_routes(readiness: Readiness, postgres: Check, redis: Check) -> list[web.RouteDef]:
    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        pg, rd = await asyncio.gather(store_state(postgres), store_state(redis))
        phase = readiness.phase
        body = {"status": phase, "stores": {"postgres": pg, "redis": rd}}
        return web.json_response(body, status=200 if phase == "ready" else 503)

    return [web.get("/healthz", healthz), web.get("/readyz", readyz)]
