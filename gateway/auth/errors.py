"""Refusals: every way a proxied request can be turned away, as values with their response.

Each class carries its HTTP status, its machine code (also the metrics `outcome`) and a
constant message; messages never include anything the client sent. One place
(`gateway.proxy.responses`) turns a Refusal into a response.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Self

if TYPE_CHECKING:
    from gateway.auth.token_claims import UserIdentity
    from gateway.keys.state import KeyState

REALM = 'Bearer realm="keygate"'


class Refusal(Exception):
    status = 400
    code = "invalid_request"
    message = "The request is invalid."
    # The key a refusal is about when its id is known (wrong secret, expired, revoked,
    # throttled): the access log names its display prefix and org, so operators see who
    # keeps using a leaked key. Known from the stored state, never from the secret.
    key: KeyState | None = None
    # Likewise the verified user token a refusal is about (revoked, lacking a scope): the
    # access log names its subject.
    user: UserIdentity | None = None

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.message)
        if message is not None:
            self.message = message

    def headers(self) -> dict[str, str]:
        return {}

    def about(self, key: KeyState) -> Self:
        """This refusal, naming the known key it refuses (see `key`)."""
        self.key = key
        return self

    def about_user(self, user: UserIdentity) -> Self:
        """This refusal, naming the user token it refuses (see `user`)."""
        self.user = user
        return self


class InvalidRequest(Refusal):
    message = "Send one API key, in either 'Authorization: Bearer <key>' or 'X-API-Key: <key>'."

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": f'{REALM}, error="invalid_request"'}


class MissingKey(Refusal):
    status = 401
    code = "missing_api_key"
    message = "An API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'."

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": REALM}


class _InvalidToken(Refusal):
    status = 401

    def headers(self) -> dict[str, str]:
        description = f'error_description="{self.message}"'
        return {"WWW-Authenticate": f'{REALM}, error="invalid_token", {description}'}


class InvalidKey(_InvalidToken):
    code = "invalid_api_key"
    message = "The API key is invalid."


class ExpiredKey(_InvalidToken):
    code = "expired_api_key"
    message = "API key has expired"


class RevokedKey(_InvalidToken):
    code = "revoked_api_key"
    message = "The API key has been revoked."


class InvalidToken(_InvalidToken):
    """A user token (SPEC §11) that is not acceptable; the message says which check
    failed, from a fixed set of sentences (never anything taken from the token)."""

    code = "invalid_token"
    message = "The token is invalid."


class ExpiredToken(_InvalidToken):
    code = "expired_token"
    message = "The token has expired."


class RevokedToken(_InvalidToken):
    code = "revoked_token"
    message = "The token has been revoked."


class InsufficientScope(Refusal):
    status = 403
    code = "insufficient_scope"
    message = "The API key lacks a scope this route requires."

    def __init__(self, required: tuple[str, ...], holder: str = "API key") -> None:
        super().__init__(f"The {holder} lacks a scope this route requires: {' '.join(required)}.")
        self.required = required

    def headers(self) -> dict[str, str]:
        scope = " ".join(self.required)
        return {"WWW-Authenticate": f'{REALM}, error="insufficient_scope", scope="{scope}"'}


class WrongOrg(Refusal):
    status = 403
    code = "wrong_org"
    message = "The API key does not belong to the organisation named in the path."


class AuthUnavailable(Refusal):
    status = 503
    code = "auth_unavailable"
    message = "The key store is unreachable, so the API key cannot be checked; retry shortly."
    retry_after = 2

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class TooManyAttempts(Refusal):
    """Too many candidate secrets for this key id recently (§3 step 7): never a 401, so a
    right key never looks invalid because someone else guessed at its id."""

    status = 429
    code = "too_many_attempts"
    message = "Too many attempts with wrong secrets for this API key recently; retry later."

    def __init__(self, retry_after: int) -> None:
        super().__init__()
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}
