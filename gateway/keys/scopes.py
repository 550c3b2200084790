"""Scope syntax, the grant rule (`*` and `prefix:*` wildcards) and the scope catalogue."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

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


class UnknownScope(ScopeError):
    """A scope the catalogue does not list; `suggestion` is the nearest known name."""

    def __init__(self, scope: str, suggestion: str | None, where: str) -> None:
        self.scope = scope
        self.suggestion = suggestion
        located = f" ({where})" if where else ""
        hint = f'; did you mean "{suggestion}"?' if suggestion else ""
        super().__init__(f'scope "{scope}" is not in the scopes catalogue{located}{hint}')


@dataclass(frozen=True)
class ScopeCatalogue:
    """The config's `scopes:` list: the scopes keys may carry, with their descriptions.

    `where` ("config/keygate.yaml line 12") is named in refusals, so the operator knows
    which list to extend.
    """

    descriptions: Mapping[str, str]
    where: str = ""
    _wildcards: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Every `prefix:*` that covers at least one catalogued scope, for suggestions.
        wildcards: set[str] = set()
        for name in self.descriptions:
            parts = name.split(":")
            wildcards.update(":".join(parts[:i]) + ":*" for i in range(1, len(parts)))
        object.__setattr__(self, "_wildcards", frozenset(wildcards))

    def knows(self, scope: str) -> bool:
        """True for a catalogued scope, `*`, or a wildcard covering a catalogued scope."""
        if scope == "*" or scope in self.descriptions:
            return True
        return scope.endswith(":*") and any(grants(scope, name) for name in self.descriptions)

    def check(self, scopes: Iterable[str]) -> None:
        """Raise UnknownScope for the first scope the catalogue does not know."""
        for scope in scopes:
            if not self.knows(scope):
                raise UnknownScope(scope, self.nearest(scope), self.where)

    def nearest(self, scope: str) -> str | None:
        """The known name closest to `scope` (a wildcard for a wildcard), if any is close."""
        pool = self._wildcards if scope.endswith(":*") else self.descriptions.keys()
        found = difflib.get_close_matches(scope, sorted(pool), n=1)
        return found[0] if found else None
