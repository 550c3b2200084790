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
    close_connection = True  # the rest of the body is never read


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


class BadRequest(Refusal):
    """The request is not one the gateway can forward safely; the connection is closed.

    Framing in doubt, a fragment in the target, CONNECT, a malformed WebSocket handshake:
    bytes that follow such a request cannot be trusted to start the next one.
    """

    status = 400
    code = "invalid_request"
    message = "The request is not valid HTTP/1.1."
    close_connection = True


class BadWebSocketHandshake(BadRequest):
    message = "The WebSocket handshake is not valid (RFC 6455 section 4.2.1)."

    def headers(self) -> dict[str, str]:
        return {"Sec-WebSocket-Version": "13"}


class HeadersTooLarge(Refusal):
    status = 431
    code = "headers_too_large"
    message = "The request's header section is too large."
    close_connection = True


class BodyStalled(Refusal):
    status = 408
    code = "invalid_request"
    message = "The request body did not arrive in time."
    close_connection = True


class InternalError(Refusal):
    status = 500
    code = "internal_error"
    message = "The gateway failed to handle the request."
    close_connection = True
