"""User tokens (SPEC §11), the pure part: which credentials are tokens, reading a token's
header and claims before and after its signature is checked, and the verified identity.

No I/O here: the signature (by a key from the issuer's JWKS) is checked by
`gateway.auth.user_tokens`, which calls these steps around it. Every refusal is an
InvalidToken or ExpiredToken with a sentence from this module (never anything the token
says), so a client learns which check failed and nothing else.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from multidict import istr

from gateway.auth.errors import ExpiredToken, InvalidToken
from gateway.config import UserTokenIssuer

MAX_TOKEN_BYTES = 8192  # SPEC §11: larger tokens are refused before any parsing
MAX_SUBJECT = 255
MAX_SCOPES = 100
_SEGMENT = re.compile(r"[A-Za-z0-9_-]*")
_SLUG = re.compile(r"[a-z0-9][a-z0-9-]{1,62}")
# A scope that can travel in X-Keygate-Scopes: visible ASCII without quotes or backslash.
_SCOPE = re.compile(r"[!#-\[\]-~]{1,200}")

TOO_LARGE = "The token is larger than 8 KiB."
ENCRYPTED = "Encrypted tokens (JWE) are not accepted; send a signed token (JWS)."
MALFORMED = "The token is not a well-formed signed JWT."
UNTRUSTED_ISSUER = "The token was not issued by a trusted issuer."
ALGORITHM = "The token is signed with an algorithm this issuer is not trusted with."
CRITICAL = "The token has critical header parameters (crit), which are not supported."
UNKNOWN_KEY = "The token is signed with a key the issuer does not publish."
SIGNATURE = "The token's signature does not verify."
AUDIENCE = "The token was issued for another audience."
NOT_YET_VALID = "The token is not valid yet (nbf)."
ISSUED_IN_FUTURE = "The token's iat is in the future."
NO_EXPIRY = "The token has no valid exp claim."
SUBJECT = "The token has no usable sub claim."
NO_ORG = "The token names no organisation."
UNKNOWN_ORG = "The token names an organisation that does not exist."
SCOPES = "The token's scopes claim is neither a string nor a list of strings."

Shape = Literal["jws", "jwe"]


def token_shape(credential: str) -> Shape | None:
    """ "jws" for a compact JWS (three base64url segments, the last possibly empty as an
    unsigned token's is), "jwe" for a compact JWE (five), None for anything else: an API
    key, whatever it looks like, has no dots."""
    dots = credential.count(".")
    if dots not in (2, 4):
        return None
    parts = credential.split(".")
    if not parts[0] or not all(_SEGMENT.fullmatch(p) for p in parts):
        return None
    return "jws" if dots == 2 else "jwe"


def _b64json(segment: str) -> dict[str, Any]:
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        value = json.loads(raw)
    except (binascii.Error, ValueError):
        raise InvalidToken(MALFORMED) from None
    if not isinstance(value, dict):
        raise InvalidToken(MALFORMED)
    return value


@dataclass(frozen=True)
class Unverified:
    """What a token says before its signature is checked: only used to choose the issuer
    and the key, never trusted for anything else."""

    header: dict[str, Any]
    claims: dict[str, Any]
    alg: str
    kid: str | None


def read_unverified(token: str) -> Unverified:
    """The header and claims of a compact JWS, and the header checks that need no key:
    size, shape, `alg` present and not `none`, no `crit`."""
    if len(token) > MAX_TOKEN_BYTES:
        raise InvalidToken(TOO_LARGE)
    shape = token_shape(token)
    if shape == "jwe":
        raise InvalidToken(ENCRYPTED)
    if shape is None:
        raise InvalidToken(MALFORMED)
    head, body, _signature = token.split(".")
    header = _b64json(head)
    if "enc" in header:
        raise InvalidToken(ENCRYPTED)
    alg = header.get("alg")
    if not isinstance(alg, str) or not alg or alg.lower() == "none":
        raise InvalidToken(ALGORITHM)
    if "crit" in header:
        raise InvalidToken(CRITICAL)
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise InvalidToken(UNKNOWN_KEY)
    return Unverified(header, _b64json(body), alg, kid)


def trusted_issuer(
    unverified: Unverified, issuers: Mapping[str, UserTokenIssuer]
) -> UserTokenIssuer:
    """The configured issuer the token claims to come from, if its algorithm is allowed."""
    iss = unverified.claims.get("iss")
    issuer = issuers.get(iss) if isinstance(iss, str) else None
    if issuer is None:
        raise InvalidToken(UNTRUSTED_ISSUER)
    if unverified.alg not in issuer.algorithms:
        raise InvalidToken(ALGORITHM)
    return issuer


Headers = tuple[tuple[str, str], ...]
_CREDENTIAL = istr("X-Keygate-Credential")
_SUBJECT = istr("X-Keygate-Subject")
_ORG = istr("X-Keygate-Org")
_SCOPES = istr("X-Keygate-Scopes")


def subject_id(issuer: str, subject: str) -> str:
    """A short, stable id of (issuer, subject): what rate limits and WebSocket sessions
    count by. Bounded and free of characters Redis key names or labels could trip on."""
    digest = hashlib.blake2b(f"{issuer}\0{subject}".encode(), digest_size=12).hexdigest()
    return f"user:{digest}"


@dataclass(frozen=True, eq=False)
class UserIdentity:
    """A verified user token: who, for which org, with which scopes, until when."""

    issuer: str
    subject: str
    org: str
    scopes: tuple[str, ...]
    expires_at: float  # unix seconds, the token's exp
    issued_at: float | None  # its iat, if it has one
    leeway: float
    id: str = ""  # subject_id(issuer, subject)
    rate_limit: None = None  # user tokens carry no limit of their own; routes' limits apply
    headers: Headers = field(default=(), repr=False)  # the identity sent upstream

    @classmethod
    def of(
        cls,
        issuer: str,
        subject: str,
        org: str,
        scopes: tuple[str, ...],
        expires_at: float,
        issued_at: float | None,
        leeway: float,
    ) -> UserIdentity:
        headers: Headers = (
            (_CREDENTIAL, "user"),
            (_SUBJECT, subject),
            (_ORG, org),
            (_SCOPES, " ".join(scopes)),
        )
        return cls(
            issuer,
            subject,
            org,
            scopes,
            expires_at,
            issued_at,
            leeway,
            subject_id(issuer, subject),
            None,
            headers,
        )

    def expired(self, now: float) -> bool:
        return now >= self.expires_at + self.leeway


def identity_from_claims(
    claims: Mapping[str, Any], issuer: UserTokenIssuer, now: float
) -> UserIdentity:
    """The identity in verified claims once `iss`, `aud`, `exp`, `nbf`, `iat`, `sub`, the
    org and scopes claims hold (times with the issuer's leeway)."""
    if claims.get("iss") != issuer.issuer:
        raise InvalidToken(UNTRUSTED_ISSUER)
    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud
    if not isinstance(audiences, list) or issuer.audience not in audiences:
        raise InvalidToken(AUDIENCE)
    leeway = issuer.leeway
    exp = _number(claims.get("exp"))
    if exp is None:
        raise InvalidToken(NO_EXPIRY)
    if now >= exp + leeway:
        raise ExpiredToken()
    if "nbf" in claims:
        nbf = _number(claims["nbf"])
        if nbf is None or nbf > now + leeway:
            raise InvalidToken(NOT_YET_VALID)
    iat = None
    if "iat" in claims:
        iat = _number(claims["iat"])
        if iat is None or iat > now + leeway:
            raise InvalidToken(ISSUED_IN_FUTURE)
    sub = claims.get("sub")
    if not isinstance(sub, str) or not _printable_ascii(sub, MAX_SUBJECT):
        raise InvalidToken(SUBJECT)
    org = claims.get(issuer.org_claim)
    if not isinstance(org, str) or not _SLUG.fullmatch(org):
        raise InvalidToken(NO_ORG)
    return UserIdentity.of(
        issuer.issuer,
        sub,
        org,
        scopes_of(claims.get(issuer.scopes_claim)),
        exp,
        iat,
        leeway,
    )


def scopes_of(value: Any) -> tuple[str, ...]:
    """A scopes claim: a space-separated string (OAuth's `scope`) or an array of strings
    (`scp`, `permissions`). Entries that could not travel in a header are left out."""
    if value is None:
        return ()
    if isinstance(value, str):
        items: list[Any] = value.split()
    elif isinstance(value, list):
        items = value
    else:
        raise InvalidToken(SCOPES)
    out: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise InvalidToken(SCOPES)
        if _SCOPE.fullmatch(item) and item not in out:
            out.append(item)
            if len(out) == MAX_SCOPES:
                break
    return tuple(out)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None  # json reads NaN and Infinity


def _printable_ascii(text: str, limit: int) -> bool:
    return 0 < len(text) <= limit and text.isascii() and text.isprintable()
