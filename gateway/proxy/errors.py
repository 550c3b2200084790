"""Refusals that come from routing and forwarding rather than from the key."""

from __future__ import annotations

from gateway.auth.errors import Refusal


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
