"""Client address resolution (gateway.proxy.client_address): a table of chains and peers."""

from __future__ import annotations

import ipaddress

import pytest

from gateway.proxy.client_address import (
    ClientAddress,
    client_address,
    forwarded_node,
    parse_ip,
)

LB = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8"))
LOOPBACK = (ipaddress.ip_network("127.0.0.1/32"),)

CASES = [
    # (peer, X-Forwarded-For lines, trusted, client ip, X-Forwarded-For sent upstream)
    # No trusted proxies: the peer, whatever the client claims.
    ("192.0.2.7", [], (), "192.0.2.7", "192.0.2.7"),
    ("192.0.2.7", ["203.0.113.1"], (), "192.0.2.7", "192.0.2.7"),
    ("2001:db8::7", ["203.0.113.1, 10.0.0.1"], (), "2001:db8::7", "2001:db8::7"),
    # An untrusted peer's chain is dropped even when trusted proxies are configured.
    ("192.0.2.7", ["10.0.0.1"], LB, "192.0.2.7", "192.0.2.7"),
    ("192.0.2.7", ["garbage"], LB, "192.0.2.7", "192.0.2.7"),
    # A trusted peer: the rightmost untrusted entry is the client; the chain is kept.
    ("10.0.0.2", ["203.0.113.1"], LB, "203.0.113.1", "203.0.113.1, 10.0.0.2"),
    ("10.0.0.2", ["203.0.113.1, 10.1.2.3"], LB, "203.0.113.1", "203.0.113.1, 10.1.2.3, 10.0.0.2"),
    # Spoofed entries to the left of the real client are ignored (but passed along).
    ("10.0.0.2", ["1.1.1.1, 203.0.113.1"], LB, "203.0.113.1", "1.1.1.1, 203.0.113.1, 10.0.0.2"),
    ("10.0.0.2", ["10.9.9.9, 203.0.113.1"], LB, "203.0.113.1", "10.9.9.9, 203.0.113.1, 10.0.0.2"),
    # Several field lines are one list, in order.
    (
        "10.0.0.2",
        ["1.1.1.1", "203.0.113.1, 10.3.3.3"],
        LB,
        "203.0.113.1",
        "1.1.1.1, 203.0.113.1, 10.3.3.3, 10.0.0.2",
    ),
    # Nothing from the trusted peer: the peer itself is the client.
    ("10.0.0.2", [], LB, "10.0.0.2", "10.0.0.2"),
    ("10.0.0.2", ["", " "], LB, "10.0.0.2", "10.0.0.2"),
    # Every hop trusted: the leftmost one.
    ("10.0.0.2", ["10.5.5.5, 10.6.6.6"], LB, "10.5.5.5", "10.5.5.5, 10.6.6.6, 10.0.0.2"),
    # Garbage stops the walk at the last trusted hop.
    ("10.0.0.2", ["203.0.113.1, nonsense"], LB, "10.0.0.2", "203.0.113.1, nonsense, 10.0.0.2"),
    (
        "10.0.0.2",
        ["203.0.113.1, nonsense, 10.4.4.4"],
        LB,
        "10.4.4.4",
        "203.0.113.1, nonsense, 10.4.4.4, 10.0.0.2",
    ),
    ("10.0.0.2", ["203.0.113.1:4711"], LB, "10.0.0.2", "203.0.113.1:4711, 10.0.0.2"),
    ("10.0.0.2", ["unknown"], LB, "10.0.0.2", "unknown, 10.0.0.2"),
    ("10.0.0.2", ["203.0.113.1,,"], LB, "10.0.0.2", "203.0.113.1,,, 10.0.0.2"),
    ("10.0.0.2", ["256.1.1.1"], LB, "10.0.0.2", "256.1.1.1, 10.0.0.2"),
    # IPv6 in both spellings; canonical form reported.
    ("fd00::2", ["2001:DB8::1"], LB, "2001:db8::1", "2001:DB8::1, fd00::2"),
    ("fd00::2", ["[2001:db8::1]"], LB, "2001:db8::1", "[2001:db8::1], fd00::2"),
    ("fd00::2", ["2001:db8::1, fd12::1"], LB, "2001:db8::1", "2001:db8::1, fd12::1, fd00::2"),
    # Mixed families in one chain.
    ("10.0.0.2", ["2001:db8::1, fd00::9"], LB, "2001:db8::1", "2001:db8::1, fd00::9, 10.0.0.2"),
    # An IPv4-mapped IPv6 peer (dual-stack listener) is matched as its IPv4 address.
    (
        "::ffff:127.0.0.1",
        ["198.51.100.4"],
        LOOPBACK,
        "198.51.100.4",
        "198.51.100.4, ::ffff:127.0.0.1",
    ),
    ("::ffff:192.0.2.7", ["198.51.100.4"], LOOPBACK, "::ffff:192.0.2.7", "::ffff:192.0.2.7"),
    # The usual single load balancer on loopback.
    ("127.0.0.1", ["198.51.100.4"], LOOPBACK, "198.51.100.4", "198.51.100.4, 127.0.0.1"),
    ("127.0.0.2", ["198.51.100.4"], LOOPBACK, "127.0.0.2", "127.0.0.2"),
    # A peer that is not an address at all is never trusted.
    ("not-an-ip", ["198.51.100.4"], LB, "not-an-ip", "not-an-ip"),
]


@pytest.mark.parametrize(("peer", "chain", "trusted", "ip", "sent"), CASES)
def test_client_address(
    peer: str, chain: list[str], trusted: tuple[ipaddress.IPv4Network, ...], ip: str, sent: str
) -> None:
    assert client_address(peer, chain, trusted) == ClientAddress(ip, sent)


def test_unknown_peer_has_no_address_and_sends_no_chain() -> None:
    assert client_address(None, ["198.51.100.4"], LB) == ClientAddress(None, None)
    assert client_address(None, [], ()) == ClientAddress(None, None)


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("192.0.2.1", "192.0.2.1"),
        ("[::1]", "::1"),
        ("::1", "::1"),
        ("::ffff:10.0.0.1", "10.0.0.1"),
        ("fe80::1%eth0", "fe80::1%eth0"),
        ("192.0.2.1:80", None),
        ("[::1]:80", None),
        ("", None),
        ("[]", None),
        ("01.2.3.4", None),
        ("1.2.3", None),
        (" 1.2.3.4", None),
        ("localhost", None),
    ],
)
def test_parse_ip(text: str, parsed: str | None) -> None:
    ip = parse_ip(text)
    assert (str(ip) if ip is not None else None) == parsed


@pytest.mark.parametrize(
    ("ip", "node"),
    [("192.0.2.1", "192.0.2.1"), ("2001:db8::1", '"[2001:db8::1]"'), (None, "unknown")],
)
def test_forwarded_node(ip: str | None, node: str) -> None:
    assert forwarded_node(ip) == node
