"""Header rules (gateway.proxy.headers): names are compared in their canonical form
(any case, `_` and `.` read as `-`), as the upstream stacks that fold them read them."""

from __future__ import annotations

import itertools

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.proxy.client_address import ClientAddress
from gateway.proxy.headers import (
    GATEWAY_SET,
    HOP_BY_HOP,
    MESSAGE_FIELDS,
    canonical,
    downstream_response_headers,
    forwarded_value,
    upstream_request_headers,
)

CLIENT = ClientAddress("192.0.2.1", "192.0.2.1")
GATEWAY_TAIL = [
    "x-keygate-org: acme",
    "x-request-id: rid",
    "x-forwarded-for: 192.0.2.1",
    "x-forwarded-proto: https",
]


def _upstream(
    *pairs: tuple[str, str], forward_credentials: bool = False, client: ClientAddress = CLIENT
) -> list[str]:
    out = upstream_request_headers(
        CIMultiDictProxy(CIMultiDict(pairs)),
        forward_credentials=forward_credentials,
        identity=(("X-Keygate-Org", "acme"),),
        request_id="rid",
        client=client,
        scheme="https",
        host="upstream:9000",
    )
    return [f"{name.lower()}: {value}" for name, value in out.items()]


def _without_address(sent: list[str]) -> list[str]:
    return [h for h in sent if not h.startswith(("x-real-ip:", "forwarded:"))]


def spellings(name: str) -> list[str]:
    """Every way an upstream stack could read as `name`: each `-` as `-`, `_` or `.`,
    in four cases."""
    parts = name.split("-")
    out: set[str] = set()
    for seps in itertools.product("-_.", repeat=len(parts) - 1):
        joined = parts[0] + "".join(s + p for s, p in zip(seps, parts[1:], strict=True))
        out.update((joined, joined.lower(), joined.upper(), joined.title()))
    return sorted(out)


@pytest.mark.parametrize(
    ("name", "folded"),
    [
        ("X_Keygate_Org", "x-keygate-org"),
        ("X.KEYGATE.org", "x-keygate-org"),
        ("x-keygate-org", "x-keygate-org"),
        ("Content_Length", "content-length"),
        ("a.b_c-D", "a-b-c-d"),
    ],
)
def test_canonical(name: str, folded: str) -> None:
    assert canonical(name) == folded


@pytest.mark.parametrize("name", ["Authorization", "authorization", "AUTHORIZATION"])
def test_credentials_are_dropped_in_any_spelling(name: str) -> None:
    sent = _upstream((name, "Bearer k"), ("x-API-key", "k"), ("X_Api_Key", "k"), ("x.api.KEY", "k"))
    assert _without_address(sent) == ["host: upstream:9000", *GATEWAY_TAIL]


def test_credentials_are_kept_when_the_route_forwards_them_but_aliases_never() -> None:
    kept = _upstream(
        ("authorization", "Bearer k"),
        ("X-Api-Key", "k"),
        ("X_API_KEY", "alias"),
        ("x.api.key", "alias"),
        ("Proxy-Authorization", "Basic eA=="),
        forward_credentials=True,
    )
    assert "authorization: Bearer k" in kept and "x-api-key: k" in kept
    assert not [h for h in kept if "alias" in h or h.startswith("proxy")]


IDENTITY_NAMES = [
    "X-Keygate-Org",
    "X-Keygate-Key-Id",
    "X-Keygate-Scopes",
    "X-Keygate-Env",
    "X-Keygate-Anything-New",
    "Forwarded",
    "X-Real-IP",
    "X-Forwarded-For",
    "X-Forwarded-Host",
    "X-Forwarded-Proto",
    "X-Request-Id",
    "Host",
]
# (The client's own Host is read, as X-Forwarded-Host and Forwarded's host=; never passed.)
SPOOFABLE = sorted(
    {s for name in IDENTITY_NAMES for s in spellings(name)} - {"host", "HOST", "Host"}
)


@pytest.mark.parametrize("spelling", SPOOFABLE)
def test_no_spelling_of_an_identity_or_gateway_field_passes(spelling: str) -> None:
    sent = _upstream((spelling, "spoofed"), ("Accept", "*/*"))
    assert not [h for h in sent if "spoofed" in h], sent
    assert "accept: */*" in sent
    assert [h for h in sent if h.startswith("x-keygate-org")] == ["x-keygate-org: acme"]


@pytest.mark.parametrize(
    "spelling",
    sorted(
        {
            s
            for name in HOP_BY_HOP | {"content-length", "content-type", "content-encoding"}
            for s in spellings(name)
            if "_" in s or "." in s
        }
    ),
)
def test_aliases_of_hop_by_hop_and_framing_fields_never_pass(spelling: str) -> None:
    sent = _upstream((spelling, "alias"), ("Accept", "*/*"))
    assert not [h for h in sent if "alias" in h], sent


@pytest.mark.parametrize(
    "pair",
    [
        ("proxy-connection", "keep-alive"),
        ("Proxy-Authorization", "Basic eA=="),
        ("TE", "trailers"),
        ("te", "trailers"),
        ("KEEP-ALIVE", "5"),
        ("x-drop", "listed"),
        ("X_DROP", "listed"),
        ("x.drop", "listed"),
        ("X-KEYGATE-ORG", "spoofed"),
        ("x-keygate-anything", "1"),
        ("EXPECT", "100-continue"),
        ("Upgrade", "h2c"),
    ],
)
def test_hop_by_hop_listed_and_spoofed_fields_never_pass(pair: tuple[str, str]) -> None:
    sent = _upstream(("Connection", "close, X-DROP"), pair, ("Accept", "*/*"))
    assert f"{pair[0].lower()}: {pair[1]}" not in sent
    assert "accept: */*" in sent
    assert [h for h in sent if h.startswith("x-keygate-org")] == ["x-keygate-org: acme"]


