"""The check listener's HTTP APIs (SPEC §12), one dispatch on the path:

- `/envoy/…` — Envoy `ext_authz` HTTP service with `path_prefix: /envoy`: the check
  request carries the original method, and the original path after the prefix.
- `/nginx` — nginx `auth_request`: `X-Original-Method` and `X-Original-URI`.
- `/forward-auth` — Traefik `forwardAuth` and Caddy `forward_auth`: `X-Forwarded-Method`
  and `X-Forwarded-Uri`.

Admitted -> 200, no body, with the identity and RateLimit-* headers for the proxy to copy
(Envoy also gets `x-envoy-auth-headers-to-remove`: the client's own `X-Keygate-*` in any
spelling). Refused -> the proxy's status, headers and JSON body; nginx, which replaces
every auth answer but 2xx/401/403 with its own 500 and never passes a body on, also gets
the body in `X-Keygate-Error` for its error pages (deploy/nginx).
"""

from __future__ import annotations

from dataclasses import dataclass

from multidict import CIMultiDictProxy, istr

from gateway.auth.errors import Refusal
from gateway.check.decide import (
    BadOriginal,
    Checker,
    Verdict,
    checked_client,
    forged_identity,
)
from gateway.config import ServerConfig
from gateway.observability.request_ids import request_id as make_request_id
from gateway.proxy.client_address import ClientAddress
from gateway.proxy.errors import HeadersTooLarge, NoRoute
from gateway.proxy.headers import X_FORWARDED_FOR, X_REQUEST_ID
from gateway.proxy.responses import SERVER_NAME, refusal_parts

ENVOY_PREFIX = "/envoy"
X_ORIGINAL_METHOD = istr("X-Original-Method")
X_ORIGINAL_URI = istr("X-Original-URI")
X_FORWARDED_METHOD = istr("X-Forwarded-Method")
X_FORWARDED_URI = istr("X-Forwarded-Uri")
HEADERS_TO_REMOVE = "x-envoy-auth-headers-to-remove"
X_KEYGATE_ERROR = "X-Keygate-Error"


class NotACheck(NoRoute):
    message = "Not a check endpoint: use /envoy/<path>, /nginx or /forward-auth."


@dataclass(slots=True)
class CheckAnswer:
    """A check's HTTP answer, for the listener to write."""

    status: int
    fields: list[tuple[str, str]]
    body: bytes = b""
    close: bool = False  # close the connection after it


@dataclass(slots=True)
class _Ask:
    """A check request read: which API asks, about which original request."""

    api: str
    method: str
    target: str
    request_id: str
    client: ClientAddress


class CheckHandler:
    def __init__(self, checker: Checker, server: ServerConfig) -> None:
        self.checker = checker
        self.server = server

    def answer_now(
        self, method: str, raw_target: str, headers: CIMultiDictProxy[str], peer: str | None
    ) -> CheckAnswer | None:
        """The answer when memory alone decides it (`Checker.check_now`), else None."""
        ask = self._read(method, raw_target, headers, peer)
        if isinstance(ask, CheckAnswer):
            return ask
        verdict = self.checker.check_now(
            ask.api, ask.method, ask.target, headers, ask.client, ask.request_id
        )
        return None if verdict is None else _answer(ask, verdict, headers)

    async def answer(
        self, method: str, raw_target: str, headers: CIMultiDictProxy[str], peer: str | None
    ) -> CheckAnswer:
        """The answer to one check request (its head already within the listener's limits)."""
        ask = self._read(method, raw_target, headers, peer)
        if isinstance(ask, CheckAnswer):
            return ask
        verdict = await self.checker.check(
            ask.api, ask.method, ask.target, headers, ask.client, ask.request_id
        )
        return _answer(ask, verdict, headers)

    def _read(
        self, method: str, raw_target: str, headers: CIMultiDictProxy[str], peer: str | None
    ) -> _Ask | CheckAnswer:
        """Which API asks about which request; or the refusal when the check request does
        not say (a refusal that is not a decision: never counted as one)."""
        request_id = make_request_id(headers.get(X_REQUEST_ID))
        path = raw_target.partition("?")[0]
        try:
            if path == "/nginx":
                api = "nginx"
                original = _required(headers, X_ORIGINAL_METHOD, "$request_method")
                target = _required(headers, X_ORIGINAL_URI, "$request_uri")
            elif path == "/forward-auth":
                api = "forward_auth"
                original = _required(headers, X_FORWARDED_METHOD, "the original method")
                target = _required(headers, X_FORWARDED_URI, "the original URI")
            elif path == ENVOY_PREFIX or path.startswith(ENVOY_PREFIX + "/"):
                api = "envoy"
                original, target = method, raw_target[len(ENVOY_PREFIX) :] or "/"
            else:
                raise NotACheck()
        except Refusal as refusal:
            return refused(refusal, request_id, nginx=path == "/nginx")
        client = checked_client(
            peer, headers.getall(X_FORWARDED_FOR, ()), self.server.trusted_proxies
        )
        return _Ask(api, original, target, request_id, client)


def _answer(ask: _Ask, verdict: Verdict, headers: CIMultiDictProxy[str]) -> CheckAnswer:
    if verdict.refusal is not None:
        return refused(verdict.refusal, ask.request_id, nginx=ask.api == "nginx")
    fields = [*_ALLOWED, (X_REQUEST_ID, ask.request_id), *verdict.identity, *verdict.limits]
    if ask.api == "envoy":
        forged = forged_identity(tuple(headers.keys()), verdict.identity)
        if forged:
            fields.append((HEADERS_TO_REMOVE, ",".join(forged)))
    return CheckAnswer(200, fields)


_ALLOWED = (("Cache-Control", "no-store"), ("Server", SERVER_NAME))


def _required(headers: CIMultiDictProxy[str], name: istr, what: str) -> str:
    values = headers.getall(name, ())
    if len(values) != 1 or not values[0]:
        raise BadOriginal(f"Send the original request in one {name} header ({what}).")
    return values[0]


def refused(refusal: Refusal, request_id: str, *, nginx: bool = False) -> CheckAnswer:
    """The proxy's refusal; nginx also gets the body in `X-Keygate-Error` (its error pages
    cannot read an auth answer's body). Refusals of the head itself close the connection."""
    headers, body = refusal_parts(refusal, request_id)
    fields = list(headers.items())
    if nginx:
        fields.append((X_KEYGATE_ERROR, body.decode()))
    return CheckAnswer(refusal.status, fields, body, close=isinstance(refusal, HeadersTooLarge))
