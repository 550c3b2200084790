"""Tests for gateway.proxy.routes: pattern parsing, matching tables, a reference model."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.proxy.paths import normalise_path
from gateway.proxy.routes import (
    LiteralSegment,
    ParamSegment,
    PatternError,
    RestSegment,
    RouteTable,
    WildcardSegment,
    parse_pattern,
)


@dataclass(frozen=True)
class Route:
    path: str
    methods: frozenset[str] | None = None


def route(path: str, *methods: str) -> Route:
    return Route(path, frozenset(methods) if methods else None)


# --- parse_pattern ----------------------------------------------------------------

PARSED = [
    ("/", (LiteralSegment(""),), ()),
    ("/a/b", (LiteralSegment("a"), LiteralSegment("b")), ()),
    ("/a/", (LiteralSegment("a"), LiteralSegment("")), ()),
    ("/**", (RestSegment(),), ()),
    ("/a/*/b", (LiteralSegment("a"), WildcardSegment(), LiteralSegment("b")), ()),
    (
        "/orgs/{org}/keys/{key_id}",
        (
            LiteralSegment("orgs"),
            ParamSegment("org"),
            LiteralSegment("keys"),
            ParamSegment("key_id"),
        ),
        ("org", "key_id"),
    ),
    ("/{_x1}/**", (ParamSegment("_x1"), RestSegment()), ("_x1",)),
    ("/café", (LiteralSegment("caf%C3%A9"),), ()),
    ("/caf%c3%a9", (LiteralSegment("caf%C3%A9"),), ()),
    ("/%7Euser", (LiteralSegment("~user"),), ()),
    ("/a%7Bb%7D", (LiteralSegment("a%7Bb%7D"),), ()),
    ("/a;v=1", (LiteralSegment("a;v=1"),), ()),
]


@pytest.mark.parametrize(("text", "segments", "names"), PARSED, ids=[p[0] for p in PARSED])
def test_parse_pattern(text: str, segments: tuple[object, ...], names: tuple[str, ...]) -> None:
    pattern = parse_pattern(text)
    assert pattern.text == text
    assert pattern.segments == segments
    assert pattern.param_names == names


PATTERN_ERRORS = [
    ("", "start with '/'"),
    ("a/b", "start with '/'"),
    ("/**/a", "'**' is only allowed as the last segment"),
    ("/**/", "'**' is only allowed as the last segment"),
    ("/a{b}", "whole segment"),
    ("/{a}b", "whole segment"),
    ("/x*", "whole segment"),
    ("/*x", "whole segment"),
    ("/a**", "whole segment"),
    ("/***", "whole segment"),
    ("/{a", "whole segment"),
    ("/a}", "whole segment"),
    ("/{}", "parameter name"),
    ("/{1a}", "parameter name"),
    ("/{a-b}", "parameter name"),
    ("/{a}/{a}", "more than once"),
    ("//a", "empty segment"),
    ("/a//b", "empty segment"),
    ("/a/./b", "dot segments"),
    ("/a/..", "dot segments"),
    ("/a%2Fb", "encoded slash"),
    ("/a\\b", "backslash"),
    ("/a%zz", "percent-escape"),
    ("/a%C0%AE", "UTF-8"),
    ("/..;x", "dot segment with parameters"),
]


@pytest.mark.parametrize(("text", "message"), PATTERN_ERRORS, ids=[p[0] for p in PATTERN_ERRORS])
def test_parse_pattern_errors(text: str, message: str) -> None:
    with pytest.raises(PatternError) as info:
        parse_pattern(text)
    assert message in str(info.value)


def test_compile_error_names_the_route_index() -> None:
    with pytest.raises(PatternError) as info:
        RouteTable.compile([route("/ok"), route("/also/ok"), route("/bad{x}")])
    assert "route 2" in str(info.value)
    assert "/bad{x}" in str(info.value)


# --- matching -----------------------------------------------------------------------

# (routes, method, path, index of the expected route or None, expected params)
MATCHES: list[tuple[str, list[Route], str, str, int | None, dict[str, str]]] = [
    ("literal", [route("/a/b")], "GET", "/a/b", 0, {}),
    ("literal miss", [route("/a/b")], "GET", "/a/c", None, {}),
    ("root", [route("/")], "GET", "/", 0, {}),
    ("root is not rest", [route("/")], "GET", "/a", None, {}),
    # File order decides, not specificity.
    ("param before literal", [route("/u/{id}"), route("/u/me")], "GET", "/u/me", 0, {"id": "me"}),
    ("literal before param", [route("/u/me"), route("/u/{id}")], "GET", "/u/me", 0, {}),
    ("literal falls to param", [route("/u/me"), route("/u/{id}")], "GET", "/u/42", 1, {"id": "42"}),
    ("rest before literal", [route("/**"), route("/a")], "GET", "/a", 0, {}),
    ("literal loses to earlier rest", [route("/a/**"), route("/a/b/c")], "GET", "/a/b/c", 0, {}),
    ("earlier literal beats later rest", [route("/a/b/c"), route("/a/**")], "GET", "/a/b/c", 0, {}),
    # '**' matches zero or more segments, whole segments only.
    ("rest zero segments", [route("/a/**")], "GET", "/a", 0, {}),
    ("rest trailing slash", [route("/a/**")], "GET", "/a/", 0, {}),
    ("rest many", [route("/a/**")], "GET", "/a/b/c/d", 0, {}),
    ("rest whole segment", [route("/admin/**")], "GET", "/adminx", None, {}),
    ("rest whole segment 2", [route("/admin/**")], "GET", "/adminx/y", None, {}),
    ("rest prefix", [route("/a/**")], "GET", "/ab", None, {}),
    ("root rest", [route("/**")], "GET", "/", 0, {}),
    ("param then rest", [route("/o/{org}/**")], "GET", "/o/acme", 0, {"org": "acme"}),
    ("param then rest empty", [route("/o/{org}/**")], "GET", "/o/", None, {}),
    # Trailing slash semantics.
    ("slash pattern needs slash", [route("/a/")], "GET", "/a", None, {}),
    ("slash pattern matches slash", [route("/a/")], "GET", "/a/", 0, {}),
    ("plain pattern refuses slash", [route("/a")], "GET", "/a/", None, {}),
    ("param never empty", [route("/a/{x}")], "GET", "/a/", None, {}),
    ("wildcard never empty", [route("/a/*")], "GET", "/a/", None, {}),
    ("wildcard one segment", [route("/a/*")], "GET", "/a/b/c", None, {}),
    ("wildcard", [route("/a/*/c")], "GET", "/a/b/c", 0, {}),
    ("param slash pattern", [route("/a/{x}/")], "GET", "/a/b/", 0, {"x": "b"}),
    # Methods: GET implies HEAD; mismatches fall through.
    ("get implies head", [route("/a", "GET")], "HEAD", "/a", 0, {}),
    ("head does not imply get", [route("/a", "HEAD")], "GET", "/a", None, {}),
    ("method mismatch none", [route("/a", "GET")], "POST", "/a", None, {}),
    ("method mismatch next", [route("/a", "GET"), route("/a", "POST")], "POST", "/a", 1, {}),
    ("mismatch next pattern", [route("/a", "GET"), route("/{x}")], "PUT", "/a", 1, {"x": "a"}),
    ("none allows all", [route("/a")], "PATCH", "/a", 0, {}),
    ("lower-case config", [Route("/a", frozenset({"get"}))], "HEAD", "/a", 0, {}),
    ("empty set allows none", [Route("/a", frozenset())], "GET", "/a", None, {}),
    # Case sensitivity and encoding.
    ("case sensitive", [route("/Admin")], "GET", "/admin", None, {}),
    ("case sensitive param literal", [route("/a/B")], "GET", "/a/b", None, {}),
    ("unicode literal", [route("/café")], "GET", "/caf%C3%A9", 0, {}),
    ("decoded param", [route("/f/{name}")], "GET", "/f/caf%C3%A9%20x", 0, {"name": "café x"}),
    ("decoded reserved", [route("/f/{name}")], "GET", "/f/a%3Bb%25", 0, {"name": "a;b%"}),
    ("params kept raw", [route("/f/{name}")], "GET", "/f/a;v=1", 0, {"name": "a;v=1"}),
    ("two params", [route("/{a}/x/{b}")], "GET", "/1/x/2", 0, {"a": "1", "b": "2"}),
    ("not normalised", [route("/**")], "GET", "", None, {}),
]


@pytest.mark.parametrize(
    ("name", "routes", "method", "path", "expected", "params"), MATCHES, ids=[m[0] for m in MATCHES]
)
def test_match(
    name: str,
    routes: list[Route],
    method: str,
    path: str,
    expected: int | None,
    params: dict[str, str],
) -> None:
    table = RouteTable.compile(routes)
    assert len(table) == len(routes)
    result = table.match(method, path)
    if expected is None:
        assert result is None
    else:
        assert result is not None
        assert result.route is routes[expected]
        assert dict(result.params) == params


def test_empty_table() -> None:
    table: RouteTable[Route] = RouteTable.compile([])
    assert len(table) == 0
    assert table.match("GET", "/") is None


def test_same_route_object_twice() -> None:
    r = route("/a")
    table = RouteTable.compile([r, r])
    assert len(table) == 2
    match = table.match("GET", "/a")
    assert match is not None and match.route is r


# --- many routes -------------------------------------------------------------------


def test_five_hundred_routes() -> None:
    routes: list[Route] = []
    for i in range(500):
        kind = i % 5
        if kind == 0:
            routes.append(route(f"/svc{i}/items/{{item}}", "GET"))
        elif kind == 1:
            routes.append(route(f"/svc{i}/**", "POST"))
        elif kind == 2:
            routes.append(route(f"/svc{i}/a/*/b"))
        elif kind == 3:
            routes.append(route(f"/shared/{{x}}/v{i}"))
        else:
            routes.append(route(f"/svc{i}/"))
    routes.append(route("/**"))
    table = RouteTable.compile(routes)
    assert len(table) == 501

    def expect(method: str, path: str, index: int, params: dict[str, str]) -> None:
        result = table.match(method, path)
        assert result is not None, (method, path)
        assert result.route is routes[index], (method, path)
        assert dict(result.params) == params

    for i in range(500):
        kind = i % 5
        if kind == 0:
            expect("GET", f"/svc{i}/items/it{i}", i, {"item": f"it{i}"})
            expect("HEAD", f"/svc{i}/items/x", i, {"item": "x"})
            expect("POST", f"/svc{i}/items/x", 500, {})
        elif kind == 1:
            expect("POST", f"/svc{i}/deep/er", i, {})
            expect("POST", f"/svc{i}", i, {})
            expect("GET", f"/svc{i}/deep", 500, {})
        elif kind == 2:
            expect("PUT", f"/svc{i}/a/z/b", i, {})
            expect("PUT", f"/svc{i}/a/z/c", 500, {})
        elif kind == 3:
            expect("GET", f"/shared/q/v{i}", i, {"x": "q"})
        else:
            expect("GET", f"/svc{i}/", i, {})
            expect("GET", f"/svc{i}", 500, {})
    expect("GET", "/nowhere/at/all", 500, {})


# --- reference model -----------------------------------------------------------------


def _ref_segments(pattern: list[str], request: list[str]) -> dict[str, str] | None:
    """Match pattern segments against request segments the obvious, recursive way."""
    if not pattern:
        return {} if not request else None
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        return {}
    if not request:
        return None
    segment = request[0]
    if head == "*" or head.startswith("{"):
        if segment == "":
            return None
        found = _ref_segments(rest, request[1:])
        if found is None:
            return None
        return {head[1:-1]: unquote(segment), **found} if head.startswith("{") else found
    literal = normalise_path("/" + head)[1:] if head else ""
    if literal != segment:
        return None
    return _ref_segments(rest, request[1:])


def _ref_match(routes: list[Route], method: str, path: str) -> tuple[int, dict[str, str]] | None:
    """Try every route in file order."""
    for index, r in enumerate(routes):
        if r.methods is not None:
            allowed = r.methods | ({"HEAD"} if "GET" in r.methods else set())
            if method not in allowed:
                continue
        params = _ref_segments(r.path[1:].split("/"), path[1:].split("/"))
        if params is not None:
            return index, params
    return None


_PATTERN_PIECES = ["a", "b", "ab", "café", "%7Eu", "*", "{p}"]
_PATH_PIECES = ["a", "b", "ab", "c", "caf%C3%A9", "~u", "x%20y"]
_METHODS = ["GET", "HEAD", "POST", "DELETE"]


@st.composite
def _routes(draw: st.DrawFn) -> Route:
    pieces = draw(st.lists(st.sampled_from(_PATTERN_PIECES), max_size=4))
    pieces = [f"{{p{i}}}" if p == "{p}" else p for i, p in enumerate(pieces)]
    ending = draw(st.sampled_from(["", "/", "/**"]))
    path = "/" + "/".join(pieces) + ending if pieces else (ending or "/")
    methods = draw(st.none() | st.frozensets(st.sampled_from(_METHODS), max_size=2))
    return Route(path, methods)


_request_paths = st.builds(
    lambda pieces, slash: "/" + "/".join(pieces) + ("/" if slash and pieces else ""),
    st.lists(st.sampled_from(_PATH_PIECES), max_size=5),
    st.booleans(),
)


@given(st.lists(_routes(), max_size=12), st.sampled_from(_METHODS), _request_paths)
def test_table_agrees_with_reference(routes: list[Route], method: str, path: str) -> None:
    assert normalise_path(path) == path
    table = RouteTable.compile(routes)
    expected = _ref_match(routes, method, path)
    result = table.match(method, path)
    if expected is None:
        assert result is None
    else:
        assert result is not None
        index, params = expected
        assert result.route is routes[index]
        assert dict(result.params) == params


def test_repeated_lookups_give_the_walks_answer_and_the_memo_stays_bounded() -> None:
    table = RouteTable.compile(
        [route("/users/{id}", "GET"), route("/users/**"), route("/health", "GET")]
    )
    first = table.match("GET", "/users/7")
    assert first is not None and first.params == {"id": "7"}
    again = table.match("GET", "/users/7")
    assert again is first  # answered from the memo
    with pytest.raises(TypeError):
        again.params["id"] = "8"  # type: ignore[index]  # shared answers are read-only
    post = table.match("POST", "/users/7")
    assert post is not None and post.route.path == "/users/**"  # keyed by method too
    assert table.match("POST", "/health") is None
    assert table.match("POST", "/health") is None  # a miss is remembered as a miss
    for n in range(10_000):
        found = table.match("GET", f"/users/{n}")
        assert found is not None and found.params == {"id": str(n)}
    assert len(table._memo) <= 4096
    long_path = "/users/" + "x" * 1000
    assert table.match("GET", long_path) is not None
    assert ("GET", long_path) not in table._memo  # long paths are never kept
