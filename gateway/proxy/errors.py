"""Refusals that come from routing and forwarding rather than from the key."""

from __future__ import annotations

from gateway.auth.errors import Refusal
from gateway.proxy.rate_windows import Window, refusal_message


class NoRoute(Refusal):
    status = 404
    code = "no_route"
    message = "No route matches this method and path."


class BadPath(Refusal):
    status = 400
    code = "invalid_path"
    message = "The request path is not acceptable."


class BodyTooLarge(Refusal):
    status = 413
    code = "body_too_large"
    message = "The request body is larger than this route accepts."


class UpstreamUnavailable(Refusal):
    status = 502
    code = "upstream_unavailable"
    message = "The upstream service is unavailable."


class UpstreamTimeout(Refusal):
    status = 504
    code = "upstream_timeout"
    message = "The upstream service did not respond in time."


class RateLimited(Refusal):
    status = 429
    code = "rate_limited"
    message = "Rate limit exceeded."

    def __init__(self, window: Window) -> None:
        super().__init__(refusal_message(window))
        self.window = window

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.window.reset), **dict(self.window.headers())}
