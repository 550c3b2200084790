"""User tokens' dense rules as tables: which credentials are tokens, the header checks, the
claims, scopes claims, revocation coverage, key/algorithm fit, and the config section."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from joserfc.jwk import ECKey, Key, OctKey, OKPKey, RSAKey

from gateway.auth import token_claims as c
from gateway.auth.errors import ExpiredToken, InvalidToken, Refusal
from gateway.auth.jwks import key_fits
from gateway.auth.token_revocations import Revocations
from gateway.config import ConfigError, UserTokenIssuer, parse_config
from gateway.store.token_revocations import TokenRevocation, parse_message

ISSUER = UserTokenIssuer("https://idp.example.com/", "api", leeway=30)
NOW = 1_800_000_000.0


def seg(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


@pytest.mark.parametrize(
    ("credential", "shape"),
    [
        ("aaa.bbb.ccc", "jws"),
        ("aaa.bbb.", "jws"),  # unsigned: still a token, refused as one
        ("a.b.c.d.e", "jwe"),
        ("kg_live_abc.def.ghi.jkl", None),  # three dots: a (bad) key
        ("kg_live_a1B2c3D4" + "x" * 38, None),
        (".bbb.ccc", None),
        ("aa a.bbb.ccc", None),
        ("aaa.b+b.ccc", None),
        ("a.b", None),
    ],
)
def test_token_shape(credential: str, shape: str | None) -> None:
    assert c.token_shape(credential) == shape


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("x" * 9000 + ".a.b", c.TOO_LARGE),
        ("a.b.c.d.e", c.ENCRYPTED),
        (f"{seg({'alg': 'RSA-OAEP', 'enc': 'A256GCM'})}.{seg({})}.x", c.ENCRYPTED),
        (f"{seg({'alg': 'none'})}.{seg({})}.", c.ALGORITHM),
        (f"{seg({'alg': 'NONE'})}.{seg({})}.", c.ALGORITHM),
        (f"{seg({})}.{seg({})}.x", c.ALGORITHM),
        (f"{seg({'alg': 'RS256', 'crit': ['b64']})}.{seg({})}.x", c.CRITICAL),
        (f"{seg({'alg': 'RS256', 'kid': 7})}.{seg({})}.x", c.UNKNOWN_KEY),
        (f"{seg([1])}.{seg({})}.x", c.MALFORMED),
        ("bm90IGpzb24.e30.x", c.MALFORMED),
    ],
)
def test_header_refusals(token: str, reason: str) -> None:
    with pytest.raises(InvalidToken) as refused:
        c.read_unverified(token)
    assert refused.value.message == reason


def test_trusted_issuer_and_algorithm() -> None:
    issuers = {ISSUER.issuer: ISSUER}
    ok = c.read_unverified(f"{seg({'alg': 'RS256'})}.{seg({'iss': ISSUER.issuer})}.x")
    assert c.trusted_issuer(ok, issuers) is ISSUER
    for header, body, reason in [
        ({"alg": "RS256"}, {"iss": "https://idp.example.com"}, c.UNTRUSTED_ISSUER),  # no slash
        ({"alg": "RS256"}, {}, c.UNTRUSTED_ISSUER),
        ({"alg": "HS256"}, {"iss": ISSUER.issuer}, c.ALGORITHM),
        ({"alg": "PS256"}, {"iss": ISSUER.issuer}, c.ALGORITHM),  # not in the allow-list
    ]:
        with pytest.raises(InvalidToken) as refused:
            c.trusted_issuer(c.read_unverified(f"{seg(header)}.{seg(body)}.x"), issuers)
        assert refused.value.message == reason


def claims(**changes: Any) -> dict[str, Any]:
    base = {
        "iss": ISSUER.issuer,
        "aud": "api",
        "sub": "ada",
        "org": "acme",
        "scope": "read write",
        "exp": NOW + 60,
        "iat": NOW - 10,
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


@pytest.mark.parametrize(
    ("changes", "refusal", "reason"),
    [
        ({"iss": "https://other/"}, InvalidToken, c.UNTRUSTED_ISSUER),
        ({"aud": "other"}, InvalidToken, c.AUDIENCE),
        ({"aud": ["other", "more"]}, InvalidToken, c.AUDIENCE),
        ({"aud": None}, InvalidToken, c.AUDIENCE),
        ({"exp": None}, InvalidToken, c.NO_EXPIRY),
        ({"exp": "soon"}, InvalidToken, c.NO_EXPIRY),
        ({"exp": True}, InvalidToken, c.NO_EXPIRY),
        ({"exp": float("inf")}, InvalidToken, c.NO_EXPIRY),
        ({"exp": NOW - 30}, ExpiredToken, ExpiredToken.message),  # leeway used up
        ({"nbf": NOW + 31}, InvalidToken, c.NOT_YET_VALID),
        ({"iat": NOW + 31}, InvalidToken, c.ISSUED_IN_FUTURE),
        ({"sub": ""}, InvalidToken, c.SUBJECT),
        ({"sub": "a\r\nX-Evil: 1"}, InvalidToken, c.SUBJECT),
        ({"sub": "é"}, InvalidToken, c.SUBJECT),
        ({"sub": "x" * 256}, InvalidToken, c.SUBJECT),
        ({"org": None}, InvalidToken, c.NO_ORG),
        ({"org": "Acme Inc"}, InvalidToken, c.NO_ORG),
        ({"scope": 7}, InvalidToken, c.SCOPES),
        ({"scope": ["read", 7]}, InvalidToken, c.SCOPES),
    ],
)
def test_claim_refusals(changes: dict[str, Any], refusal: type[Refusal], reason: str) -> None:
    with pytest.raises(refusal) as refused:
        c.identity_from_claims(claims(**changes), ISSUER, NOW)
    assert refused.value.message == reason


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"aud": ["other", "api"]},
        {"exp": NOW - 29},  # within the leeway
        {"nbf": NOW + 29},
        {"iat": None},
    ],
)
def test_claims_accepted(changes: dict[str, Any]) -> None:
    identity = c.identity_from_claims(claims(**changes), ISSUER, NOW)
    assert (identity.subject, identity.org, identity.scopes) == ("ada", "acme", ("read", "write"))
    assert dict(identity.headers)["X-Keygate-Credential"] == "user"
    assert identity.id == c.subject_id(ISSUER.issuer, "ada") and identity.id.startswith("user:")


@pytest.mark.parametrize(
    ("value", "scopes"),
    [
        (None, ()),
        ("", ()),
        ("read  write read", ("read", "write")),
        (["read", "workflows:*"], ("read", "workflows:*")),
        (["ok", 'no"quote', "no\\slash", "tab\tno"], ("ok",)),
    ],
)
def test_scopes_claim(value: Any, scopes: tuple[str, ...]) -> None:
    assert c.scopes_of(value) == scopes


def identity(issued_at: float | None, issuer: str = ISSUER.issuer) -> c.UserIdentity:
    return c.UserIdentity.of(issuer, "ada", "acme", (), NOW + 60, issued_at, 0)


@pytest.mark.parametrize(
    ("revocation_issuer", "token_issuer", "issued_at", "revoked"),
    [
        ("", ISSUER.issuer, NOW - 1, True),
        ("", ISSUER.issuer, NOW, True),  # the same second: refused (it may precede)
        ("", ISSUER.issuer, NOW + 1, False),  # issued after: works again
        ("", ISSUER.issuer, None, True),  # no iat: cannot show it came later
        (ISSUER.issuer, ISSUER.issuer, NOW - 1, True),
        ("https://other/", ISSUER.issuer, NOW - 1, False),
    ],
)
def test_revocation_coverage(
    revocation_issuer: str, token_issuer: str, issued_at: float | None, revoked: bool
) -> None:
    revocations = Revocations(db=None)  # type: ignore[arg-type]
    revocations.apply(TokenRevocation("acme", revocation_issuer, "ada", NOW, 1))
    assert revocations.revoked(identity(issued_at, token_issuer)) is revoked
    assert not revocations.revoked(
        c.UserIdentity.of(token_issuer, "bob", "acme", (), NOW, NOW - 99, 0)
    )


def test_revocations_never_move_back_and_messages_round_trip() -> None:
    heard: list[TokenRevocation] = []
    revocations = Revocations(db=None, on_revoked=heard.append)  # type: ignore[arg-type]
    later = TokenRevocation("acme", "", "ada", NOW, 2)
    assert revocations.apply(later)
    assert not revocations.apply(TokenRevocation("acme", "", "ada", NOW - 100, 1))
    assert revocations.version == 2 and heard == [later]
    assert parse_message(later.message()) == later
    for junk in ("", "{}", "[1]", '{"v": "x", "org": "a", "iss": "", "sub": "s", "before": 1}'):
        assert parse_message(junk) is None


def test_key_fits_algorithm() -> None:
    rsa = RSAKey.generate_key(2048)
    ec256 = ECKey.generate_key("P-256")
    ec384 = ECKey.generate_key("P-384")
    okp = OKPKey.generate_key("Ed25519")
    oct_key = OctKey.generate_key(256)
    enc = RSAKey.import_key({**rsa.as_dict(private=False), "use": "enc"})
    pinned = RSAKey.import_key({**rsa.as_dict(private=False), "alg": "PS256"})
    table: list[tuple[Key, str, bool]] = [
        (rsa, "RS256", True),
        (rsa, "PS512", True),
        (rsa, "ES256", False),
        (rsa, "HS256", False),
        (oct_key, "HS256", False),  # never: HS* is not an accepted algorithm
        (ec256, "ES256", True),
        (ec256, "ES384", False),
        (ec384, "ES384", True),
        (okp, "EdDSA", True),
        (okp, "ES256", False),
        (enc, "RS256", False),
        (pinned, "RS256", False),
        (pinned, "PS256", True),
        (rsa, "none", False),
    ]
    for key, alg, fits in table:
        assert key_fits(key, alg) is fits, (key.key_type, alg)


ROUTES = "upstreams: {u: {url: 'http://127.0.0.1:9'}}\nroutes: [{path: /x, upstream: u}]\n"


@pytest.mark.parametrize(
    ("section", "path", "line", "words"),
    [
        ("user_tokens: {issuer: x}", "user_tokens", 3, "list"),
        ("user_tokens:\n  - {audience: a}", "user_tokens[0].issuer", 4, "required"),
        ("user_tokens:\n  - {issuer: 'https://i/'}", "user_tokens[0].audience", 4, "required"),
        (
            "user_tokens:\n  - issuer: 'http://idp.example.com'\n    audience: a",
            "user_tokens[0].issuer",
            4,
            "https",
        ),
        (
            "user_tokens:\n  - issuer: 'https://i/'\n    audience: a\n    jwks_url: 'http://10.0.0.1/j'",
            "user_tokens[0].jwks_url",
            6,
            "https",
        ),
        (
            "user_tokens:\n  - issuer: 'https://i/'\n    audience: a\n    algorithms: [none]",
            "user_tokens[0].algorithms",
            6,
            "never",
        ),
        (
            "user_tokens:\n  - issuer: 'https://i/'\n    audience: a\n    algorithms: [HS256]",
            "user_tokens[0].algorithms",
            6,
            "not supported",
        ),
        (
            "user_tokens:\n  - issuer: 'https://i/'\n    audience: a\n    algorithms: [RS1]",
            "user_tokens[0].algorithms",
            6,
            "not one of",
        ),
        (
            "user_tokens:\n  - issuer: 'https://i/'\n    audience: a\n    leeway: 1h",
            "user_tokens[0].leeway",
            6,
            "at most",
        ),
        (
            "user_tokens:\n  - issuer: 'https://i/'\n    audience: a\n    colour: red",
            "user_tokens[0].colour",
            6,
            "unknown field",
        ),
        (
            "user_tokens:\n  - {issuer: 'https://i/', audience: a}\n"
            "  - {issuer: 'https://i/', audience: b}",
            "user_tokens[1].issuer",
            5,
            "already",
        ),
    ],
)
def test_config_errors_name_field_and_line(section: str, path: str, line: int, words: str) -> None:
    with pytest.raises(ConfigError) as failed:
        parse_config(ROUTES + section + "\n", "t.yaml", {})
    found = [p for p in failed.value.problems if p.path == path]
    assert found, failed.value.problems
    assert found[0].line == line and words in found[0].message, found[0]


def test_config_loopback_http_and_defaults() -> None:
    config = parse_config(
        ROUTES + "user_tokens:\n  - {issuer: 'http://127.0.0.1:9000', audience: a}\n", "t", {}
    )
    (issuer,) = config.user_tokens
    assert issuer.jwks_url is None and issuer.algorithms == ("RS256", "ES256")
    assert (issuer.org_claim, issuer.scopes_claim, issuer.leeway) == ("org", "scope", 30.0)
