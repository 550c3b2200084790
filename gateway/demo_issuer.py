"""A demo identity provider for `keygate dev` and the benchmark: one ES256 key pair, its
JWKS, and user tokens signed with it (SPEC §11), with no network and no real provider.

`keygate dev` keeps the key pair in `.keygate/demo-issuer.jwk` (made on the first run,
mode 0600, git-ignored with the rest of `.keygate/`) so that a token printed by one run
still verifies after a restart; the demo upstream serves the public half at
JWKS_PATH, and `config/dev.yaml` trusts it under `user_tokens:`.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet

log = logging.getLogger("keygate.dev")

ISSUER_PATH = "/_demo/issuer"  # the issuer URL's path on the demo upstream
JWKS_PATH = ISSUER_PATH + "/jwks.json"
KEY_FILE = "demo-issuer.jwk"
ALGORITHM = "ES256"  # small keys and tokens; any public-key algorithm would do


def generate_key() -> ECKey:
    """A fresh P-256 signing key, its `kid` the RFC 7638 thumbprint."""
    key = ECKey.generate_key("P-256", parameters={"alg": ALGORITHM, "use": "sig"}, private=True)
    key.ensure_kid()
    return key


def load_or_create_key(path: Path) -> ECKey:
    """The key pair kept at `path`, made (owner-only) when missing or unreadable: the demo
    key is throwaway, so a damaged file costs only the tokens printed before."""
    try:
        key = ECKey.import_key(json.loads(path.read_text()))
        if key.is_private and key.kid:
            return key
    except FileNotFoundError:
        pass
    except (OSError, ValueError, TypeError, KeyError, JoseError):
        log.warning("%s is unreadable; making a new demo issuer key", path)
    key = generate_key()
    temporary = path.with_suffix(".tmp")
    # Created owner-only: the private key is never readable by others, not even briefly.
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(json.dumps(key.as_dict(private=True)) + "\n")
    temporary.chmod(0o600)  # in case an older temporary file had another mode
    temporary.replace(path)
    return key


def jwks(key: ECKey) -> dict[str, Any]:
    """The public JWKS of `key` (never the private part)."""
    return dict(KeySet([key]).as_dict(private=False))


@dataclass(frozen=True)
class DemoIssuer:
    """Signs user tokens as `issuer` for `audience` with `key`."""

    key: ECKey
    issuer: str
    audience: str
    org_claim: str = "org"
    scopes_claim: str = "scope"

    def token(
        self,
        *,
        subject: str,
        org: str,
        scopes: tuple[str, ...],
        lifetime: float = 3600.0,
        now: float | None = None,
    ) -> str:
        """A signed access token (compact JWS) valid for `lifetime` seconds from now."""
        issued = int(time.time() if now is None else now)
        claims = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": subject,
            self.org_claim: org,
            self.scopes_claim: " ".join(scopes),
            "iat": issued,
            "exp": issued + int(lifetime),
            "jti": uuid.uuid4().hex,  # two tokens of the same second still differ
        }
        header = {"alg": ALGORITHM, "typ": "at+jwt", "kid": self.key.kid}
        return jwt.encode(header, claims, self.key, algorithms=[ALGORITHM])
