"""Configuration: frozen dataclasses loaded from one YAML file plus environment overrides.

Every problem is collected (not just the first) and reported with its field path and the
line it stands on, so `keygate check-config` can list them all at once.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from gateway.keys.rate_limits import RateLimit, RateLimitError, check_requests, check_window
from gateway.keys.scopes import ScopeCatalogue, ScopeError, UnknownScope, validate_scope
from gateway.units import parse_duration, parse_size
from gateway.yaml_source import YamlDocument, YamlError, load_yaml

DEFAULT_CONFIG_PATH = Path("config/keygate.yaml")
ENVS = ("live", "test")
_PREFIX = re.compile(r"[A-Za-z0-9_-]{1,16}")
_HOST_PORT = re.compile(r"(?P<host>\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]*):(?P<port>\d{1,5})")
_METHOD = re.compile(r"[A-Z]{1,20}")
MIN_SECRET_BYTES = 32


@dataclass(frozen=True)
class Argon2Params:
    time_cost: int = 2
    memory_kib: int = 19456
    parallelism: int = 1


@dataclass(frozen=True)
class KeysConfig:
    prefixes: Mapping[str, str] = field(
        default_factory=lambda: {"live": "kg_live_", "test": "kg_test_"}
    )
    accept_envs: frozenset[str] = frozenset(ENVS)
    argon2: Argon2Params = Argon2Params()
    verify_threads: int = 2
    # argon2 verifies waiting for a thread, per org and in all; beyond them a first-seen
    # key is answered 503 auth_unavailable at once instead of queueing without bound.
    max_queued_verifies_per_org: int = 32
    max_queued_verifies: int = 256


@dataclass(frozen=True)
class CacheConfig:
    local_ttl: float = 5.0
    # How long an entry lives while an invalidation channel is live and caught up (it is
    # refreshed in the background before then); local_ttl bounds it otherwise.
    max_age: float = 600.0
    max_entries: int = 100_000
    redis_ttl: float = 600.0
    failed_ttl: float = 10.0
    max_failures_per_key: int = 20
    # Gaps between key ids known to hold no key (negative caching), while PostgreSQL's
    # channel (which announces new keys) is live; at most DEGRADED_LOCAL_TTL otherwise.
    unknown_ttl: float = 60.0


@dataclass(frozen=True)
class LastUsedConfig:
    flush_interval: float = 5.0
    max_pending: int = 100_000


@dataclass(frozen=True)
class ListenConfig:
    proxy: str = "0.0.0.0:8080"
    admin: str = "127.0.0.1:8081"
    # External authorization (SPEC §12): HTTP check APIs and Envoy's gRPC Check; off: None.
    check: str | None = None
    check_grpc: str | None = None


@dataclass(frozen=True)
class ServerConfig:
    workers: int = 1
    drain_delay: float = 5.0  # after a stop signal: /readyz 503, still accepting
    drain_timeout: float = 30.0
    store_timeout: float = 2.0
    header_timeout: float = 10.0  # the whole request head, from its first byte
    body_idle_timeout: float = 30.0  # longest wait for the next bytes of a request body
    keepalive_timeout: float = 75.0  # idle keep-alive connections are closed after this
    max_header_count: int = 100
    max_header_field: int = 8190  # bytes of one header line (and of the request line)
    max_header_bytes: int = 32768  # bytes of the whole header section
    # Peers whose X-Forwarded-For is believed (load balancers in front of the gateway).
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()


@dataclass(frozen=True)
class LogConfig:
    level: str = "info"
    format: str = "json"
    access_log: bool = True
    access_log_flush: float = 1.0


@dataclass(frozen=True)
class AdminConfig:
    allow_unauthenticated_loopback: bool = False


@dataclass(frozen=True)
class OidcConfig:
    """Single sign-on for the console (SPEC §10): an OpenID Connect provider."""

    issuer: str  # discovery at {issuer}/.well-known/openid-configuration
    client_id: str
    client_secret: str | None = None  # KEYGATE_OIDC_CLIENT_SECRET overrides; None: public client
    scopes: tuple[str, ...] = ("openid", "email", "profile")
    label: str = "single sign-on"  # the button says "Sign in with <label>"


@dataclass(frozen=True)
class ConsoleConfig:
    """The console at /console/ on the admin listener (SPEC §10)."""

    enabled: bool = True
    # The origin people reach the admin listener at (https://keygate.example.com): invite
    # links and the OIDC redirect URI are built from it. None: http://<listen.admin>.
    public_url: str | None = None
    idle_timeout: float = 8 * 3600.0
    absolute_timeout: float = 7 * 86400.0
    invite_ttl: float = 86400.0
    oidc: OidcConfig | None = None


# Signature algorithms a user token may use: public-key ones only. `none` proves nothing,
# and HS* would need a shared secret per issuer (Keygate does not support HS* issuers:
# with a JWKS of public keys an HS* token is the RS/HS confusion attack).
TOKEN_ALGORITHMS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)


@dataclass(frozen=True)
class UserTokenIssuer:
    """An identity provider whose JWT access tokens the proxy accepts (SPEC §11)."""

    issuer: str  # exactly the tokens' `iss`
    audience: str  # must be in the tokens' `aud` (a string or an array)
    jwks_url: str | None = None  # None: `jwks_uri` from {issuer}/.well-known/openid-configuration
    algorithms: tuple[str, ...] = ("RS256", "ES256")
    org_claim: str = "org"
    scopes_claim: str = "scope"
    leeway: float = 30.0
    line: int | None = None


@dataclass(frozen=True)
class UpstreamConfig:
    name: str
    url: str
    connect_timeout: float = 2.0
    timeout: float = 30.0
    max_connections: int = 256


@dataclass(frozen=True)
class RouteConfig:
    path: str
    upstream: str
    name: str
    methods: frozenset[str] | None = None
    scopes: tuple[str, ...] = ()
    public: bool = False
    websocket: bool = False
    org_param: str | None = None
    forward_credentials: bool = False
    max_body: int | None = None
    max_message: int = 1024 * 1024  # largest WebSocket message relayed (1009 beyond it)
    rate_limit: RateLimit | None = None
    line: int | None = None


@dataclass(frozen=True)
class Config:
    source: str = "<defaults>"
    dev: bool = False
    listen: ListenConfig = ListenConfig()
    database_url: str = "postgresql://keygate@localhost/keygate"
    redis_url: str = "redis://localhost:6379/0"
    secret: str | None = None
    admin_token: str | None = None
    keys: KeysConfig = KeysConfig()
    cache: CacheConfig = CacheConfig()
    last_used: LastUsedConfig = LastUsedConfig()
    server: ServerConfig = ServerConfig()
    log: LogConfig = LogConfig()
    admin: AdminConfig = AdminConfig()
    console: ConsoleConfig = ConsoleConfig()
    upstreams: Mapping[str, UpstreamConfig] = field(default_factory=dict)
    routes: tuple[RouteConfig, ...] = ()
    scopes: ScopeCatalogue | None = None  # None: any well-formed scope may be granted
    user_tokens: tuple[UserTokenIssuer, ...] = ()


@dataclass(frozen=True)
class ConfigProblem:
    path: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line else ""
        return f"{where}{self.path}: {self.message}" if self.path else f"{where}{self.message}"


class ConfigError(Exception):
    """The configuration is invalid; `problems` lists every one found."""

    def __init__(self, source: str, problems: list[ConfigProblem]) -> None:
        self.source = source
        self.problems = problems
        super().__init__("\n".join(f"{source}: {p}" for p in problems))


T = TypeVar("T")
_MISSING = object()


class _Reader:
    """Reads one mapping of the document, recording problems instead of raising."""

    def __init__(
        self,
        doc: YamlDocument,
        problems: list[ConfigProblem],
        path: tuple[str | int, ...] = (),
        data: Any = _MISSING,
    ) -> None:
        self.doc = doc
        self.problems = problems
        self.path = path
        raw = doc.data if data is _MISSING else data
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            self.problem((), "must be a mapping of fields")
            raw = {}
        self.data: dict[Any, Any] = raw
        self.seen: set[str] = set()

    def dotted(self, extra: tuple[str | int, ...]) -> str:
        out = ""
        for part in (*self.path, *extra):
            out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
        return out

    def problem(self, extra: tuple[str | int, ...], message: str) -> None:
        full = (*self.path, *extra)
        self.problems.append(ConfigProblem(self.dotted(extra), self.doc.line_of(full), message))

    def get(self, name: str, default: T, convert: Callable[[Any], T]) -> T:
        self.seen.add(name)
        if name not in self.data:
            return default
        try:
            return convert(self.data[name])
        except (ValueError, TypeError) as exc:
            self.problem((name,), str(exc))
            return default

    def raw(self, name: str) -> Any:
        self.seen.add(name)
        return self.data.get(name)

    def section(self, name: str) -> _Reader:
        self.seen.add(name)
        return _Reader(self.doc, self.problems, (*self.path, name), self.data.get(name))

    def done(self) -> None:
        for key in self.data:
            if key not in self.seen:
                known = ", ".join(sorted(self.seen))
                self.problem((str(key),), f"unknown field (known fields here: {known})")


def _str(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("must be a non-empty string")
    return value


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


def _positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError("must be a whole number of at least 1")
    return value


def _duration(value: Any) -> float:
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a duration; write it as a string such as 5s or 24h")
    return parse_duration(value)


def _positive_duration(value: Any) -> float:
    seconds = _duration(value)
    if seconds <= 0:
        raise ValueError("must be longer than 0s")
    return seconds


def _host_port(value: Any) -> str:
    if not isinstance(value, str) or not _HOST_PORT.fullmatch(value):
        raise ValueError(f"{value!r} is not HOST:PORT (for example 0.0.0.0:8080)")
    if int(value.rsplit(":", 1)[1]) > 65535:
        raise ValueError(f"{value!r}: port must be at most 65535")
    return value


def _optional_host_port(value: Any) -> str | None:
    return None if value is None else _host_port(value)


def _distinct_listeners(reader: _Reader, listen: ListenConfig) -> None:
    """Two listeners on one HOST:PORT would fight over it (SO_REUSEPORT lets them both bind)."""
    seen: dict[str, str] = {}
    for name in ("proxy", "admin", "check", "check_grpc"):
        address = getattr(listen, name)
        if address is None:
            continue
        if address in seen:
            reader.problem((name,), f"{address} is already listen.{seen[address]}'s address")
        seen.setdefault(address, name)


def _url(schemes: tuple[str, ...]) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        text = _str(value)
        if not text.startswith(tuple(f"{s}://" for s in schemes)):
            raise ValueError(
                f"must be a URL starting with {' or '.join(s + '://' for s in schemes)}"
            )
        return text

    return check


def _choice(options: tuple[str, ...]) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in options:
            raise ValueError(f"{value!r} is not one of: {', '.join(options)}")
        return str(value)

    return check


def _size(value: Any) -> int:
    return parse_size(value)


def _positive_size(value: Any) -> int:
    size = parse_size(value)
    if size < 1:
        raise ValueError("must be at least 1 byte")
    return size


def _networks(value: Any) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    if not isinstance(value, list):
        raise ValueError("must be a list of addresses or CIDRs such as [10.0.0.0/8]")
    out = []
    for item in value:
        try:
            out.append(ipaddress.ip_network(str(item), strict=False))
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address or CIDR (e.g. 10.0.0.0/8)") from None
    return tuple(out)


def _header_size(value: Any) -> int:
    size = parse_size(value)
    if size < 1024:
        raise ValueError("must be at least 1KiB")
    return size


def _read_keys(r: _Reader) -> KeysConfig:
    prefixes = dict(KeysConfig().prefixes)
    p = r.section("prefixes")
    for env in ENVS:
        prefixes[env] = p.get(env, prefixes[env], _prefix)
    p.done()
    if prefixes["live"] == prefixes["test"]:
        r.problem(("prefixes",), "live and test prefixes must differ")
    accept = r.get("accept_envs", list(ENVS), _env_list)
    a = r.section("argon2")
    argon2 = Argon2Params(
        time_cost=a.get("time_cost", 2, _positive_int),
        memory_kib=a.get("memory_kib", 19456, _positive_int),
        parallelism=a.get("parallelism", 1, _positive_int),
    )
    if argon2.memory_kib < 8 * argon2.parallelism:
        a.problem(("memory_kib",), "must be at least 8 times parallelism")
    a.done()
    defaults = KeysConfig()
    verify_threads = r.get("verify_threads", defaults.verify_threads, _positive_int)
    per_org = r.get(
        "max_queued_verifies_per_org", defaults.max_queued_verifies_per_org, _positive_int
    )
    queued = r.get("max_queued_verifies", defaults.max_queued_verifies, _positive_int)
    if per_org > queued:
        r.problem(
            ("max_queued_verifies_per_org",), f"must be at most max_queued_verifies ({queued})"
        )
    r.done()
    return KeysConfig(prefixes, frozenset(accept), argon2, verify_threads, per_org, queued)


def _prefix(value: Any) -> str:
    if not isinstance(value, str) or not _PREFIX.fullmatch(value):
        raise ValueError(f"{value!r} is not a key prefix; use 1-16 of A-Z a-z 0-9 _ -")
    return value


def _env_list(value: Any) -> list[str]:
    if not isinstance(value, list) or not value:
        raise ValueError("must be a non-empty list of live and/or test")
    for item in value:
        if item not in ENVS:
            raise ValueError(f"{item!r} is not an environment; use live or test")
    return list(value)


def _read_upstreams(r: _Reader) -> dict[str, UpstreamConfig]:
    out: dict[str, UpstreamConfig] = {}
    for name in list(r.data):
        u = r.section(str(name))
        out[str(name)] = UpstreamConfig(
            name=str(name),
            url=u.get("url", "", _url(("http", "https"))),
            connect_timeout=u.get("connect_timeout", 2.0, _positive_duration),
            timeout=u.get("timeout", 30.0, _positive_duration),
            max_connections=u.get("max_connections", 256, _positive_int),
        )
        if "url" not in u.data:
            u.problem(("url",), "is required")
        u.done()
    return out


def _methods(value: Any) -> frozenset[str]:
    if not isinstance(value, list) or not value:
        raise ValueError("must be a non-empty list of HTTP methods such as [GET, POST]")
    out = set()
    for item in value:
        if not isinstance(item, str) or not _METHOD.fullmatch(item.upper()):
            raise ValueError(f"{item!r} is not an HTTP method")
        out.add(item.upper())
    return frozenset(out)


def _scopes(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ValueError("must be a list of scopes such as [read]")
    try:
        return tuple(validate_scope(s) for s in value)
    except ScopeError as exc:
        raise ValueError(str(exc)) from None


def _read_catalogue(
    doc: YamlDocument, problems: list[ConfigProblem], source: str
) -> ScopeCatalogue | None:
    """The optional `scopes: {name: description}` catalogue; None when it is left out."""
    if not isinstance(doc.data, dict) or "scopes" not in doc.data:
        return None
    raw, line = doc.data["scopes"], doc.line_of(("scopes",))
    if not isinstance(raw, dict) or not raw:
        problems.append(
            ConfigProblem(
                "scopes",
                line,
                "must map each scope keys may carry to its description, "
                "such as {read: Read sessions}; leave it out to accept any scope",
            )
        )
        return None
    descriptions: dict[str, str] = {}
    for name, description in raw.items():
        where = f"scopes.{name}"
        entry_line = doc.line_of(("scopes", str(name)))
        try:
            scope = validate_scope(name)
        except ScopeError as exc:
            problems.append(ConfigProblem(where, entry_line, str(exc)))
            continue
        if scope.endswith("*"):
            problems.append(
                ConfigProblem(
                    where,
                    entry_line,
                    "list single scopes here; a key's wildcard such as "
                    "workflows:* is accepted when it covers a listed scope",
                )
            )
        elif not isinstance(description, str) or not description.strip():
            problems.append(
                ConfigProblem(
                    where, entry_line, "needs a description (a non-empty string) for the console"
                )
            )
        else:
            descriptions[scope] = description.strip()
    return ScopeCatalogue(descriptions, f"{source} line {line}" if line else source)


def _uncatalogued(scopes: tuple[str, ...], catalogue: ScopeCatalogue | None) -> str | None:
    """Why a route's scopes are refused by the catalogue, or None when they are fine."""
    if catalogue is None:
        return None
    try:
        catalogue.check(scopes)
    except UnknownScope as exc:
        return str(UnknownScope(exc.scope, exc.suggestion, ""))  # the line is named already
    return None


