"""The relying party's rules on their own, as tables: ID token claims, the algorithm
allow-list, discovery documents, the pending sign-in cookie, and the JWKS cache's refetch on
a key rotation (against a small real HTTP server)."""

from __future__ import annotations

import time
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from joserfc import jwt
from joserfc.jwk import OctKey, RSAKey

from gateway.config import OidcConfig
from gateway.console.oidc import (
    JwksCache,
    OidcClient,
    PendingSignIn,
    ProviderMetadata,
    SsoFailed,
    check_id_token_claims,
    identity_from,
    parse_metadata,
)
from gateway.console.sso import open_pending, seal_pending
from gateway.console.views import safe_next

ISSUER = "https://idp.example.com"
CLIENT = "keygate"
NONCE = "n-0123456789"
NOW = 1_700_000_000


def claims(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "user-1",
        "aud": CLIENT,
        "exp": NOW + 300,
        "iat": NOW - 5,
        "nonce": NONCE,
    }
    for name, value in changes.items():
        if value is None:
            base.pop(name, None)
        else:
            base[name] = value
    return base


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"aud": [CLIENT]},
        {"aud": [CLIENT, "other"], "azp": CLIENT},
        {"azp": CLIENT},
        {"exp": NOW - 30},  # within the leeway
        {"iat": NOW + 30},
    ],
)
def test_claims_accepted(changes: dict[str, Any]) -> None:
    check_id_token_claims(claims(**changes), ISSUER, CLIENT, NONCE, NOW)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"iss": "https://evil.example"}, "iss claim"),
        ({"iss": None}, "iss"),
        ({"sub": None}, "sub"),
        ({"aud": "other"}, "another application"),
        ({"aud": ["other", "third"]}, "another application"),
        ({"aud": [CLIENT, "other"]}, "another application"),  # several audiences: azp needed
        ({"aud": [CLIENT, "other"], "azp": "other"}, "another application"),
        ({"azp": "other"}, "another application"),
        ({"exp": NOW - 120}, "expired"),
        ({"exp": None}, "exp"),
        ({"iat": NOW + 600}, "iat"),
        ({"iat": None}, "iat"),
        ({"nonce": "n-other"}, "nonce mismatch"),
        ({"nonce": None}, "nonce mismatch"),
    ],
)
def test_claims_refused(changes: dict[str, Any], reason: str) -> None:
    with pytest.raises(SsoFailed) as failed:
        check_id_token_claims(claims(**changes), ISSUER, CLIENT, NONCE, NOW)
    assert reason in failed.value.reason


@pytest.mark.parametrize(
    ("verified", "ok"),
    [(True, True), ("true", True), (False, False), ("false", False), (None, False), (1, False)],
)
def test_email_must_be_verified(verified: object, ok: bool) -> None:
    given = {"sub": "u", "email": "Ada@Example.com", "name": " Ada "}
    if verified is not None:
        given["email_verified"] = verified  # type: ignore[assignment]
    if ok:
        person = identity_from(given)
        assert (person.email, person.name) == ("ada@example.com", "Ada")
    else:
        with pytest.raises(SsoFailed, match="has not verified the email address"):
            identity_from(given)


def discovery(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "issuer": ISSUER,
        "authorization_endpoint": ISSUER + "/auth",
        "token_endpoint": ISSUER + "/token",
        "jwks_uri": ISSUER + "/jwks",
        "id_token_signing_alg_values_supported": ["RS256", "HS256", "none"],
        "code_challenge_methods_supported": ["S256"],
    }
    doc.update(changes)
    return {k: v for k, v in doc.items() if v is not None}


def test_discovery_keeps_public_key_algorithms_only() -> None:
    meta = parse_metadata(discovery(), ISSUER + "/")
    assert meta.id_token_algorithms == {"RS256"}
    assert meta.token_auth_methods == ("client_secret_basic",)  # the spec's default
    assert meta.userinfo_endpoint is None


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"issuer": "https://other.example"}, "says its issuer is"),
        ({"issuer": None}, "says its issuer is"),
        ({"token_endpoint": None}, "no valid token_endpoint"),
        ({"jwks_uri": "http://idp.example.com/jwks"}, "jwks_uri is not https"),
        ({"authorization_endpoint": "javascript:alert(1)"}, "no valid authorization_endpoint"),
        ({"code_challenge_methods_supported": ["plain"]}, "PKCE with S256"),
        ({"id_token_signing_alg_values_supported": ["HS256", "none"]}, "no algorithm"),
        ({"token_endpoint_auth_methods_supported": "client_secret_basic"}, "invalid"),
    ],
)
def test_discovery_refused(changes: dict[str, Any], reason: str) -> None:
    with pytest.raises(SsoFailed) as failed:
        parse_metadata(discovery(**changes), ISSUER)
    assert reason in failed.value.reason


