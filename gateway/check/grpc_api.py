"""Envoy's gRPC external authorization: `envoy.service.auth.v3.Authorization/Check` on
`listen.check_grpc`, with grpcio's asyncio server in the worker's own event loop (the
decision shares the worker's key state, caches and rate-limit client with the proxy).

The original request is `attributes.request.http`: method, path (with its query), and the
headers (`header_map` when Envoy sends `encode_raw_headers: true`, else the `headers`
map, whose repeated fields Envoy has joined with commas). The client address is Envoy's
view of the downstream peer (`attributes.source`).

Admitted -> OK with the identity in `headers` (overwriting), the client's own `X-Keygate-*`
in any spelling in `headers_to_remove`, RateLimit-* in `response_headers_to_add`.
Refused -> a non-OK status with the proxy's HTTP status, headers and JSON body.
"""

from __future__ import annotations

import logging

import grpc
from envoy.config.core.v3.base_pb2 import HeaderValue, HeaderValueOption
from envoy.service.auth.v3 import external_auth_pb2 as pb
from envoy.service.auth.v3.external_auth_pb2_grpc import (
    AuthorizationServicer,
    add_AuthorizationServicer_to_server,
)
from envoy.type.v3.http_status_pb2 import HttpStatus
from google.rpc import code_pb2, status_pb2
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.auth.authenticate import Headers
from gateway.auth.errors import Refusal
from gateway.check.decide import Checker, Verdict, forged_identity
from gateway.config import ServerConfig
from gateway.observability.request_ids import request_id as make_request_id
from gateway.proxy.client_address import ClientAddress
from gateway.proxy.framing import check_header_size
from gateway.proxy.responses import refusal_response

log = logging.getLogger("keygate")
OVERWRITE = HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
# The gRPC status of a refusal, by its HTTP status (Envoy answers the client with the
# HTTP status in denied_response; the gRPC code is for Envoy's logs and stats).
GRPC_CODES = {
    400: code_pb2.INVALID_ARGUMENT,
    401: code_pb2.UNAUTHENTICATED,
    403: code_pb2.PERMISSION_DENIED,
    404: code_pb2.NOT_FOUND,
    429: code_pb2.RESOURCE_EXHAUSTED,
    431: code_pb2.INVALID_ARGUMENT,
    503: code_pb2.UNAVAILABLE,
}


def _header_pairs(
    http: pb.attribute__context__pb2.AttributeContext.HttpRequest,
) -> list[tuple[str, str]]:
    """The original request's header fields, pseudo-headers (`:path`, …) left out."""
    if http.header_map.headers:
        pairs = [(h.key, h.value or h.raw_value.decode("latin-1")) for h in http.header_map.headers]
    else:
        pairs = list(http.headers.items())
    return [(name, value) for name, value in pairs if not name.startswith(":")]


def _options(headers: Headers) -> list[HeaderValueOption]:
    return [
        HeaderValueOption(header=HeaderValue(key=name, value=value), append_action=OVERWRITE)
        for name, value in headers
    ]


class EnvoyAuthorization(AuthorizationServicer):  # type: ignore[misc]  # generated, untyped
    def __init__(self, checker: Checker, server: ServerConfig) -> None:
        self.checker = checker
        self.server = server

    async def Check(
        self,
        request: pb.CheckRequest,
        context: grpc.aio.ServicerContext[pb.CheckRequest, pb.CheckResponse],
    ) -> pb.CheckResponse:
        attributes = request.attributes
        http = attributes.request.http
        pairs = _header_pairs(http)
        headers = CIMultiDictProxy(CIMultiDict(pairs))
        request_id = make_request_id(headers.get("x-request-id"))
        source = attributes.source.address.socket_address.address or None
        client = ClientAddress(source, source)
        raw = [
            (name.encode("latin-1", "replace"), value.encode("latin-1", "replace"))
            for name, value in pairs
        ]
        try:
            check_header_size(
                raw,
                max_count=self.server.max_header_count,
                max_bytes=self.server.max_header_bytes,
            )
        except Refusal as refusal:  # 431, as the proxy listener's header limit
            return _denied(refusal, request_id)
        verdict = await self.checker.check(
            "envoy_grpc", http.method, http.path, headers, client, request_id
        )
        return _answer(verdict, headers, request_id)


def _answer(verdict: Verdict, headers: CIMultiDictProxy[str], request_id: str) -> pb.CheckResponse:
    if verdict.refusal is not None:
        return _denied(verdict.refusal, request_id)
    return pb.CheckResponse(
        status=status_pb2.Status(code=code_pb2.OK),
        ok_response=pb.OkHttpResponse(
            headers=_options(verdict.identity),
            headers_to_remove=forged_identity(tuple(headers.keys()), verdict.identity),
            response_headers_to_add=_options(verdict.limits),
        ),
    )


def _denied(refusal: Refusal, request_id: str) -> pb.CheckResponse:
    response = refusal_response(refusal, request_id)
    return pb.CheckResponse(
        status=status_pb2.Status(
            code=GRPC_CODES.get(refusal.status, code_pb2.INTERNAL), message=refusal.code
        ),
        denied_response=pb.DeniedHttpResponse(
            status=HttpStatus(code=refusal.status),
            headers=_options(tuple(response.headers.items())),
            body=response.text or "",
        ),
    )


async def start_grpc(
    checker: Checker, server: ServerConfig, address: str, *, shared_port: bool
) -> grpc.aio.Server:
    """Serve Check on `address` (HOST:PORT) in the running event loop."""
    grpc_server = grpc.aio.server(
        options=[
            ("grpc.so_reuseport", 1 if shared_port else 0),
            # A CheckRequest is the request head and a few attributes: bounded like one.
            ("grpc.max_receive_message_length", server.max_header_bytes + 64 * 1024),
        ]
    )
    add_AuthorizationServicer_to_server(EnvoyAuthorization(checker, server), grpc_server)
    if grpc_server.add_insecure_port(address) == 0:
        raise OSError(f"listen.check_grpc: could not bind {address}")
    await grpc_server.start()
    return grpc_server