def _read_routes(
    doc: YamlDocument,
    problems: list[ConfigProblem],
    upstreams: Mapping[str, UpstreamConfig],
    catalogue: ScopeCatalogue | None = None,
) -> tuple[RouteConfig, ...]:
    from gateway.proxy.routes import PatternError, parse_pattern

    raw = doc.data.get("routes") if isinstance(doc.data, dict) else None
    if raw is None or raw == []:
        # Without routes every request is answered 404: surely not what was meant.
        problems.append(
            ConfigProblem(
                "routes",
                doc.lines.get(("routes",)),
                "at least one route is required (see config/keygate.example.yaml)",
            )
        )
        return ()
    if not isinstance(raw, list):
        problems.append(ConfigProblem("routes", doc.line_of(("routes",)), "must be a list"))
        return ()
    routes = []
    for i, item in enumerate(raw):
        r = _Reader(doc, problems, ("routes", i), item)
        path = r.get("path", "", _str)
        params: tuple[str, ...] = ()
        if not path:
            r.problem(("path",), "is required")
        else:
            try:
                params = parse_pattern(path).param_names
            except PatternError as exc:
                r.problem(("path",), str(exc))
        upstream = r.get("upstream", "", _str)
        if not upstream:
            r.problem(("upstream",), "is required")
        elif upstream not in upstreams:
            known = ", ".join(sorted(upstreams)) or "none defined"
            r.problem(("upstream",), f"unknown upstream {upstream!r} (defined: {known})")
        org_param = r.get("org_param", None, _str)
        if org_param is not None and path and org_param not in params:
            r.problem(("org_param",), f"{org_param!r} is not a {{name}} in path {path!r}")
        route = RouteConfig(
            path=path,
            upstream=upstream,
            name=r.get("name", path, _str),
            methods=r.get("methods", None, _methods),
            scopes=r.get("scopes", (), _scopes),
            public=r.get("public", False, _bool),
            websocket=r.get("websocket", False, _bool),
            org_param=org_param,
            forward_credentials=r.get("forward_credentials", False, _bool),
            max_body=r.get("max_body", None, _size),
            max_message=r.get("max_message", 1024 * 1024, _positive_size),
            rate_limit=_read_rate_limit(r) if "rate_limit" in r.data else None,
            line=doc.line_of(("routes", i)),
        )
        unknown = _uncatalogued(route.scopes, catalogue)
        if unknown:
            r.problem(("scopes",), unknown)
        if route.public and (route.scopes or route.org_param):
            r.problem(("public",), "a public route cannot also require scopes or org_param")
        if route.public and "rate_limit" in r.data:
            r.problem(
                ("rate_limit",),
                "a public route cannot have a rate limit: limits are "
                "counted per API key, and public routes take none",
            )
        r.done()
        routes.append(route)
    return tuple(routes)


