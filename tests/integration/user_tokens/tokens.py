"""Signing test tokens with joserfc (and by hand where joserfc rightly refuses to make
them: `alg: none`, HS256 keyed with an RSA public key, an unsupported `crit`)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from joserfc import jwe, jwt
from joserfc.jwk import ECKey, RSAKey

from tests.integration.user_tokens.conftest import AUDIENCE, ORG


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(value: Any) -> str:
    return b64(json.dumps(value, separators=(",", ":")).encode())


def claims(issuer: str, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": issuer,
        "aud": AUDIENCE,
        "sub": "svc-alice",
        "org": ORG,
        "scope": "read events",
        "iat": now,
        "exp": now + 300,
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def signed(key: RSAKey | ECKey, body: dict[str, Any], **header: Any) -> str:
    alg = header.pop("alg", "RS256" if isinstance(key, RSAKey) else "ES256")
    return jwt.encode({"alg": alg, "kid": key.kid, **header}, body, key, algorithms=[alg])


def unsigned(body: dict[str, Any], kid: str | None) -> str:
    return f"{b64json({'alg': 'none', 'kid': kid})}.{b64json(body)}."


def hs256_with_public_key(rsa: RSAKey, body: dict[str, Any]) -> str:
    """The RS/HS confusion: an HS256 MAC keyed with the RSA key's public PEM."""
    pem = rsa.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signing_input = f"{b64json({'alg': 'HS256', 'kid': rsa.kid})}.{b64json(body)}"
    mac = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def rs256_by_hand(rsa: RSAKey, header: dict[str, Any], body: dict[str, Any]) -> str:
    """A correctly signed RS256 token with any header (joserfc would refuse `crit`)."""
    signing_input = f"{b64json(header)}.{b64json(body)}"
    signature = rsa.private_key.sign(  # type: ignore[union-attr]
        signing_input.encode(), padding.PKCS1v15(), hashes.SHA256()
    )
    return f"{signing_input}.{b64(signature)}"


def encrypted(rsa: RSAKey, body: dict[str, Any]) -> str:
    """A JWE to the provider's RSA key (as a client that encrypts would make it)."""
    public = {k: v for k, v in rsa.as_dict(private=False).items() if k not in ("use", "alg")}
    header = {"alg": "RSA-OAEP-256", "enc": "A256GCM", "kid": rsa.kid}
    return jwe.encrypt_compact(
        header,
        json.dumps(body).encode(),
        RSAKey.import_key(public),
        algorithms=["RSA-OAEP-256", "A256GCM"],
    )
