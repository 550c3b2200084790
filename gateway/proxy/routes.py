"""Route patterns and the route table (spec §4).

Patterns are parsed once at start-up into a segment trie, so matching a request costs a
walk over the path's segments instead of one regex per configured route. Routes are
tried in file order: among every route whose pattern matches and whose methods allow the
request, the lowest index wins, whatever its specificity.

Pure: no I/O. Paths given to ``RouteTable.match`` must already be normalised by
``gateway.proxy.paths.normalise_path``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Generic, Protocol, TypeVar
from urllib.parse import unquote

from gateway.proxy.paths import InvalidPath, normalise_path

__all__ = [
    "LiteralSegment",
    "ParamSegment",
    "Pattern",
    "PatternError",
    "RestSegment",
    "RouteLike",
    "RouteMatch",
    "RouteTable",
    "Segment",
    "WildcardSegment",
    "parse_pattern",
]

_PARAM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class PatternError(ValueError):
    """A route pattern is malformed; the message says what is wrong with it."""


@dataclass(frozen=True, slots=True)
class LiteralSegment:
    """A segment matched exactly (case-sensitive) against the normalised request segment.

    ``value`` is in normalised, percent-encoded form. The empty value only appears as the
    last segment of a pattern with a trailing slash.
    """

    value: str


@dataclass(frozen=True, slots=True)
class ParamSegment:
    """``{name}``: one whole non-empty segment, captured under ``name``."""

    name: str


@dataclass(frozen=True, slots=True)
class WildcardSegment:
    """``*``: one whole non-empty segment, not captured."""


@dataclass(frozen=True, slots=True)
class RestSegment:
    """``**``: zero or more remaining segments; only ever the last segment."""


Segment = LiteralSegment | ParamSegment | WildcardSegment | RestSegment


@dataclass(frozen=True, slots=True)
class Pattern:
    """A parsed route pattern."""

    text: str
    segments: tuple[Segment, ...]
    param_names: tuple[str, ...]


def parse_pattern(text: str) -> Pattern:
    """Parse a route pattern such as ``/v1/orgs/{org}/**``.

    Literal segments are normalised with the request-path rules, so ``/café`` matches a
    request for ``/caf%C3%A9``; a literal ``{`` or ``*`` can be written ``%7B`` / ``%2A``.
    A trailing slash is kept as a final empty literal segment.

    Raises PatternError if the pattern does not start with '/', has an empty segment
    other than the trailing one, a partial wildcard (``/a{b}``, ``/x*``), an invalid or
    duplicate parameter name, ``**`` anywhere but last, a dot segment, or a literal that
    is not a valid path segment.
    """
    if not text.startswith("/"):
        raise PatternError("pattern must start with '/'")
    parts = text[1:].split("/")
    last = len(parts) - 1
    segments: list[Segment] = []
    names: list[str] = []
    for i, part in enumerate(parts):
        if part == "**":
            if i != last:
                raise PatternError("'**' is only allowed as the last segment")
            segments.append(RestSegment())
        elif part == "*":
            segments.append(WildcardSegment())
        elif part.startswith("{") and part.endswith("}") and len(part) >= 2:
            name = part[1:-1]
            if not _PARAM_NAME.fullmatch(name):
                raise PatternError(f"parameter name {name!r} must match [A-Za-z_][A-Za-z0-9_]*")
            if name in names:
                raise PatternError(f"parameter {{{name}}} appears more than once")
            names.append(name)
            segments.append(ParamSegment(name))
        elif "{" in part or "}" in part or "*" in part:
            raise PatternError(
                f"segment {part!r}: '{{name}}', '*' and '**' must be a whole segment"
            )
        elif part == "":
            if i != last:
                raise PatternError("empty segment ('//') in pattern")
            segments.append(LiteralSegment(""))
        else:
            segments.append(LiteralSegment(_normalise_literal(part)))
    return Pattern(text=text, segments=tuple(segments), param_names=tuple(names))


def _normalise_literal(part: str) -> str:
    try:
        normalised = normalise_path("/" + part)
    except InvalidPath as exc:
        raise PatternError(f"segment {part!r}: {exc.reason}") from None
    value = normalised[1:]
    # Normalised request paths never contain dot segments, so a pattern with one could
    # never match; "." or ".." collapse to "" or fail here.
    if value == "" or "/" in value:
        raise PatternError(f"segment {part!r}: dot segments are not allowed in patterns")
    return value


class RouteLike(Protocol):
    """What the table needs from a configured route."""

    @property
    def path(self) -> str:
        """The route's pattern text."""
        ...

    @property
    def methods(self) -> frozenset[str] | None:
        """Allowed upper-case method names; None allows every method."""
        ...


R = TypeVar("R", bound=RouteLike)


@dataclass(frozen=True, slots=True)
class RouteMatch(Generic[R]):
    """The winning route and its captured parameters (percent-decoded)."""

    route: R
    params: Mapping[str, str]


_NO_ROUTE = 1 << 62
_UNSEEN = object()
_MEMO_SIZE = 4096
_MEMO_MAX_PATH = 256


@dataclass(slots=True)
class _Node:
    literals: dict[str, _Node] = field(default_factory=dict)
    # One child shared by '{name}' and '*': neither captures during the walk, the winning
    # route's capture positions are applied afterwards.
    param: _Node | None = None
    # Route indices (ascending) whose pattern is '**' at this depth.
    rest: list[int] = field(default_factory=list)
    # Route indices (ascending) whose pattern ends exactly here.
    terminal: list[int] = field(default_factory=list)
    # Lowest route index anywhere in this subtree (_NO_ROUTE: none), to prune branches
    # that cannot win.
    min_index: int = _NO_ROUTE
    # Set by _finish, so a walk looks a method up instead of scanning `rest`/`terminal`:
    # method -> lowest index in the list allowing it; *_any: lowest allowing every method
    # (the answer for a method no route names).
    rest_first: dict[str, int] = field(default_factory=dict)
    rest_any: int = _NO_ROUTE
    terminal_first: dict[str, int] = field(default_factory=dict)
    terminal_any: int = _NO_ROUTE


class RouteTable(Generic[R]):
    """Routes compiled into a segment trie; first match in file order wins."""

    __slots__ = ("_bare", "_captures", "_memo", "_root", "_routes")

    def __init__(
        self,
        routes: tuple[R, ...],
        root: _Node,
        captures: tuple[tuple[tuple[int, str], ...], ...],
    ) -> None:
        """Use ``RouteTable.compile``; this only stores already-compiled parts."""
        self._routes = routes
        self._root = root
        self._captures = captures
        # The match of each route that captures nothing, built once: no allocation per call.
        empty: Mapping[str, str] = MappingProxyType({})
        self._bare = tuple(RouteMatch(route, empty) for route in routes)
        # (method, path) -> answer, for the paths seen most recently: a match depends on
        # nothing else, and a walk costs ten times a lookup (Sanic's router memoises its
        # lookups the same way). Bounded: emptied when full, long paths never kept.
        self._memo: dict[tuple[str, str], RouteMatch[R] | None] = {}

    @classmethod
    def compile(cls, routes: Sequence[R]) -> RouteTable[R]:
        """Compile routes, in file order, into a table.

        Raises PatternError naming the index and pattern of the first bad route.
        """
        root = _Node()
        allowed: list[frozenset[str] | None] = []
        captures: list[tuple[tuple[int, str], ...]] = []
        for index, route in enumerate(routes):
            try:
                pattern = parse_pattern(route.path)
            except PatternError as exc:
                raise PatternError(f"route {index} ({route.path!r}): {exc}") from None
            _insert(root, pattern, index)
            allowed.append(_allowed_methods(route.methods))
            captures.append(
                tuple(
                    (position, seg.name)
                    for position, seg in enumerate(pattern.segments)
                    if isinstance(seg, ParamSegment)
                )
            )
        named = frozenset(m for methods in allowed if methods is not None for m in methods)
        _finish(root, tuple(allowed), named)
        return cls(tuple(routes), root, tuple(captures))

    def match(self, method: str, path: str) -> RouteMatch[R] | None:
        """Return the lowest-index route matching ``path`` and allowing ``method``.

        ``path`` must be normalised (see ``normalise_path``); ``method`` upper-case.
        Returns None when no route matches, whether by path or by method.
        """
        key = (method, path)
        found = self._memo.get(key, _UNSEEN)
        if found is not _UNSEEN:
            return found  # type: ignore[return-value]
        found = self._walk(method, path)
        if len(path) <= _MEMO_MAX_PATH:
            if len(self._memo) >= _MEMO_SIZE:
                self._memo.clear()
            self._memo[key] = found
        return found

    def _walk(self, method: str, path: str) -> RouteMatch[R] | None:
        if not path.startswith("/"):
            return None
        segments = path[1:].split("/")
        best = self._best(self._root, segments, 0, method, _NO_ROUTE)
        if best == _NO_ROUTE:
            return None
        captures = self._captures[best]
        if not captures:
            return self._bare[best]
        params = MappingProxyType({name: unquote(segments[pos]) for pos, name in captures})
        return RouteMatch(route=self._routes[best], params=params)  # shared: read-only

    def __len__(self) -> int:
        """Number of routes in the table."""
        return len(self._routes)

    def _best(self, node: _Node, segments: list[str], depth: int, method: str, best: int) -> int:
        # Each trie node sits at a fixed depth and is reached by at most one walk, so this
        # visits no more nodes than the trie holds, however long the request path. The walk
        # recurses only where it forks (a literal child and a parameter child both match);
        # otherwise it steps down in this loop.
        end = len(segments)
        while True:
            if node.min_index >= best:
                return best
            first = node.rest_first.get(method, node.rest_any)
            if first < best:
                best = first
            if depth == end:
                first = node.terminal_first.get(method, node.terminal_any)
                return first if first < best else best
            segment = segments[depth]
            child = node.literals.get(segment)
            param = node.param if segment != "" else None
            depth += 1
            if param is None:
                if child is None:
                    return best
                node = child
                continue
            if child is not None:  # literal first: it may hold a lower index
                best = self._best(child, segments, depth, method, best)
            node = param


def _allowed_methods(methods: frozenset[str] | None) -> frozenset[str] | None:
    if methods is None:
        return None
    upper = frozenset(m.upper() for m in methods)
    # Spec §4: GET implies HEAD (HEAD is GET without the body).
    if "GET" in upper:
        upper |= {"HEAD"}
    return upper


def _insert(root: _Node, pattern: Pattern, index: int) -> None:
    node = root
    for seg in pattern.segments:
        if isinstance(seg, RestSegment):
            node.rest.append(index)
            return
        if isinstance(seg, LiteralSegment):
            node = node.literals.setdefault(seg.value, _Node())
        else:
            if node.param is None:
                node.param = _Node()
            node = node.param
    node.terminal.append(index)


def _finish(node: _Node, allowed: tuple[frozenset[str] | None, ...], named: frozenset[str]) -> int:
    """Fill in the per-method lookups and subtree minimums; returns the node's minimum."""
    node.rest_first, node.rest_any = _first_per_method(node.rest, allowed, named)
    node.terminal_first, node.terminal_any = _first_per_method(node.terminal, allowed, named)
    # Indices are inserted in ascending order, so each list's first element is its minimum.
    lows = [_NO_ROUTE, *node.rest[:1], *node.terminal[:1]]
    lows.extend(_finish(child, allowed, named) for child in node.literals.values())
    if node.param is not None:
        lows.append(_finish(node.param, allowed, named))
    node.min_index = min(lows)
    return node.min_index


def _allows(methods: frozenset[str] | None, method: str) -> bool:
    return methods is None or method in methods


def _first_per_method(
    indices: list[int], allowed: tuple[frozenset[str] | None, ...], named: frozenset[str]
) -> tuple[dict[str, int], int]:
    """For each method some route names, the lowest index in `indices` allowing it; and
    the lowest index allowing any method."""
    any_method = next((i for i in indices if allowed[i] is None), _NO_ROUTE)
    first = {}
    for method in named:
        index = next((i for i in indices if _allows(allowed[i], method)), _NO_ROUTE)
        if index < any_method:
            first[method] = index
    return first, any_method
