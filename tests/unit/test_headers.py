"""Header rules (gateway.proxy.headers): names are compared case-insensitively."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.proxy.headers import downstream_response_headers, upstream_request_headers


def _upstream(*pairs: tuple[str, str], forward_credentials: bool = False) -> list[str]:
    out = upstream_request_headers(
        CIMultiDictProxy(CIMultiDict(pairs)), forward_credentials=forward_credentials,
        identity=(("X-Keygate-Org", "acme"),), request_id="rid", client_ip="192.0.2.1",
        scheme="https", host="upstream:9000",
    )
    return [f"{name.lower()}: {value}" for name, value in out.items()]


@pytest.mark.parametrize("name", ["Authorization", "authorization", "AUTHORIZATION"])
def test_credentials_are_dropped_in_any_spelling(name: str) -> None:
    assert _upstream((name, "Bearer k"), ("x-API-key", "k")) == [
        "host: upstream:9000", "x-keygate-org: acme", "x-request-id: rid",
        "x-forwarded-for: 192.0.2.1", "x-forwarded-proto: https",
    ]


def test_credentials_are_kept_when_the_route_forwards_them() -> None:
    kept = _upstream(("authorization", "Bearer k"), ("X-Api-Key", "k"), forward_credentials=True)
    assert "authorization: Bearer k" in kept and "x-api-key: k" in kept


@pytest.mark.parametrize(
    "pair",
    [
        ("proxy-connection", "keep-alive"), ("Proxy-Authorization", "Basic eA=="),
        ("TE", "trailers"), ("te", "trailers"), ("KEEP-ALIVE", "5"), ("x-drop", "listed"),
        ("X-KEYGATE-ORG", "spoofed"), ("x-keygate-anything", "1"), ("EXPECT", "100-continue"),
    ],
)
def test_hop_by_hop_listed_and_spoofed_fields_never_pass(pair: tuple[str, str]) -> None:
    sent = _upstream(("Connection", "close, X-DROP"), pair, ("Accept", "*/*"))
    assert f"{pair[0].lower()}: {pair[1]}" not in sent
    assert "accept: */*" in sent
    assert [h for h in sent if h.startswith("x-keygate-org")] == ["x-keygate-org: acme"]


def test_replaced_fields_get_the_gateways_values_whatever_the_client_spelling() -> None:
    sent = _upstream(("host", "public.example"), ("x-request-id", "client"),
                     ("X-FORWARDED-PROTO", "http"), ("x-forwarded-host", "spoof"),
                     ("X-Forwarded-For", "203.0.113.9"))
    assert sent == [
        "host: upstream:9000", "x-keygate-org: acme", "x-request-id: rid",
        "x-forwarded-for: 203.0.113.9, 192.0.2.1", "x-forwarded-proto: https",
        "x-forwarded-host: public.example",
    ]


def test_response_hop_by_hop_and_own_fields_are_dropped_in_any_spelling() -> None:
    upstream = CIMultiDictProxy(CIMultiDict([
        ("connection", "x-hop"), ("X-HOP", "1"), ("keep-alive", "5"), ("SERVER", "nginx/1"),
        ("x-request-id", "theirs"), ("Content-Type", "text/plain"),
    ]))
    out = downstream_response_headers(upstream, "rid")
    assert list(out.items()) == [("Content-Type", "text/plain"), ("X-Request-Id", "rid")]