def _read_rate_limit(route: _Reader) -> RateLimit | None:
    """`rate_limit: {requests: N, per: <duration>}`; problems name the sub-field."""
    r = route.section("rate_limit")
    if not isinstance(route.data["rate_limit"], dict):
        return None  # the section reader recorded "must be a mapping of fields"
    values: dict[str, int] = {}
    for name, check in (("requests", check_requests), ("per", check_window)):
        r.seen.add(name)
        if name not in r.data:
            r.problem((name,), "is required")
            continue
        try:
            values[name] = check(r.data[name])
        except RateLimitError as exc:
            r.problem((name,), exc.message)
    r.done()
    if len(values) < 2:
        return None
    return RateLimit(values["requests"], values["per"])


def _read_console(c: _Reader, env: Mapping[str, str]) -> ConsoleConfig:
    d = ConsoleConfig()
    public_url = c.get("public_url", None, _url(("http", "https")))
    if public_url is not None:
        public_url = public_url.rstrip("/")
        if public_url.count("/") > 2:
            c.problem(("public_url",), "must be an origin only (https://host[:port]), no path")
    console = ConsoleConfig(
        enabled=c.get("enabled", d.enabled, _bool),
        public_url=public_url,
        idle_timeout=c.get("idle_timeout", d.idle_timeout, _positive_duration),
        absolute_timeout=c.get("absolute_timeout", d.absolute_timeout, _positive_duration),
        invite_ttl=c.get("invite_ttl", d.invite_ttl, _positive_duration),
        oidc=_read_oidc(c.section("oidc"), env) if c.raw("oidc") is not None else None,
    )
    c.done()
    if console.idle_timeout > console.absolute_timeout:
        c.problem(("idle_timeout",), "must be at most absolute_timeout")
    return console