def metadata(jwks_uri: str = ISSUER + "/jwks") -> ProviderMetadata:
    return parse_metadata(discovery(jwks_uri=jwks_uri), ISSUER)


@pytest.mark.parametrize("alg", ["none", "HS256"])
async def test_symmetric_or_unsigned_id_tokens_are_refused(alg: str) -> None:
    """Refused from the header alone: no key is fetched, so a provider's public key can
    never be used as an HMAC secret."""
    if alg == "none":
        token = "eyJhbGciOiJub25lIn0." + "eyJzdWIiOiJ4In0" + "."
    else:
        token = jwt.encode({"alg": "HS256"}, claims(), OctKey.generate_key(256))
    async with aiohttp.ClientSession() as session:
        client = OidcClient(OidcConfig(ISSUER, CLIENT, "s"), "https://kg/cb", session)
        with pytest.raises(SsoFailed, match="algorithm Keygate does not accept"):
            await client.verify_id_token(metadata(), token, NONCE)


async def test_unknown_kid_refetches_the_jwks_once() -> None:
    old, new = RSAKey.generate_key(2048), RSAKey.generate_key(2048)
    old.ensure_kid()
    new.ensure_kid()
    published = [old]
    fetches = []

    async def jwks(_: web.Request) -> web.Response:
        fetches.append(time.monotonic())
        return web.json_response({"keys": [k.as_dict(private=False) for k in published]})

    app = web.Application()
    app.router.add_get("/jwks", jwks)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as session:
            cache = JwksCache(session, str(server.make_url("/jwks")), min_refetch_interval=30)
            assert (await cache.key(old.kid, "RS256")).kid == old.kid
            published.append(new)  # the provider rotates its keys
            assert (await cache.key(new.kid, "RS256")).kid == new.kid
            assert len(fetches) == 2
            with pytest.raises(SsoFailed, match="a key the provider does not publish"):
                await cache.key("nobody", "RS256")
            assert len(fetches) == 2  # an unknown kid refetches at most once per 30 s
    finally:
        await server.close()


KEY = OctKey.import_key(b"k" * 32)


def pending(created_at: float = NOW) -> PendingSignIn:
    return PendingSignIn("state", "nonce", "verifier", "/console/orgs/a/keys", created_at)


def test_pending_cookie_round_trip() -> None:
    assert open_pending(seal_pending(pending(), KEY), KEY, NOW + 599) == pending()


@pytest.mark.parametrize(
    ("value", "now", "reason"),
    [
        (None, NOW, "no sign-in was started"),
        ("", NOW, "no sign-in was started"),
        ("garbage", NOW, "altered"),
        ("a.b.c", NOW, "altered"),
        (seal_pending(pending(), OctKey.import_key(b"x" * 32)), NOW, "altered"),
        (seal_pending(pending(), KEY), NOW + 601, "longer than 10 minutes"),
        (seal_pending(pending(), KEY), NOW - 120, "longer than 10 minutes"),
    ],
)
def test_pending_cookie_refused(value: str | None, now: float, reason: str) -> None:
    with pytest.raises(SsoFailed) as failed:
        open_pending(value, KEY, now)
    assert reason in failed.value.reason


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "/console/"),
        ("/console/orgs/a/keys?page=2", "/console/orgs/a/keys?page=2"),
        ("https://evil.example/console/", "/console/"),
        ("//evil.example/console/", "/console/"),
        ("/\\evil.example", "/console/"),
        ("/admin/v1/me", "/console/"),
        ("/console/\r\nSet-Cookie: x=y", "/console/"),
    ],
)
def test_next_path(value: str | None, expected: str) -> None:
    assert safe_next(value) == expected
