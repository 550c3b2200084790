"""Failure class 2 through real gateways: identity header aliases, Forwarded / X-Real-IP,
and `server.trusted_proxies`, asserted on what the recording upstream received.

Two gateways in front of the boundary tests' recording upstream: theirs, which trusts
nobody (the default), and one of this module's that trusts 127.0.0.1/32, the address
every test client connects from.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.boundary.recorded import RawClient, Recorded, canonical, recorded_gateway
from tests.support.recording_upstream import SEEN_HEADER, RecordingUpstream
from tests.support.recording_upstream import Recorded as Seen
from tests.support.stores import Stores

GATEWAY_NAMES = (
    "x-keygate-credential",
    "x-keygate-subject",
    "x-keygate-org",
    "x-keygate-key-id",
    "x-keygate-scopes",
    "x-keygate-env",
    "forwarded",
    "x-real-ip",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-request-id",
    "host",
)


def spellings(name: str) -> list[str]:
    """`name` with each `-` as `-`, `_` or `.`, in upper, lower and title case."""
    parts = name.split("-")
    out: set[str] = set()
    for seps in itertools.product("-_.", repeat=len(parts) - 1):
        joined = parts[0] + "".join(s + p for s, p in zip(seps, parts[1:], strict=True))
        out.update((joined.lower(), joined.upper(), joined.title()))
    return sorted(out)


@pytest.fixture
def untrusting(boundary: Recorded) -> Recorded:
    """The boundary tests' gateway: it trusts no proxy (the default)."""
    return boundary


@pytest.fixture(scope="module")
def trusting(
    stores: Stores, boundary_logs: Path, upstream: RecordingUpstream
) -> Iterator[Recorded]:
    with recorded_gateway(
        stores, boundary_logs, name="trusting", upstream=upstream, trusted_proxies=["127.0.0.1/32"]
    ) as rec:
        yield rec


