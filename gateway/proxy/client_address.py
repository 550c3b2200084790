"""Who the client is: the TCP peer, or what trusted proxies in front of the gateway say.

Pure, no I/O. `X-Forwarded-For` is believed only as far as it was written by proxies in
`server.trusted_proxies`: walking the chain from the right (the hop nearest the gateway),
every trusted address is skipped and the first untrusted one is the client. Anything to
its left was written by the client itself and proves nothing. An entry that is not an IP
address stops the walk: the client is then the last trusted hop, because a proxy that
writes garbage (or passes the client's garbage through) cannot vouch for what lies
beyond it.

The resolved address is what the upstream sees in `X-Real-IP` and `Forwarded`, what the
wrong-secret limiter is keyed by, and what the access log would record.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class ClientAddress:
    """The resolved client and the `X-Forwarded-For` value to send upstream.

    `ip` is None only when the peer is unknown (no TCP peer address); `forwarded_for`
    is None when there is nothing to send.
    """

    ip: str | None
    forwarded_for: str | None


def client_address(
    peer: str | None, forwarded_for: Sequence[str], trusted: Sequence[Network]
) -> ClientAddress:
    """The client behind `peer`, given the `X-Forwarded-For` field lines it sent.

    From an untrusted peer the client's chain is dropped: the client is the peer and the
    chain sent upstream is just the peer. From a trusted peer the chain received is kept
    and the peer appended.
    """
    if peer is None:
        return ClientAddress(None, None)
    if not trusted:  # the common deployment: no parsing at all
        return ClientAddress(peer, peer)
    peer_ip, peer_trusted = _classify(peer, tuple(trusted))
    if not peer_trusted:
        return ClientAddress(peer, peer)
    received = ", ".join(v.strip() for v in forwarded_for if v.strip())
    chain = f"{received}, {peer}" if received else peer
    client = peer_ip
    for entry in reversed(received.split(",")) if received else ():
        hop, hop_trusted = _classify(entry.strip(), tuple(trusted))
        if hop is None:
            break  # garbage: the last trusted hop is as far as anyone vouches
        client = hop
        if not hop_trusted:
            break
    return ClientAddress(client, chain)


@functools.lru_cache(maxsize=4096)
def _classify(text: str, trusted: tuple[Network, ...]) -> tuple[str | None, bool]:
    """(the address in canonical form or None, whether it is trusted): parsing and
    matching cost microseconds, and the same few proxies and clients recur."""
    ip = parse_ip(text)
    if ip is None:
        return None, False
    return str(ip), _is_trusted(ip, trusted)


def parse_ip(text: str) -> IPAddress | None:
    """An IP address as proxies write it (`192.0.2.1`, `2001:db8::1`, `[2001:db8::1]`),
    IPv4-mapped IPv6 as its IPv4 address; None for anything else (ports included)."""
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _is_trusted(ip: IPAddress, trusted: Iterable[Network]) -> bool:
    # `in` across address families is simply False, so mixed lists need no sorting.
    return any(ip in network for network in trusted)


def forwarded_node(ip: str | None) -> str:
    """The RFC 7239 §6 node for `for=`: IPv4 as a token, IPv6 quoted in brackets."""
    if ip is None:
        return "unknown"
    if ":" in ip:
        return f'"[{ip}]"'
    return ip
