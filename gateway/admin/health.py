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
    """ "up" when `check` says so within PING_TIMEOUT, else "down"."""
    try:
        async with asyncio.timeout(PING_TIMEOUT):
            up = await check()
    except TimeoutError:
        return "down"
    return "up" if up else "down"


def health_routes(readiness: Readiness, postgres: Check, redis: Check) -> list[web.RouteDef]:
    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        pg, rd = await asyncio.gather(store_state(postgres), store_state(redis))
        phase = readiness.phase
        body = {"status": phase, "stores": {"postgres": pg, "redis": rd}}
        return web.json_response(body, status=200 if phase == "ready" else 503)

    return [web.get("/healthz", healthz), web.get("/readyz", readyz)]