def _read_oidc(o: _Reader, env: Mapping[str, str]) -> OidcConfig | None:
    issuer = o.get("issuer", "", _url(("http", "https")))
    client_id = o.get("client_id", "", _str)
    for name, value in (("issuer", issuer), ("client_id", client_id)):
        if not value and name not in o.data:
            o.problem((name,), "is required for single sign-on")
    secret = env.get("KEYGATE_OIDC_CLIENT_SECRET") or o.get("client_secret", None, _str)
    scopes: tuple[str, ...] = o.get("scopes", ("openid", "email", "profile"), _scope_list)
    if "openid" not in scopes:
        o.problem(("scopes",), "must include openid")
    label = o.get("label", "single sign-on", _str)
    o.done()
    if not issuer or not client_id:
        return None
    return OidcConfig(issuer.rstrip("/"), client_id, secret, scopes, label)


_LOOPBACK_NAMES = frozenset(("localhost",))
MAX_LEEWAY = 600.0  # ten minutes of clock skew is already generous


def is_loopback_url(url: str) -> bool:
    """Whether the URL's host is a loopback address (or `localhost`)."""
    host = urlsplit(url).hostname or ""
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _token_url(value: Any) -> str:
    """An issuer or JWKS URL: https, or http on a loopback host only."""
    text = _str(value)
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{text!r} is not an http(s) URL")
    if parts.scheme != "https" and not is_loopback_url(text):
        raise ValueError("must be https (plain http only on a loopback host such as 127.0.0.1)")
    if parts.fragment or "#" in text:
        raise ValueError("must not contain a fragment (#)")
    return text


