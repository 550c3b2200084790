"""Liveness and readiness."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

Check = Callable[[], Awaitable[bool]]


def health_routes(postgres: Check, redis: Check) -> list[web.RouteDef]:
    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        checks = {"postgres": await postgres(), "redis": await redis()}
        ready = all(checks.values())
        body = {"status": "ready" if ready else "unavailable",
                "checks": {k: "ok" if v else "unreachable" for k, v in checks.items()}}
        return web.json_response(body, status=200 if ready else 503)

    return [web.get("/healthz", healthz), web.get("/readyz", readyz)]
