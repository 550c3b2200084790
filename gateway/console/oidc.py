"""OpenID Connect sign-in for the console (SPEC §10): a relying party for the authorization
code flow with PKCE (S256), checked state and nonce, and a verified `email` claim.

Who does what: Authlib's protocol helpers build the pieces of the OAuth exchange (random
tokens, the S256 code challenge, the authorization URI, the token request body and its
client authentication), joserfc verifies the ID token (JWS signature by a key from the
provider's JWKS, then the registered claims), and aiohttp carries every request through one
ClientSession with bounded timeouts. What this module adds is the OpenID Connect rules that
neither library applies on its own: discovery with an exact issuer match, the algorithm
allow-list, `aud`/`azp`/`nonce`, the userinfo `sub` check and `email_verified`.

Every refusal is an `SsoFailed` whose reason is a sentence for the person signing in.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from authlib.common.security import generate_token  # type: ignore[import-untyped]
from authlib.oauth2.auth import ClientAuth  # type: ignore[import-untyped]
from authlib.oauth2.rfc6749.parameters import (  # type: ignore[import-untyped]
    prepare_grant_uri,
    prepare_token_request,
)
from authlib.oauth2.rfc7636 import create_s256_code_challenge  # type: ignore[import-untyped]
from joserfc import jws, jwt
from joserfc.errors import ExpiredTokenError, JoseError
from joserfc.jwt import JWTClaimsRegistry

# The JWKS cache and the bounded JSON fetch are shared with the proxy's user tokens.
from gateway.auth.jwks import JwksCache as JwksCache
from gateway.auth.jwks import ProviderError, fetch_json
from gateway.config import OidcConfig

# Signatures by a provider's published public keys only: `none` proves nothing, and an HS*
# token would be checked with the client secret, not the JWKS (the confusion attacks).
PUBLIC_KEY_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
LEEWAY = 60  # seconds of clock skew accepted on exp/iat/nbf
DISCOVERY_TTL = 3600.0
# A sign-in that cannot complete; `reason` is shown to the person, in words.
SsoFailed = ProviderError
DEFAULT_TIMEOUT = aiohttp.ClientTimeout(total=10, connect=5, sock_read=8)


@dataclass(frozen=True)
class ProviderMetadata:
    """What the relying party needs from the provider's discovery document."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    userinfo_endpoint: str | None
    token_auth_methods: tuple[str, ...]
    id_token_algorithms: frozenset[str]
    iss_parameter_supported: bool  # RFC 9207: the callback carries `iss`


@dataclass(frozen=True)
class PendingSignIn:
    """A sign-in started here and not yet finished at the callback."""

    state: str
    nonce: str
    code_verifier: str
    next_path: str
    created_at: float


@dataclass(frozen=True)
class Identity:
    """The person the provider vouched for."""

    subject: str
    email: str  # verified by the provider, lower-cased
    name: str