def test_a_connection_token_is_compared_canonically() -> None:
    sent = _upstream(
        ("Connection", "x_custom"), ("X-Custom", "1"), ("x.custom", "2"), ("X-Other", "3")
    )
    assert [h for h in sent if h.startswith("x-custom") or h.startswith("x.custom")] == []
    assert "x-other: 3" in sent


@pytest.mark.parametrize(
    "token",
    sorted(
        {
            s
            for name in MESSAGE_FIELDS | GATEWAY_SET | {"x-keygate-org", "x-keygate-env"}
            for s in spellings(name)
        }
    ),
)
def test_a_connection_token_never_removes_framing_or_gateway_fields(token: str) -> None:
    out = upstream_request_headers(
        CIMultiDictProxy(
            CIMultiDict(
                [
                    ("Connection", f"keep-alive, {token}"),
                    ("Host", "public.example"),
                    ("Content-Length", "5"),
                    ("Content-Type", "text/plain"),
                    ("Content-Encoding", "gzip"),
                    ("X-Request-Id", "client-rid"),
                ]
            )
        ),
        forward_credentials=False,
        identity=(("X-Keygate-Org", "acme"), ("X-Keygate-Env", "live")),
        request_id="rid",
        client=CLIENT,
        scheme="http",
        host="upstream:9000",
    )
    assert out.getall("Content-Length") == ["5"]
    assert out.getall("Content-Type") == ["text/plain"]
    assert out.getall("Content-Encoding") == ["gzip"]
    assert out.getall("Host") == ["upstream:9000"]
    assert out.getall("X-Keygate-Org") == ["acme"]
    assert out.getall("X-Keygate-Env") == ["live"]
    assert out.getall("X-Request-Id") == ["rid"]
    assert out.getall("X-Forwarded-For") == ["192.0.2.1"]
    assert out.getall("X-Forwarded-Host") == ["public.example"]
    assert out.getall("X-Real-IP") == ["192.0.2.1"]
    assert len(out.getall("Forwarded")) == 1
    assert "Connection" not in out


def test_gateway_fields_get_the_gateways_values_whatever_the_client_sent() -> None:
    sent = _upstream(
        ("host", "public.example"),
        ("x-request-id", "client"),
        ("X-FORWARDED-PROTO", "http"),
        ("x-forwarded-host", "spoof"),
        ("X-Forwarded-For", "203.0.113.9"),
        ("Forwarded", "for=1.2.3.4"),
        ("X-Real-IP", "1.2.3.4"),
        ("x_real_ip", "1.2.3.4"),
    )
    assert sent == [
        "host: upstream:9000",
        "x-keygate-org: acme",
        "x-request-id: rid",
        "x-forwarded-for: 192.0.2.1",
        "x-forwarded-proto: https",
        "x-forwarded-host: public.example",
        "x-real-ip: 192.0.2.1",
        "forwarded: for=192.0.2.1;host=public.example;proto=https",
    ]


def test_the_chain_sent_is_the_resolved_one() -> None:
    behind_lb = ClientAddress("203.0.113.9", "203.0.113.9, 127.0.0.1")
    sent = _upstream(("X-Forwarded-For", "203.0.113.9"), client=behind_lb)
    assert "x-forwarded-for: 203.0.113.9, 127.0.0.1" in sent
    assert "x-real-ip: 203.0.113.9" in sent
    unknown = _upstream(("X-Forwarded-For", "203.0.113.9"), client=ClientAddress(None, None))
    assert not [h for h in unknown if h.startswith(("x-forwarded-for", "x-real-ip"))]
    assert "forwarded: for=unknown;proto=https" in unknown


@pytest.mark.parametrize(
    ("ip", "host", "scheme", "value"),
    [
        ("192.0.2.1", "api.example", "https", "for=192.0.2.1;host=api.example;proto=https"),
        (
            "2001:db8::1",
            "api.example:8443",
            "http",
            'for="[2001:db8::1]";host="api.example:8443";proto=http',
        ),
        (None, None, "http", "for=unknown;proto=http"),
        ("192.0.2.1", 'a"b\\c', "http", 'for=192.0.2.1;host="a\\"b\\\\c";proto=http'),
        ("192.0.2.1", "[::1]:80", "http", 'for=192.0.2.1;host="[::1]:80";proto=http'),
    ],
)
def test_forwarded_value(ip: str | None, host: str | None, scheme: str, value: str) -> None:
    assert forwarded_value(ip, host, scheme) == value


def test_response_hop_by_hop_and_own_fields_are_dropped_in_any_spelling() -> None:
    upstream = CIMultiDictProxy(
        CIMultiDict(
            [
                ("connection", "x-hop, content-length, Content_Type"),
                ("X-HOP", "1"),
                ("X_Hop", "1"),
                ("keep-alive", "5"),
                ("Keep_Alive", "5"),
                ("Transfer.Encoding", "chunked"),
                ("SERVER", "nginx/1"),
                ("x-request-id", "theirs"),
                ("X_Request_Id", "theirs"),
                ("Content-Type", "text/plain"),
                ("Content-Length", "3"),
                ("X_Custom", "kept"),
            ]
        )
    )
    out = downstream_response_headers(upstream, "rid")
    assert list(out.items()) == [
        ("Content-Type", "text/plain"),
        ("Content-Length", "3"),
        ("X_Custom", "kept"),
        ("X-Request-Id", "rid"),
    ]
