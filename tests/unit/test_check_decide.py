"""The pure parts of a check (gateway/check/decide.py): the original request line, the
client behind the asking proxy, and the forged identity fields Envoy must remove."""

from __future__ import annotations

import ipaddress

import pytest

from gateway.auth.errors import Refusal
from gateway.check.decide import check_original, checked_client, forged_identity

LINE = 8190


@pytest.mark.parametrize(
    ("method", "target"),
    [("GET", "/x"), ("PATCH", "/a/b?c=d&e"), ("M-SEARCH", "*"), ("GET", "http://h/x")],
)
def test_request_lines_the_proxy_parses_pass(method: str, target: str) -> None:
    check_original(method, target, LINE)


@pytest.mark.parametrize(
    ("method", "target", "status"),
    [
        ("GET", "/a b", 400),
        ("GET", "/a\x00", 400),
        ("GET", "/caf\u00e9", 400),
        ("GET", "", 400),
        ("GET", "/x#y", 400),
        ("G ET", "/x", 400),
        ("GET/", "/x", 400),
        ("", "/x", 400),
        ("CONNECT", "h:443", 400),
        ("GET", "/" + "a" * LINE, 431),
    ],
)
def test_request_lines_the_proxy_refuses_are_refused(method: str, target: str, status: int) -> None:
    with pytest.raises(Refusal) as refused:
        check_original(method, target, LINE)
    assert refused.value.status == status


TRUSTED = [ipaddress.ip_network("10.0.0.0/8")]


def test_the_asking_proxy_vouches_for_its_own_hop_only() -> None:
    # No X-Forwarded-For: the peer itself (a proxy that sends none).
    assert checked_client("192.0.2.9", (), TRUSTED).ip == "192.0.2.9"
    # The proxy's own hop is believed; a client-written hop before it is not...
    assert checked_client("192.0.2.9", ["6.6.6.6, 203.0.113.5"], ()).ip == "203.0.113.5"
    # ...unless the proxy's hop is itself a trusted proxy (a load balancer in front).
    assert checked_client("192.0.2.9", ["203.0.113.5", "10.1.2.3"], TRUSTED).ip == "203.0.113.5"
    # Garbage in the proxy's hop: the proxy is as far as anyone vouches.
    assert checked_client("192.0.2.9", ["203.0.113.5, not-an-ip"], TRUSTED).ip == "192.0.2.9"


def test_forged_identity_lists_every_spelling_but_the_names_set() -> None:
    identity = (("X-Keygate-Org", "acme"), ("X-Keygate-Scopes", "read"))
    names = [
        "X-Keygate-Org",
        "x-keygate-scopes",
        "X_Keygate_Org",
        "x.keygate.scopes",
        "X-KEYGATE-SUBJECT",
        "x-keygate_subject",
        "X-Keygateway",
        "Authorization",
        "X_Keygate_Org",
    ]
    assert forged_identity(names, identity) == (
        "x_keygate_org",
        "x.keygate.scopes",
        "x-keygate-subject",
        "x-keygate_subject",
    )