class OidcClient:
    """The console's relying party for one configured provider."""

    def __init__(
        self,
        oidc: OidcConfig,
        redirect_uri: str,
        session: aiohttp.ClientSession,
        *,
        clock: Callable[[], float] = time.time,
        discovery_ttl: float = DISCOVERY_TTL,
    ) -> None:
        self.config = oidc
        self.redirect_uri = redirect_uri
        self._session = session
        self._clock = clock
        self._discovery_ttl = discovery_ttl
        self._metadata: ProviderMetadata | None = None
        self._metadata_at = float("-inf")
        self._jwks: JwksCache | None = None
        self._lock = asyncio.Lock()

    async def metadata(self) -> ProviderMetadata:
        """The provider's discovery document, cached for an hour; a stale copy is kept
        through a failed refresh."""
        async with self._lock:
            if self._metadata is None or self._clock() - self._metadata_at >= self._discovery_ttl:
                try:
                    self._metadata = await self._discover()
                    self._metadata_at = self._clock()
                except SsoFailed:
                    if self._metadata is None:
                        raise
            return self._metadata

    async def _discover(self) -> ProviderMetadata:
        url = self.config.issuer.rstrip("/") + "/.well-known/openid-configuration"
        _, doc = await fetch_json(self._session, "GET", url, "discovery")
        return parse_metadata(doc, self.config.issuer)

    async def start(self, next_path: str) -> tuple[str, PendingSignIn]:
        """The provider URL to send the browser to, and what the callback must check."""
        meta = await self.metadata()
        pending = PendingSignIn(
            state=generate_token(43),
            nonce=generate_token(43),
            code_verifier=generate_token(64),  # RFC 7636: 43-128 unreserved characters
            next_path=next_path,
            created_at=self._clock(),
        )
        url = prepare_grant_uri(
            meta.authorization_endpoint,
            self.config.client_id,
            "code",
            redirect_uri=self.redirect_uri,
            scope=list(self.config.scopes),
            state=pending.state,
            nonce=pending.nonce,
            code_challenge=create_s256_code_challenge(pending.code_verifier),
            code_challenge_method="S256",
        )
        return str(url), pending

    async def finish(self, query: Mapping[str, str], pending: PendingSignIn) -> Identity:
        """Check the callback's parameters against `pending`, exchange the code, verify the
        ID token and return the person it names."""
        meta = await self.metadata()
        check_callback(query, pending, meta)
        tokens = await self._exchange(meta, query["code"], pending.code_verifier)
        id_token = tokens.get("id_token")
        if not isinstance(id_token, str):
            raise SsoFailed("the identity provider returned no ID token")
        claims = await self.verify_id_token(meta, id_token, pending.nonce)
        if "email" not in claims and meta.userinfo_endpoint is not None:
            claims = {**claims, **await self._userinfo(meta, tokens, str(claims["sub"]))}
        return identity_from(claims)

    async def _exchange(self, meta: ProviderMetadata, code: str, verifier: str) -> dict[str, Any]:
        body = prepare_token_request(
            "authorization_code", code=code, redirect_uri=self.redirect_uri, code_verifier=verifier
        )
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "Accept": "application/json",
        }
        auth = ClientAuth(self.config.client_id, self.config.client_secret, self._auth_method(meta))
        _, headers, body = auth.prepare("POST", meta.token_endpoint, headers, body)
        status, tokens = await fetch_json(
            self._session,
            "POST",
            meta.token_endpoint,
            "token exchange",
            headers=headers,
            data=body,
            ok_statuses=(200, 400, 401),
        )
        if status != 200:
            error = str(tokens.get("error", "error"))[:60]
            if error == "invalid_grant":
                raise SsoFailed(
                    "the identity provider refused the sign-in code (it was already used or "
                    "has expired); start again"
                )
            if error == "invalid_client":
                raise SsoFailed(
                    "the identity provider does not accept Keygate's client credentials"
                )
            raise SsoFailed(f"the identity provider refused the token exchange ({error})")
        return tokens

    def _auth_method(self, meta: ProviderMetadata) -> str:
        if self.config.client_secret is None:
            return "none"
        if "client_secret_basic" in meta.token_auth_methods:
            return "client_secret_basic"
        if "client_secret_post" in meta.token_auth_methods:
            return "client_secret_post"
        raise SsoFailed(
            "the identity provider accepts neither client_secret_basic nor client_secret_post"
        )

    def jwks(self, meta: ProviderMetadata) -> JwksCache:
        """The signing keys of the provider (one cache, replaced if discovery moves it)."""
        if self._jwks is None or self._jwks.jwks_uri != meta.jwks_uri:
            self._jwks = JwksCache(self._session, meta.jwks_uri)
        return self._jwks

    async def verify_id_token(
        self, meta: ProviderMetadata, id_token: str, nonce: str
    ) -> dict[str, Any]:
        """The claims of `id_token` once its signature, issuer, audience, times and nonce
        hold (OpenID Connect Core §3.1.3.7)."""
        try:
            header = jws.extract_compact(id_token.encode()).protected
        except (JoseError, ValueError):
            raise SsoFailed("the ID token is not a signed JWT") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in meta.id_token_algorithms:
            raise SsoFailed(
                f"the ID token is signed with an algorithm Keygate does not accept ({alg})"
            )
        if "crit" in header:
            raise SsoFailed("the ID token has critical header extensions Keygate does not support")
        kid = header.get("kid")
        key = await self.jwks(meta).key(kid if isinstance(kid, str) else None, alg)
        try:
            claims = jwt.decode(id_token, key, algorithms=[alg]).claims
        except JoseError:
            raise SsoFailed("the ID token's signature does not verify") from None
        check_id_token_claims(claims, meta.issuer, self.config.client_id, nonce, self._clock())
        return claims

    async def _userinfo(
        self, meta: ProviderMetadata, tokens: Mapping[str, Any], subject: str
    ) -> dict[str, Any]:
        access_token = tokens.get("access_token")
        if not isinstance(access_token, str) or meta.userinfo_endpoint is None:
            return {}
        _, info = await fetch_json(
            self._session,
            "GET",
            meta.userinfo_endpoint,
            "user info",
            headers={"Authorization": f"Bearer {access_token}", "Accept": "application/json"},
        )
        # Core §5.3.2: userinfo about anyone but the ID token's subject must not be used.
        if info.get("sub") != subject:
            raise SsoFailed("the identity provider's user info names a different person")
        return {k: v for k, v in info.items() if k in ("email", "email_verified", "name")}


