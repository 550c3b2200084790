"""The pure rules of people's credentials: emails, passwords, random tokens and their
digests, and the CSRF token derived from a session. No I/O; tested with tables."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import unicodedata

from gateway.keys.errors import InvalidInput

MIN_PASSWORD = 12
MAX_PASSWORD = 1024  # argon2 hashes any length; this only bounds the work per attempt
MAX_EMAIL = 254
# Deliberately loose (RFC 5321 allows much): one @, something either side, no spaces or
# control characters. `dev@localhost` is an address.
_EMAIL = re.compile(r"[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+")
# secrets.token_urlsafe(32): 43 characters of the URL-safe base64 alphabet.
_TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")


# Unicode categories no address needs and that only serve to make look-alikes: controls,
# format characters (zero-width space and joiners, bidi overrides), separators, surrogates,
# private use and unassigned code points. `ada\u200b@example.com` must not be a second Ada.
_INVISIBLE = frozenset(("Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"))


def normalise_email(value: object, field: str = "email") -> str:
    """The address as stored: trimmed, NFC-composed and lower-cased (so `ä` typed composed
    or decomposed is one person); InvalidInput names `field`."""
    if not isinstance(value, str) or len(value) > 4 * MAX_EMAIL:
        raise InvalidInput(f"{field} must be an email address such as ana@example.com", field)
    email = unicodedata.normalize("NFC", unicodedata.normalize("NFC", value.strip()).lower())
    if not _EMAIL.fullmatch(email) or any(unicodedata.category(c) in _INVISIBLE for c in email):
        raise InvalidInput(f"{field} must be an email address such as ana@example.com", field)
    if len(email) > MAX_EMAIL:
        raise InvalidInput(f"{field} is longer than {MAX_EMAIL} characters", field)
    return email


def lookup_email(value: str) -> str | None:
    """The stored form of a typed sign-in email, or None if it cannot be an address."""
    try:
        return normalise_email(value)
    except InvalidInput:
        return None


def check_password(password: object) -> str:
    """A new password: 12 to 1024 characters (SPEC §10)."""
    if not isinstance(password, str) or len(password) < MIN_PASSWORD:
        raise InvalidInput(f"the password must be at least {MIN_PASSWORD} characters", "password")
    if len(password) > MAX_PASSWORD:
        raise InvalidInput(f"the password must be at most {MAX_PASSWORD} characters", "password")
    if "\x00" in password:
        raise InvalidInput("the password cannot contain the NUL character", "password")
    if any(0xD800 <= ord(c) <= 0xDFFF for c in password):  # a lone surrogate: not text
        raise InvalidInput("the password must be valid Unicode text", "password")
    return password


def new_token() -> str:
    """A session id or invite token: 256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


def well_formed_token(value: object) -> bool:
    """Whether `value` could be one of ours (anything else is refused without a query)."""
    return isinstance(value, str) and _TOKEN.fullmatch(value) is not None


def digest(token: str) -> bytes:
    """What the database stores for a session id or invite token: its SHA-256.
    256 random bits need no salt or slow hash: nothing can be guessed from the digest."""
    return hashlib.sha256(token.encode()).digest()


def csrf_token(secret: bytes, session_id: str) -> str:
    """The session's CSRF token: derived from the session id under the server secret,
    so it needs no storage and is worthless without the session."""
    mac = hmac.new(secret, b"csrf:" + session_id.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


def same_token(a: str, b: str) -> bool:
    """Constant-time comparison of two tokens."""
    return hmac.compare_digest(a.encode(), b.encode())


def email_bucket(email: str) -> str:
    """The throttling bucket of a typed email (hashed: the table holds no addresses).

    Every spelling that signs in to one account shares one bucket: the bucket is made from
    the same normal form the account is looked up by (case, surrounding whitespace, NFC),
    so padding or re-casing the address cannot buy fresh attempts. What cannot be an
    address gets a bucket of its own, bounded in size."""
    address = lookup_email(email)
    key = address if address is not None else "typed:" + email[: 4 * MAX_EMAIL]
    return "email:" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def ip_bucket(client_ip: str | None) -> str:
    return "ip:" + (client_ip or "unknown")
