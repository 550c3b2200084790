"""Ask one request's decision the way each proxy does, and read every answer alike.

- proxy: the request itself through the proxy listener (allowed: what the echo upstream saw)
- envoy: Envoy's HTTP ext_authz check request — the original method, `/envoy` + the
  original path and query, the original headers (those `allowed_headers` lets through)
- envoy_grpc: a `CheckRequest` built from Envoy's own messages (xds-protos), with the
  headers map as Envoy fills it (lower-case names, repeated fields joined by ",")
- nginx: `auth_request` — GET /nginx with X-Original-Method / X-Original-URI
- forward_auth: Traefik/Caddy — GET /forward-auth with X-Forwarded-Method/-Uri/-Host
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import grpc
from envoy.config.core.v3.address_pb2 import Address, SocketAddress
from envoy.service.auth.v3 import attribute_context_pb2 as ac
from envoy.service.auth.v3 import external_auth_pb2 as pb
from envoy.service.auth.v3.external_auth_pb2_grpc import AuthorizationStub
from yarl import URL

from tests.support.gateway_process import GatewayProcess

APIS = ("proxy", "envoy", "envoy_grpc", "nginx", "forward_auth")
CHECK_APIS = APIS[1:]


@dataclass
class Answer:
    """One decision as any API reports it: status, error code, and the identity
    (X-Keygate-* pairs, lower-case names) the upstream gets when allowed."""

    status: int
    code: str | None
    identity: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)  # the answer's own (lower-case)
    body: dict[str, Any] | None = None
    to_remove: tuple[str, ...] = ()  # Envoy: the client's X-Keygate-* to strip


def _identity(pairs: Any) -> dict[str, str]:
    return {k.lower(): v for k, v in pairs if k.lower().startswith("x-keygate-")}


def _error(body: bytes) -> tuple[str | None, dict[str, Any] | None]:
    if not body:
        return None, None
    doc = json.loads(body)
    return doc["error"]["code"], doc


class Asker:
    def __init__(
        self, gw: GatewayProcess, http: aiohttp.ClientSession, channel: grpc.aio.Channel
    ) -> None:
        self.gw = gw
        self.http = http
        self.grpc = AuthorizationStub(channel)

    async def ask(
        self, api: str, method: str, target: str, headers: Mapping[str, str] | None = None
    ) -> Answer:
        headers = dict(headers or {})
        if api == "proxy":
            return await self._proxy(method, target, headers)
        if api == "envoy_grpc":
            return await self.grpc_check(method, target, headers)
        if api == "envoy":
            url, check_method = self.gw.check_url + "/envoy" + target, method
        elif api == "nginx":
            url, check_method = self.gw.check_url + "/nginx", "GET"
            headers |= {"X-Original-Method": method, "X-Original-URI": target}
        elif api == "forward_auth":
            url, check_method = self.gw.check_url + "/forward-auth", "GET"
            headers |= {
                "X-Forwarded-Method": method,
                "X-Forwarded-Uri": target,
                "X-Forwarded-Host": "api.example.com",
                "X-Forwarded-Proto": "https",
            }
        else:
            raise ValueError(api)
        async with self.http.request(
            check_method, URL(url, encoded=True), headers=headers
        ) as reply:
            body = await reply.read()
            code, doc = _error(body)
            own = {k.lower(): v for k, v in reply.headers.items()}
            removed = own.get("x-envoy-auth-headers-to-remove", "")
            return Answer(
                reply.status,
                code,
                _identity(reply.headers.items()) if reply.status == 200 else {},
                own,
                doc,
                tuple(n for n in removed.split(",") if n),
            )

    async def _proxy(self, method: str, target: str, headers: dict[str, str]) -> Answer:
        url = URL(self.gw.url + target, encoded=True)
        async with self.http.request(method, url, headers=headers) as reply:
            body = await reply.read()
            own = {k.lower(): v for k, v in reply.headers.items()}
            if reply.status == 200 and method != "HEAD":
                seen = json.loads(body)["headers"]  # the echo upstream's report
                return Answer(200, None, _identity(seen), own)
            code, doc = _error(body)
            return Answer(reply.status, code, {}, own, doc)

    async def grpc_check(
        self,
        method: str,
        target: str,
        headers: Mapping[str, str],
        *,
        source: str = "203.0.113.7",
    ) -> Answer:
        joined: dict[str, str] = {}
        for name, value in headers.items():  # as Envoy fills the map
            key = name.lower()
            joined[key] = f"{joined[key]},{value}" if key in joined else value
        joined |= {":method": method, ":path": target, ":authority": "api.example.com"}
        request = pb.CheckRequest(
            attributes=ac.AttributeContext(
                source=ac.AttributeContext.Peer(
                    address=Address(socket_address=SocketAddress(address=source, port_value=50000))
                ),
                request=ac.AttributeContext.Request(
                    http=ac.AttributeContext.HttpRequest(
                        id="1",
                        method=method,
                        path=target,
                        host="api.example.com",
                        scheme="https",
                        protocol="HTTP/1.1",
                        headers=joined,
                    )
                ),
            )
        )
        response = await self.grpc.Check(request, timeout=10)
        return grpc_answer(response)


def grpc_answer(response: pb.CheckResponse) -> Answer:
    if response.status.code == 0:
        ok = response.ok_response
        identity = {o.header.key.lower(): o.header.value for o in ok.headers}
        limits = {o.header.key.lower(): o.header.value for o in ok.response_headers_to_add}
        return Answer(
            200, None, _identity(identity.items()), limits, None, tuple(ok.headers_to_remove)
        )
    denied = response.denied_response
    code, doc = _error(denied.body.encode())
    own = {o.header.key.lower(): o.header.value for o in denied.headers}
    return Answer(denied.status.code, code, {}, own, doc)