def parse_metadata(doc: Mapping[str, Any], configured_issuer: str) -> ProviderMetadata:
    """Validate a discovery document: its issuer must be the configured one (OpenID Connect
    Discovery §4.3) and the endpoints the flow uses must be present."""
    issuer = doc.get("issuer")
    if not isinstance(issuer, str) or issuer.rstrip("/") != configured_issuer.rstrip("/"):
        raise SsoFailed(
            f"the identity provider says its issuer is {str(issuer)[:200]!r}, not the configured "
            f"{configured_issuer!r}"
        )
    endpoints = {}
    for name in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
        endpoints[name] = _endpoint(doc, name, issuer, required=True)
    userinfo = _endpoint(doc, "userinfo_endpoint", issuer, required=False)
    methods = doc.get("code_challenge_methods_supported")
    if isinstance(methods, list) and "S256" not in methods:
        raise SsoFailed("the identity provider does not support PKCE with S256")
    auth_methods = _strings(doc, "token_endpoint_auth_methods_supported", ["client_secret_basic"])
    algorithms = _strings(doc, "id_token_signing_alg_values_supported", ["RS256"])
    allowed = frozenset(algorithms) & PUBLIC_KEY_ALGORITHMS
    if not allowed:
        raise SsoFailed("the identity provider signs ID tokens with no algorithm Keygate accepts")
    return ProviderMetadata(
        issuer=issuer,
        authorization_endpoint=endpoints["authorization_endpoint"],
        token_endpoint=endpoints["token_endpoint"],
        jwks_uri=endpoints["jwks_uri"],
        userinfo_endpoint=userinfo,
        token_auth_methods=tuple(auth_methods),
        id_token_algorithms=allowed,
        iss_parameter_supported=doc.get("authorization_response_iss_parameter_supported") is True,
    )


def _endpoint(doc: Mapping[str, Any], name: str, issuer: str, *, required: bool) -> Any:
    value = doc.get(name)
    if value is None and not required:
        return None
    url = urlsplit(value) if isinstance(value, str) else None
    if url is None or url.scheme not in ("http", "https") or not url.netloc:
        raise SsoFailed(f"the identity provider's discovery document has no valid {name}")
    # An https issuer whose endpoints are plain http would leak codes and tokens.
    if issuer.startswith("https://") and url.scheme != "https":
        raise SsoFailed(f"the identity provider's {name} is not https")
    return value


