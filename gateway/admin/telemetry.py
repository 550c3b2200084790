"""What operators see of the admin API: one access-log line and one count per request.

`keygate_admin_requests_total{operation, code}` counts every request that reaches the
admin API by its OpenAPI operation id (read from the document itself, so a new operation
is counted under its own name) and status code; `operation="none"` when no operation
matched (404, 405). Failed authentications count too, as their 401. Each request also
writes an access-log line naming its operation, principal (`root`, `key:<display
prefix>`, or null when authentication failed), the acting key's display prefix and org —
or those of a known key that was refused (revoked, expired, wrong secret) — never a key.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from gateway.admin.openapi import openapi_document
from gateway.keys.format import redact_keys
from gateway.keys.state import KeyState
from gateway.observability import metrics
from gateway.observability.access_log import AccessLog

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Set by the admin API while it serves a request, read here when it is done.
PRINCIPAL = web.RequestKey("keygate.principal", str)  # root, key:<display prefix>
ADMIN_KEY = web.RequestKey("keygate.admin_key", KeyState)  # acting, or refused but known
REQUEST_ID = web.RequestKey("keygate.request_id", str)
ERROR_CODE = web.ResponseKey("keygate.error_code", str)  # the JSON error's code
NO_OPERATION = "none"
_PARAMETER = re.compile(r"\{[^}]+\}")
_HTTP_METHODS = frozenset(("get", "put", "post", "delete", "options", "head", "patch", "trace"))


def operation_ids(prefix: str) -> dict[tuple[str, str], str]:
    """(method, path template under `prefix`) -> operationId, from the OpenAPI document."""
    found: dict[tuple[str, str], str] = {}
    for path, item in openapi_document()["paths"].items():
        for method, operation in item.items():
            if method in _HTTP_METHODS:  # not the path item's `parameters`, `summary`, ...
                found[(method.upper(), _template(prefix + path))] = operation["operationId"]
    return found


def admin_telemetry(access_log: AccessLog, prefix: str) -> Middleware:
    """The outermost middleware of the admin API under `prefix`: counts and logs."""
    operations = operation_ids(prefix)

    @web.middleware
    async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        status = 500  # unless a response or an HTTP exception says otherwise
        outcome: str | None = "internal_error"
        try:
            response = await handler(request)
            status = response.status
            outcome = response.get(ERROR_CODE)
            return response
        except web.HTTPException as exc:  # redirects: what errors_middleware lets through
            status, outcome = exc.status, None
            raise
        finally:
            operation = _operation(request, operations)
            metrics.admin_requests.labels(operation, str(status)).inc()
            if access_log.enabled:
                _log(access_log, request, operation, status, outcome, time.perf_counter() - started)

    return observe


def _operation(request: web.Request, operations: dict[tuple[str, str], str]) -> str:
    route = request.match_info.route
    resource = route.resource
    if resource is None:
        return NO_OPERATION
    method = "GET" if route.method == "HEAD" else route.method
    return operations.get((method, _template(resource.canonical)), NO_OPERATION)


def _template(path: str) -> str:
    """The path with its parameters unnamed: the document and the router may name them
    differently (`{key}`, `{key_id}`)."""
    return _PARAMETER.sub("{}", path)


def _log(
    access_log: AccessLog,
    request: web.Request,
    operation: str,
    status: int,
    outcome: str | None,
    duration: float,
) -> None:
    key = request.get(ADMIN_KEY)
    agent = request.headers.get("User-Agent")
    access_log.write_fields(
        {
            "listener": "admin",
            "request_id": request.get(REQUEST_ID),
            "method": request.method,
            "path": redact_keys(request.path),
            "operation": operation,
            "status": status,
            "outcome": outcome or ("ok" if status < 400 else "error"),
            "duration_ms": round(duration * 1000, 3),
            "principal": request.get(PRINCIPAL),
            "key": key.display_prefix if key is not None else None,
            "org": key.org if key is not None else None,
            "client": request.remote,
            "user_agent": redact_keys(agent[:256]) if agent is not None else None,
        }
    )