def _algorithms(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise ValueError("must be a non-empty list such as [RS256, ES256]")
    out: list[str] = []
    for item in value:
        if not isinstance(item, str):
            raise ValueError(f"{item!r} is not an algorithm name")
        if item.lower() == "none":
            raise ValueError("'none' is never accepted: an unsigned token proves nothing")
        if item.upper().startswith("HS"):
            raise ValueError(
                f"{item} is not supported: HS* tokens need a shared secret, and against a "
                "JWKS of public keys they are the RS/HS confusion attack; use RS*, PS*, ES* "
                "or EdDSA"
            )
        if item not in TOKEN_ALGORITHMS:
            raise ValueError(f"{item!r} is not one of: {', '.join(TOKEN_ALGORITHMS)}")
        if item not in out:
            out.append(item)
    return tuple(out)


def _claim_name(value: Any) -> str:
    text = _str(value)
    if len(text) > 100 or not text.isprintable():
        raise ValueError("must be a claim name (printable, at most 100 characters)")
    return text


def _leeway(value: Any) -> float:
    seconds = _duration(value)
    if seconds > MAX_LEEWAY:
        raise ValueError("must be at most 10m")
    return seconds


def _read_user_tokens(
    doc: YamlDocument, problems: list[ConfigProblem]
) -> tuple[UserTokenIssuer, ...]:
    """`user_tokens:` — a list of trusted issuers (SPEC §11); every problem with its line."""
    raw = doc.data.get("user_tokens") if isinstance(doc.data, dict) else None
    if raw is None:
        return ()
    if not isinstance(raw, list):
        problems.append(
            ConfigProblem("user_tokens", doc.line_of(("user_tokens",)), "must be a list of issuers")
        )
        return ()
    out: list[UserTokenIssuer] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(raw):
        r = _Reader(doc, problems, ("user_tokens", i), item)
        d = UserTokenIssuer("", "")
        issuer = r.get("issuer", "", _token_url)
        audience = r.get("audience", "", _str)
        for name, value in (("issuer", issuer), ("audience", audience)):
            if not value and name not in r.data:
                r.problem((name,), "is required")
        entry = UserTokenIssuer(
            issuer=issuer,
            audience=audience,
            jwks_url=r.get("jwks_url", None, _token_url),
            algorithms=r.get("algorithms", d.algorithms, _algorithms),
            org_claim=r.get("org_claim", d.org_claim, _claim_name),
            scopes_claim=r.get("scopes_claim", d.scopes_claim, _claim_name),
            leeway=r.get("leeway", d.leeway, _leeway),
            line=doc.line_of(("user_tokens", i)),
        )
        r.done()
        if issuer in seen:
            r.problem(
                ("issuer",), f"{issuer!r} is already configured (user_tokens[{seen[issuer]}])"
            )
        elif issuer:
            seen[issuer] = i
        if issuer and audience:
            out.append(entry)
    return tuple(out)


def _scope_list(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError("must be a list of non-empty strings")
    return tuple(value)


def parse_config(text: str, source: str, env: Mapping[str, str]) -> Config:
    """Build a Config from YAML text and environment overrides; raise ConfigError."""
    try:
        doc = load_yaml(text)
    except YamlError as exc:
        raise ConfigError(source, [ConfigProblem("", exc.line, exc.message)]) from None
    problems: list[ConfigProblem] = []
    top = _Reader(doc, problems)
    defaults = Config()
    listen = top.section("listen")
    listen_cfg = ListenConfig(
        proxy=listen.get("proxy", defaults.listen.proxy, _host_port),
        admin=listen.get("admin", defaults.listen.admin, _host_port),
        check=listen.get("check", None, _optional_host_port),
        check_grpc=listen.get("check_grpc", None, _optional_host_port),
    )
    _distinct_listeners(listen, listen_cfg)
    listen.done()
    dev = top.get("dev", False, _bool)
    database_url = top.get("database_url", defaults.database_url, _url(("postgresql", "postgres")))
    redis_url = top.get("redis_url", defaults.redis_url, _url(("redis", "rediss", "unix")))
    secret = top.get("secret", None, _str)
    admin_token = top.get("admin_token", None, _str)
    keys = _read_keys(top.section("keys"))
    c = top.section("cache")
    cache = CacheConfig(
        local_ttl=c.get("local_ttl", 5.0, _positive_duration),
        max_age=c.get("max_age", 600.0, _positive_duration),
        max_entries=c.get("max_entries", 100_000, _positive_int),
        redis_ttl=c.get("redis_ttl", 600.0, _positive_duration),
        failed_ttl=c.get("failed_ttl", 10.0, _positive_duration),
        max_failures_per_key=c.get("max_failures_per_key", 20, _positive_int),
        unknown_ttl=c.get("unknown_ttl", 60.0, _positive_duration),
    )
    if cache.max_age < cache.local_ttl:
        c.problem(
            ("max_age",),
            f"must not be shorter than cache.local_ttl ({cache.local_ttl:g}s): entries "
            "live longest while invalidations arrive, local_ttl only bounds them when not",
        )
    c.done()
    lu = top.section("last_used")
    last_used = LastUsedConfig(
        flush_interval=lu.get("flush_interval", 5.0, _positive_duration),
        max_pending=lu.get("max_pending", 100_000, _positive_int),
    )
    lu.done()
    s = top.section("server")
    sd = ServerConfig()
    server = ServerConfig(
        workers=s.get("workers", sd.workers, _positive_int),
        drain_delay=s.get("drain_delay", sd.drain_delay, _duration),
        drain_timeout=s.get("drain_timeout", sd.drain_timeout, _duration),
        store_timeout=s.get("store_timeout", sd.store_timeout, _positive_duration),
        header_timeout=s.get("header_timeout", sd.header_timeout, _positive_duration),
        body_idle_timeout=s.get("body_idle_timeout", sd.body_idle_timeout, _positive_duration),
        keepalive_timeout=s.get("keepalive_timeout", sd.keepalive_timeout, _positive_duration),
        max_header_count=s.get("max_header_count", sd.max_header_count, _positive_int),
        max_header_field=s.get("max_header_field", sd.max_header_field, _header_size),
        max_header_bytes=s.get("max_header_bytes", sd.max_header_bytes, _header_size),
        trusted_proxies=s.get("trusted_proxies", (), _networks),
    )
    if server.max_header_field > server.max_header_bytes:
        s.problem(
            ("max_header_field",), f"must be at most max_header_bytes ({server.max_header_bytes})"
        )
    s.done()
    lg = top.section("log")
    log = LogConfig(
        level=lg.get("level", "info", _choice(("debug", "info", "warning", "error"))),
        format=lg.get("format", "json", _choice(("json", "text"))),
        access_log=lg.get("access_log", True, _bool),
        access_log_flush=lg.get("access_log_flush", 1.0, _duration),
    )
    lg.done()
    ad = top.section("admin")
    admin = AdminConfig(
        allow_unauthenticated_loopback=ad.get("allow_unauthenticated_loopback", False, _bool)
    )
    ad.done()
    console = _read_console(top.section("console"), env)
    up_reader = top.section("upstreams")
    upstreams = _read_upstreams(up_reader)
    top.raw("scopes")
    catalogue = _read_catalogue(doc, problems, source)
    top.raw("routes")
    routes = _read_routes(doc, problems, upstreams, catalogue)
    top.raw("user_tokens")
    user_tokens = _read_user_tokens(doc, problems)
    top.done()

    database_url = _override(
        env, "KEYGATE_DATABASE_URL", database_url, problems, _url(("postgresql", "postgres"))
    )
    redis_url = _override(
        env, "KEYGATE_REDIS_URL", redis_url, problems, _url(("redis", "rediss", "unix"))
    )
    admin_token = env.get("KEYGATE_ADMIN_TOKEN") or admin_token
    if env.get("KEYGATE_SECRET"):
        secret = env["KEYGATE_SECRET"]
        secret_path, secret_line = "KEYGATE_SECRET", None
    else:
        secret_path, secret_line = "secret", doc.line_of(("secret",))
    if secret is not None and len(secret.encode()) < MIN_SECRET_BYTES:
        problems.append(
            ConfigProblem(secret_path, secret_line, f"must be at least {MIN_SECRET_BYTES} bytes")
        )
    if problems:
        raise ConfigError(source, problems)
    return Config(
        source=source,
        dev=dev,
        listen=listen_cfg,
        database_url=database_url,
        redis_url=redis_url,
        secret=secret,
        admin_token=admin_token,
        keys=keys,
        cache=cache,
        last_used=last_used,
        server=server,
        log=log,
        admin=admin,
        console=console,
        upstreams=upstreams,
        routes=routes,
        scopes=catalogue,
        user_tokens=user_tokens,
    )


def _override(
    env: Mapping[str, str],
    name: str,
    current: str,
    problems: list[ConfigProblem],
    convert: Callable[[Any], str],
) -> str:
    """The environment's value for a field when set, checked like the file's."""
    value = env.get(name)
    if not value:
        return current
    try:
        return convert(value)
    except ValueError as exc:
        problems.append(ConfigProblem(name, None, str(exc)))
        return current


def config_path(explicit: str | None, env: Mapping[str, str]) -> Path | None:
    """The file to load: --config, then KEYGATE_CONFIG, then the default if it exists."""
    if explicit:
        return Path(explicit)
    if env.get("KEYGATE_CONFIG"):
        return Path(env["KEYGATE_CONFIG"])
    return DEFAULT_CONFIG_PATH if DEFAULT_CONFIG_PATH.exists() else None


def load_config(explicit: str | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Load the configuration the way every command does; raise ConfigError."""
    env = os.environ if env is None else env
    path = config_path(explicit, env)
    if path is None or not path.exists():
        raise _missing(explicit, env)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(str(path), [ConfigProblem("", None, f"cannot read: {reason}")]) from None
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        problem = ConfigProblem("", line, f"not UTF-8 text (byte {exc.start})")
        raise ConfigError(str(path), [problem]) from None
    return parse_config(text, str(path), env)


def _missing(explicit: str | None, env: Mapping[str, str]) -> ConfigError:
    """No config file: say where it was looked for, and how to give one."""
    if explicit:
        path, given = Path(explicit), "--config"
    elif env.get("KEYGATE_CONFIG"):
        path, given = Path(env["KEYGATE_CONFIG"]), "KEYGATE_CONFIG"
    else:
        path, given = DEFAULT_CONFIG_PATH, ""
    looked = f"no config file at {path.absolute()}"
    if given:
        reason = f"{looked} (given by {given})"
    else:
        reason = (
            f"{looked} (neither --config nor KEYGATE_CONFIG is set); "
            "copy config/keygate.example.yaml there or pass --config PATH"
        )
    return ConfigError(str(path), [ConfigProblem("", None, reason)])