def send(
    rec: Recorded, fields: list[tuple[str, str]], *, path: str = "/d/x", key: str | None = None
) -> tuple[str, Seen]:
    """One GET with exactly these field lines (plus Host, X-Request-Id and the key);
    returns the request id and what the upstream recorded for it."""
    rid = "id-" + uuid.uuid4().hex
    lines = [
        f"GET {path} HTTP/1.1",
        "Host: public.example",
        f"X-Request-Id: {rid}",
        f"Authorization: Bearer {key or rec.keys.good.secret}",
    ]
    lines += [f"{name}: {value}" for name, value in fields]
    with RawClient(rec.port) as client:
        client.send(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        client.read_until(1)
    assert client.answers, "no answer from the gateway"
    answer = client.answers[0]
    assert answer.status == 200 and answer.one(SEEN_HEADER) == rid, (answer.status, answer.body)
    rec.upstream.settle()
    seen = [r for r in rec.upstream.snapshot()[0] if r.request_id == rid]
    assert len(seen) == 1
    return rid, seen[0]


def by_canonical(seen: Seen) -> dict[str, list[tuple[str, str]]]:
    out: dict[str, list[tuple[str, str]]] = {}
    for name, value in seen.head.fields:
        out.setdefault(canonical(name), []).append((name, value))
    return out


def assert_gateway_identity(
    rec: Recorded, seen: Seen, rid: str, client_ip: str, forwarded_for: str
) -> None:
    fields = by_canonical(seen)
    key = rec.keys.good
    expected = {
        "x-keygate-credential": "key",
        "x-keygate-org": key.org,
        "x-keygate-key-id": key.display_prefix,
        "x-keygate-scopes": " ".join(key.scopes),
        "x-keygate-env": key.env,
        "x-request-id": rid,
        "x-real-ip": client_ip,
        "x-forwarded-for": forwarded_for,
        "x-forwarded-proto": "http",
        "x-forwarded-host": "public.example",
        "host": f"127.0.0.1:{rec.upstream.port}",
    }
    for name, value in expected.items():
        assert [v for _, v in fields.get(name, [])] == [value], (name, fields.get(name))
    node = f'"[{client_ip}]"' if ":" in client_ip else client_ip
    assert [v for _, v in fields["forwarded"]] == [f"for={node};host=public.example;proto=http"]
    keygate = [n for n in fields if n.startswith("x-keygate-")]
    assert sorted(keygate) == [
        "x-keygate-credential",
        "x-keygate-env",
        "x-keygate-key-id",
        "x-keygate-org",
        "x-keygate-scopes",
    ]
    # Every gateway field arrives in one spelling only: its own.
    for name in GATEWAY_NAMES:
        assert all("_" not in n and "." not in n for n, _ in fields.get(name, [])), name
    assert "authorization" not in fields and "x-api-key" not in fields


@pytest.mark.parametrize("name", GATEWAY_NAMES)
def test_no_spelling_of_an_identity_field_reaches_the_upstream(
    untrusting: Recorded, name: str
) -> None:
    # (The client's own Host is read, for X-Forwarded-Host: only its aliases are spoofs.)
    spoofed = [(s, "spoofed") for s in spellings(name) if s.lower() != "host"]
    rid, seen = send(untrusting, spoofed)
    assert not [line for line in seen.head.lines if b"spoofed" in line]
    assert_gateway_identity(untrusting, seen, rid, "127.0.0.1", "127.0.0.1")


def test_forwarded_and_x_real_ip_are_replaced_and_the_chain_dropped(
    untrusting: Recorded,
) -> None:
    rid, seen = send(
        untrusting,
        [
            ("X-Forwarded-For", "198.51.100.7"),
            ("Forwarded", "for=198.51.100.7;proto=https"),
            ("X-Real-IP", "198.51.100.7"),
            ("forwarded", "for=unknown"),
        ],
    )
    assert_gateway_identity(untrusting, seen, rid, "127.0.0.1", "127.0.0.1")


def test_aliases_of_credentials_never_pass_even_where_credentials_are_forwarded(
    untrusting: Recorded,
) -> None:
    secret = untrusting.keys.good.secret
    _, seen = send(
        untrusting,
        [
            ("X_API_KEY", secret),
            ("x.api.key", secret),
            ("Authorization_", "kept"),
            ("Proxy_Authorization", "x"),
        ],
        path="/creds/x",
    )
    fields = by_canonical(seen)
    assert [n for n, _ in fields["authorization"]] == ["Authorization"]
    assert "x-api-key" not in fields and "proxy-authorization" not in fields
    assert [v for _, v in fields["authorization-"]] == ["kept"]  # not an alias: passes


def test_connection_tokens_never_remove_the_gateways_fields(untrusting: Recorded) -> None:
    tokens = ", ".join(
        [
            "keep-alive",
            "X-Keygate-Org",
            "x_keygate_env",
            "X-Request-Id",
            "Forwarded",
            "X-Real-IP",
            "x.forwarded.for",
            "Host",
            "X-Custom",
        ]
    )
    rid, seen = send(
        untrusting, [("Connection", tokens), ("X-Custom", "listed"), ("X_Custom", "listed too")]
    )
    assert_gateway_identity(untrusting, seen, rid, "127.0.0.1", "127.0.0.1")
    assert "x-custom" not in by_canonical(seen)


@pytest.mark.parametrize(
    ("chain", "client", "sent"),
    [
        # The load balancer (127.0.0.1, trusted) appended the real client.
        (["203.0.113.5"], "203.0.113.5", "203.0.113.5, 127.0.0.1"),
        # What the client prepended itself is passed along but never believed.
        (["198.51.100.7, 203.0.113.5"], "203.0.113.5", "198.51.100.7, 203.0.113.5, 127.0.0.1"),
        (["198.51.100.7", "203.0.113.5"], "203.0.113.5", "198.51.100.7, 203.0.113.5, 127.0.0.1"),
        # Trusted hops are skipped; garbage stops the walk at the last trusted hop.
        (["203.0.113.5, 127.0.0.1"], "203.0.113.5", "203.0.113.5, 127.0.0.1, 127.0.0.1"),
        (["203.0.113.5, not-an-ip"], "127.0.0.1", "203.0.113.5, not-an-ip, 127.0.0.1"),
        (["2001:db8::5"], "2001:db8::5", "2001:db8::5, 127.0.0.1"),
        ([], "127.0.0.1", "127.0.0.1"),
    ],
)
def test_trusted_proxies_name_the_client(
    trusting: Recorded, chain: list[str], client: str, sent: str
) -> None:
    rid, seen = send(
        trusting,
        [("X-Forwarded-For", line) for line in chain]
        + [("X_Forwarded_For", "192.0.2.99"), ("X-Real-IP", "192.0.2.99")],
    )
    assert_gateway_identity(trusting, seen, rid, client, sent)


def test_an_untrusted_peer_is_the_client_whatever_it_claims(untrusting: Recorded) -> None:
    rid, seen = send(untrusting, [("X-Forwarded-For", "203.0.113.5")])
    assert_gateway_identity(untrusting, seen, rid, "127.0.0.1", "127.0.0.1")


@pytest.mark.parametrize(
    ("cookies", "forwarded"),
    [
        (["theme=dark; keygate_session=S3cr3t-session; lang=en"], ["theme=dark; lang=en"]),
        (["keygate_session=S3cr3t-session"], []),
        (["keygate_sso=S3cr3t-sso;keygate_session=S3cr3t-session"], []),
        (["a=1", "keygate_session=S3cr3t-session"], ["a=1"]),  # one Cookie line each
        (
            ["keygate_sessionx=kept; b=keygate_session"],
            ["keygate_sessionx=kept; b=keygate_session"],
        ),
    ],
)
def test_the_consoles_cookies_never_reach_the_upstream(
    untrusting: Recorded, cookies: list[str], forwarded: list[str]
) -> None:
    """Cookies keep to a host, not a port: a browser signed in to the console on the admin
    listener sends its session cookie to the proxy listener of the same host. That is a
    Keygate credential (SPEC §10), dropped like Authorization; the upstream's own cookies
    pass unchanged."""
    _, seen = send(untrusting, [("Cookie", c) for c in cookies])
    assert [v for _, v in by_canonical(seen).get("cookie", [])] == forwarded
    assert not [line for line in seen.head.lines if b"S3cr3t" in line]
