"""One check: the original request as another proxy describes it -> the gateway's decision.

The steps are the proxy's own (`gateway.proxy.decision`): the original target is checked
as the proxy's parser and message checks would, normalised and matched; then the
credential, scopes, org, last-used stamp and rate limit. The decision is counted in the
same metrics and written to the same access log as a proxied request, with the API that
asked in `keygate_check_requests_total`.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass

from multidict import CIMultiDictProxy

from gateway.auth.authenticate import Headers
from gateway.auth.errors import Refusal
from gateway.config import RouteConfig, ServerConfig
from gateway.observability import metrics
from gateway.observability.access_log import AccessLog
from gateway.proxy.client_address import ClientAddress, Network, client_address, parse_ip
from gateway.proxy.decision import Decider, Exchange
from gateway.proxy.errors import HeadersTooLarge, InternalError
from gateway.proxy.framing import check_target
from gateway.proxy.headers import KEYGATE_PREFIX, canonical
from gateway.proxy.routes import RouteMatch

log = logging.getLogger("keygate")

# RFC 9110 §5.6.2 token: what a request line's method may be.
_METHOD = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# A request target as the proxy's HTTP parser takes it: visible ASCII, no spaces.
_TARGET = re.compile(r"[\x21-\x7e]+")


class BadOriginal(Refusal):
    """The check request does not say (or garbles) which request it is about."""

    status = 400
    code = "invalid_request"
    message = "The check request does not describe the original request."


@dataclass(slots=True)
class Verdict:
    """A check's answer: admitted (identity and RateLimit-* headers) or a refusal."""

    exchange: Exchange
    identity: Headers = ()
    limits: Headers = ()
    refusal: Refusal | None = None
    outcome: str = "allowed"  # or the refusal's code, or "internal_error"

    @property
    def status(self) -> int:
        return 200 if self.refusal is None else self.refusal.status


def check_original(method: str, target: str, max_line: int) -> None:
    """What the proxy's parser and message checks refuse in a request line, refused here:
    the original method and target arrive in headers, which may hold anything."""
    if len(method) + len(target) > max_line:
        raise HeadersTooLarge()  # the proxy's parser: a request line over max_header_field
    if not _METHOD.fullmatch(method):
        raise BadOriginal("The original request's method is not an HTTP method.")
    if not _TARGET.fullmatch(target):
        raise BadOriginal("The original request target must be visible ASCII without spaces.")
    check_target(method, target)


def checked_client(
    peer: str | None, forwarded_for: Sequence[str], trusted: Sequence[Network]
) -> ClientAddress:
    """The client of the original request. The check listener's peer is the proxy asking,
    so its last `X-Forwarded-For` hop (the address it saw) is believed; hops before that
    only as far as `server.trusted_proxies` vouch for them, as on the proxy listener."""
    hops = [h.strip() for line in forwarded_for for h in line.split(",") if h.strip()]
    if not hops or parse_ip(hops[-1]) is None:  # none, or garbage: the proxy itself
        return client_address(peer, (), trusted)
    return client_address(hops[-1], [", ".join(hops[:-1])] if hops[:-1] else (), trusted)


def forged_identity(names: Sequence[str], identity: Headers) -> tuple[str, ...]:
    """Header names the client sent that an upstream could read as `X-Keygate-*` (any case,
    `_` or `.` for `-`), less the exact names the answer sets (those are overwritten)."""
    own = {name.lower() for name, _ in identity}
    forged = []
    for name in names:
        lower = name.lower()
        if lower not in own and canonical(lower).startswith(KEYGATE_PREFIX):
            forged.append(lower)
    return tuple(dict.fromkeys(forged))


class Checker:
    """Runs checks against the shared Decider and records each one."""

    def __init__(self, decider: Decider, server: ServerConfig, access_log: AccessLog) -> None:
        self.decider = decider
        self.server = server
        self.access_log = access_log

    def check_now(
        self,
        api: str,
        method: str,
        target: str,
        headers: CIMultiDictProxy[str],
        client: ClientAddress,
        request_id: str,
    ) -> Verdict | None:
        """The check, when memory alone decides it (`Decider.admit_now`); None when it
        needs a store, a verify or a counter: then `check` decides it (nothing was
        recorded)."""
        started = time.perf_counter()
        exchange = _exchange(method, headers, client, request_id)
        try:
            match = self._routed(method, target, exchange)
            admitted = self.decider.admit_now(match, headers, exchange)
            if admitted is None:
                return None
            verdict = Verdict(exchange, *admitted)
        except Exception as exc:
            verdict = self._refused(api, exc, exchange)
        return self._recorded(api, verdict, started)

    async def check(
        self,
        api: str,
        method: str,
        target: str,
        headers: CIMultiDictProxy[str],
        client: ClientAddress,
        request_id: str,
    ) -> Verdict:
        started = time.perf_counter()
        exchange = _exchange(method, headers, client, request_id)
        try:
            match = self._routed(method, target, exchange)
            identity, limits = await self.decider.admit(match, headers, client, exchange)
            verdict = Verdict(exchange, identity, limits)
        except Exception as exc:
            verdict = self._refused(api, exc, exchange)
        return self._recorded(api, verdict, started)

    def _routed(self, method: str, target: str, exchange: Exchange) -> RouteMatch[RouteConfig]:
        check_original(method, target, self.server.max_header_field)
        return self.decider.route(method, target, exchange).match

    def _refused(self, api: str, exc: Exception, exchange: Exchange) -> Verdict:
        if isinstance(exc, Refusal):
            return Verdict(exchange, refusal=exc, outcome=exchange.refused(exc))
        log.error(
            "internal error in a %s check of route %s (request %s)",
            api,
            exchange.route,
            exchange.request_id,
            exc_info=exc,
        )
        return Verdict(exchange, refusal=InternalError(), outcome="internal_error")

    def _recorded(self, api: str, verdict: Verdict, started: float) -> Verdict:
        verdict.exchange.record(self.access_log, verdict.status, verdict.outcome, started)
        metrics.CHECKS.add((api, verdict.outcome))
        return verdict


def _exchange(
    method: str, headers: CIMultiDictProxy[str], client: ClientAddress, request_id: str
) -> Exchange:
    """The record of one check, as the proxy keeps one per request."""
    return Exchange(request_id, method, client=client.ip, user_agent=headers.get("User-Agent"))
