"""Scope syntax and the grant rule (`*` and `prefix:*` wildcards)."""

from __future__ import annotations

import re
from collections.abc import Iterable

# A scope is one or more name parts joined by ':'; the last part may be '*'.
_SCOPE = re.compile(r"(?:[A-Za-z0-9_.-]+:)*(?:[A-Za-z0-9_.-]+|\*)")
MAX_SCOPE_LENGTH = 128


class ScopeError(ValueError):
    """A scope string is empty or malformed."""


def validate_scope(scope: object) -> str:
    """Return `scope` if it is a well-formed scope, else raise ScopeError saying why."""
    if not isinstance(scope, str) or not scope:
        raise ScopeError("a scope must be a non-empty string such as read or workflows:read")
    if len(scope) > MAX_SCOPE_LENGTH:
        raise ScopeError(f"scope is longer than {MAX_SCOPE_LENGTH} characters")
    if not _SCOPE.fullmatch(scope):
        raise ScopeError(
            f"{scope!r} is not a valid scope; use letters, digits, '_', '.', '-' in parts "
            "joined by ':', optionally ending in ':*' (or '*' alone)"
        )
    return scope


def normalise_scopes(scopes: Iterable[object]) -> tuple[str, ...]:
    """Validate, de-duplicate and sort a scope list (the stored form)."""
    return tuple(sorted({validate_scope(s) for s in scopes}))


def grants(held: str, wanted: str) -> bool:
    """True when a key holding `held` may use a route requiring `wanted`."""
    if held == "*" or held == wanted:
        return True
    return held.endswith(":*") and wanted.startswith(held[:-1]) and len(wanted) > len(held) - 1


def missing_scopes(held: Iterable[str], required: Iterable[str]) -> tuple[str, ...]:
    """The required scopes that none of the held scopes grants, in the order required."""
    held = tuple(held)
    return tuple(w for w in required if not any(grants(h, w) for h in held))
