"""Reading the API key from request headers (and only from headers)."""

from __future__ import annotations

from multidict import CIMultiDictProxy, istr

from gateway.auth.errors import InvalidRequest

# istr names: multidict looks them up without case-folding them on every call.
AUTHORIZATION = istr("Authorization")
X_API_KEY = istr("X-API-Key")


def read_credential(headers: CIMultiDictProxy[str]) -> str | None:
    """The presented key, or None when none was sent.

    `Authorization: Bearer <key>` (scheme case-insensitive) or `X-API-Key: <key>`. A
    repeated header, or both headers with different keys, is ambiguous: 400.
    Authorization with another scheme (Basic, …) is not ours and is ignored.
    """
    return read_presented(headers)[0]


def read_presented(headers: CIMultiDictProxy[str]) -> tuple[str | None, bool]:
    """The presented credential, and whether it came in `Authorization: Bearer` alone
    (only there can it be a user token: `X-API-Key` only ever carries keys).

    Same rules as `read_credential`."""
    bearer = None
    auth_values = headers.getall(AUTHORIZATION, ())
    if len(auth_values) > 1:
        raise InvalidRequest("Send the Authorization header only once.")
    if auth_values:
        scheme, _, rest = auth_values[0].strip().partition(" ")
        if scheme.lower() == "bearer":
            bearer = rest.strip()
    api_keys = headers.getall(X_API_KEY, ())
    if len(api_keys) > 1:
        raise InvalidRequest("Send the X-API-Key header only once.")
    header_key = api_keys[0].strip() if api_keys else None
    if bearer is not None and header_key is not None and bearer != header_key:
        raise InvalidRequest(
            "Authorization and X-API-Key carry different keys; send one API key only."
        )
    if bearer is not None:
        return bearer, header_key is None
    return header_key, False