def _strings(doc: Mapping[str, Any], name: str, default: list[str]) -> list[str]:
    value = doc.get(name, default)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SsoFailed(f"the identity provider's discovery document has an invalid {name}")
    return value


def check_callback(
    query: Mapping[str, str], pending: PendingSignIn, meta: ProviderMetadata
) -> None:
    """The provider's redirect back: no error, our state, the right issuer, a code."""
    state = query.get("state")
    if not state:
        raise SsoFailed("the sign-in response has no state parameter; start again")
    if not hmac.compare_digest(state.encode(), pending.state.encode()):
        raise SsoFailed(
            "the sign-in response does not belong to the sign-in started in this browser; "
            "start again"
        )
    if "error" in query:
        error = query["error"][:60]
        if error == "access_denied":
            raise SsoFailed("the sign-in was cancelled or denied at the identity provider")
        raise SsoFailed(f"the identity provider could not sign you in ({error})")
    # RFC 9207 (mix-up defence): the response names the issuer that produced it.
    iss = query.get("iss")
    if iss is not None and iss != meta.issuer:
        raise SsoFailed("the sign-in response comes from a different identity provider")
    if iss is None and meta.iss_parameter_supported:
        raise SsoFailed("the sign-in response does not name its identity provider")
    if not query.get("code"):
        raise SsoFailed("the sign-in response has no authorization code")


def check_id_token_claims(
    claims: Mapping[str, Any], issuer: str, client_id: str, nonce: str, now: float
) -> None:
    """OpenID Connect Core §3.1.3.7 on verified claims: iss, aud/azp, exp/iat, nonce."""
    registry = JWTClaimsRegistry(
        now=int(now),
        leeway=LEEWAY,
        iss={"essential": True, "value": issuer},
        sub={"essential": True},
        exp={"essential": True},
        iat={"essential": True},
    )
    # Checked here first: older joserfc releases accept an `iat` in the future.
    iat = claims.get("iat")
    if isinstance(iat, int | float) and iat > now + LEEWAY:
        raise SsoFailed("the ID token's iat claim is missing or wrong")
    try:
        registry.validate(dict(claims))
    except ExpiredTokenError:
        raise SsoFailed("the ID token has expired; start again") from None
    except JoseError as error:
        claim = getattr(error, "claim", None)
        if claim is None:  # a time check without a claim name (nbf in older joserfc)
            raise SsoFailed("the ID token is not valid yet") from None
        raise SsoFailed(f"the ID token's {claim} claim is missing or wrong") from None
    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud
    if not isinstance(audiences, list) or client_id not in audiences:
        raise SsoFailed("the ID token was issued for another application")
    azp = claims.get("azp")
    if (len(audiences) > 1 or azp is not None) and azp != client_id:
        raise SsoFailed("the ID token was issued for another application")
    token_nonce = claims.get("nonce")
    if not isinstance(token_nonce, str) or not hmac.compare_digest(
        token_nonce.encode(), nonce.encode()
    ):
        raise SsoFailed(
            "the ID token does not belong to this sign-in (nonce mismatch); start again"
        )


def identity_from(claims: Mapping[str, Any]) -> Identity:
    """The person named by verified claims; refused unless the provider verified the email."""
    email = claims.get("email")
    if not isinstance(email, str) or "@" not in email:
        raise SsoFailed(
            "the identity provider did not share an email address; Keygate needs it (scope email)"
        )
    verified = claims.get("email_verified")
    # Some providers (Amazon Cognito) send the boolean as the string "true".
    if verified is not True and verified != "true":
        raise SsoFailed(
            f"the identity provider has not verified the email address {email}; verify it "
            "there first, then sign in again"
        )
    name = claims.get("name")
    return Identity(
        subject=str(claims.get("sub", "")),
        email=email.strip().lower(),
        name=name.strip() if isinstance(name, str) else "",
    )
