"""Tests for gateway.config and `keygate check-config`: the example, errors with paths and
lines, several errors at once, environment overrides."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import pytest
import yaml

from gateway.cli import main
from gateway.config import (
    AdminConfig,
    CacheConfig,
    Config,
    ConfigError,
    KeysConfig,
    LastUsedConfig,
    ListenConfig,
    LogConfig,
    RouteConfig,
    ServerConfig,
    UpstreamConfig,
    load_config,
    parse_config,
)
from gateway.keys.rate_limits import RateLimit

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config" / "keygate.example.yaml"
SECRET = "s" * 32
ENV_VARS = (
    "KEYGATE_CONFIG",
    "KEYGATE_DATABASE_URL",
    "KEYGATE_REDIS_URL",
    "KEYGATE_SECRET",
    "KEYGATE_ADMIN_TOKEN",
)


@pytest.fixture(autouse=True)
def _no_keygate_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no config/keygate.yaml lying around


def run(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(args), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def problems_of(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "test.yaml", env or {})
    return [str(p) for p in info.value.problems]


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "keygate.yaml"
    path.write_text(text)
    return str(path)


# --- the shipped example -------------------------------------------------------------


def test_check_config_accepts_the_shipped_example() -> None:
    assert run("check-config", "--config", str(EXAMPLE)) == (0, "ok\n", "")


def test_config_option_before_the_command_is_used(tmp_path: Path) -> None:
    assert run("--config", str(EXAMPLE), "check-config") == (0, "ok\n", "")
    code, _, err = run("--config", write(tmp_path, "cache: {local_tl: 1s}\n"), "check-config")
    assert code == 1 and "cache.local_tl" in err


def test_route_rate_limit_is_read() -> None:
    text = ROUTES + (
        "  - {path: /x, upstream: a, rate_limit: {requests: 100, per: 1m}}\n"
        "  - {path: /y, upstream: a}\n"
    )
    limited, unlimited = parse_config(text, "t.yaml", {}).routes
    assert limited.rate_limit == RateLimit(100, 60)
    assert unlimited.rate_limit is None


def test_public_route_rate_limit_message_says_why() -> None:
    found = problems_of(
        ROUTES + "  - {path: /x, upstream: a, public: true, rate_limit: {requests: 5, per: 1m}}\n"
    )
    assert found == [
        "line 3: routes[0].rate_limit: a public route cannot have a rate limit: "
        "limits are counted per API key, and public routes take none"
    ]


def test_example_loads_to_the_documented_values() -> None:
    config = parse_config(EXAMPLE.read_text(), str(EXAMPLE), {})
    assert config.listen == ListenConfig("0.0.0.0:8080", "127.0.0.1:8081")
    assert dict(config.keys.prefixes) == {"live": "kg_live_", "test": "kg_test_"}
    assert config.keys.accept_envs == {"live", "test"}
    assert (
        config.keys.argon2.time_cost,
        config.keys.argon2.memory_kib,
        config.keys.argon2.parallelism,
    ) == (2, 19456, 1)
    assert config.cache.local_ttl == 5.0 and config.cache.redis_ttl == 600.0
    assert config.upstreams["sessions"].url == "http://127.0.0.1:9000"
    assert [r.path for r in config.routes][:2] == ["/api/v1/sessions/**"] * 2
    # Same path, own names: a limit on one never spends the other's budget.
    assert [r.name for r in config.routes][:2] == ["sessions-read", "sessions-write"]
    assert config.routes[1].max_body == 10 * 1024 * 1024
    assert config.routes[-1].public and config.routes[-1].name == "health"
    assert config.routes[2].org_param == "org"
    assert config.log.access_log and config.log.access_log_flush == 1.0
    assert config.routes[0].rate_limit == RateLimit(100, 60)


def _field_names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def test_example_documents_every_field() -> None:
    data = yaml.safe_load(EXAMPLE.read_text())
    text = EXAMPLE.read_text()
    sections = {
        "listen": ListenConfig,
        "keys": KeysConfig,
        "cache": CacheConfig,
        "last_used": LastUsedConfig,
        "server": ServerConfig,
        "log": LogConfig,
        "admin": AdminConfig,
    }
    for name, cls in sections.items():
        documented = set(data[name] or {}) | {
            line.split(":")[0].strip("# ")
            for line in text.splitlines()
            if line.lstrip().startswith("#")
        }
        assert _field_names(cls) <= documented, name
    assert set(data["keys"]["argon2"]) == {"time_cost", "memory_kib", "parallelism"}
    assert _field_names(UpstreamConfig) - {"name"} <= set(data["upstreams"]["sessions"])
    top = (_field_names(Config) - {"source", "secret", "admin_token"}) | {"routes", "upstreams"}
    assert top <= set(data)
    for field in _field_names(RouteConfig) - {"line"}:
        assert f"# {field}:" in text or f"{field}:" in text, field
    assert "KEYGATE_SECRET" in text and "KEYGATE_ADMIN_TOKEN" in text


# --- errors name the field and the line --------------------------------------------------

TYPO = """\
listen:
  proxy: "0.0.0.0:8080"
cache:
  local_ttl: 5s
  max_entires: 100
upstreams: {a: {url: 'http://x'}}
routes: [{path: /x, upstream: a}]
"""


def test_typo_field_is_named_with_its_line(tmp_path: Path) -> None:
    code, out, err = run("check-config", "--config", write(tmp_path, TYPO))
    assert (code, out) == (1, "")
    assert "line 5" in err and "cache.max_entires" in err and "unknown field" in err
    assert "max_entries" in err  # the known fields are listed as a hint


def test_config_error_in_other_commands_is_one_line_and_exit_1(tmp_path: Path) -> None:
    code, out, err = run("keys", "list", "--org", "x", "--config", write(tmp_path, TYPO))
    assert (code, out) == (1, "")
    assert err.count("\n") == 1 and "cache.max_entires" in err


SEVERAL = """\
listen:
  proxy: nope
cache:
  local_ttl: forever
keys:
  argon2: {time_cost: 0}
  prefixes: {live: "kg live"}
upstreams:
  a: {url: "http://127.0.0.1:9000", timeout: soon}
routes:
  - {path: /x, upstream: b, scopes: ["a::b"], methdos: [GET]}
  - {upstream: a}
bogus: 1
"""


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    code, _, err = run("check-config", "--config", write(tmp_path, SEVERAL))
    assert code == 1
    lines = err.splitlines()
    expected = [
        ("line 2", "listen.proxy"),
        ("line 4", "cache.local_ttl"),
        ("line 6", "keys.argon2.time_cost"),
        ("line 7", "keys.prefixes.live"),
        ("line 9", "upstreams.a.timeout"),
        ("line 11", "routes[0].upstream"),
        ("line 11", "routes[0].scopes"),
        ("line 11", "routes[0].methdos"),
        ("line 12", "routes[1].path"),
        ("line 13", "bogus"),
    ]
    for where, path in expected:
        assert any(where + ":" in line and f" {path}:" in line for line in lines), (path, err)
    assert len(lines) == len(expected)
    assert all(line.startswith(str(tmp_path)) for line in lines)  # each names the file


ROUTES = "upstreams: {a: {url: 'http://x'}}\nroutes:\n"
MINIMAL = ROUTES + "  - {path: /x, upstream: a}\n"


@pytest.mark.parametrize(
    ("text", "line", "path"),
    [
        ("dev: yes please\n", 1, "dev"),
        ("server:\n  workers: 0\n", 2, "server.workers"),
        ("log:\n  level: loud\n", 2, "log.level"),
        ("log:\n  access_log_flush: 1\n", 2, "log.access_log_flush"),
        ("keys:\n  accept_envs: [prod]\n", 2, "keys.accept_envs"),
        ("keys:\n  prefixes: {live: a_, test: a_}\n", 2, "keys.prefixes"),
        ("database_url: mysql://x\n", 1, "database_url"),
        ("redis_url: 6379\n", 1, "redis_url"),
        ("cache:\n  local_ttl: 0s\n", 2, "cache.local_ttl"),
        ("cache:\n  local_ttl: 5\n", 2, "cache.local_ttl"),
        ("cache:\n  local_ttl: 5s\n  max_age: 2s\n", 3, "cache.max_age"),
        ("cache:\n  max_age: 0s\n", 2, "cache.max_age"),
        ("upstreams:\n  a: {url: 'ftp://x'}\n", 2, "upstreams.a.url"),
        ("upstreams:\n  a: {timeout: 5s}\n", 2, "upstreams.a.url"),
        (
            ROUTES + "  - {path: /x, upstream: a, max_body: lots}\n",
            3,
            "routes[0].max_body",
        ),
        (
            ROUTES + "  - {path: /x, upstream: a, public: true, scopes: [r]}\n",
            3,
            "routes[0].public",
        ),
        (
            ROUTES + "  - {path: /x, upstream: a, org_param: org}\n",
            3,
            "routes[0].org_param",
        ),
        (
            ROUTES + "  - {path: /x, upstream: a, rate_limit: {requests: 0, per: 1m}}\n",
            3,
            "routes[0].rate_limit.requests",
        ),
        (
            ROUTES + "  - path: /x\n    upstream: a\n    rate_limit:\n"
            "      requests: 5\n      per: 500ms\n",
            7,
            "routes[0].rate_limit.per",
        ),
        (
            ROUTES + "  - {path: /x, upstream: a, rate_limit: {requests: 5, per: xyz}}\n",
            3,
            "routes[0].rate_limit.per",
        ),
        (
            ROUTES + "  - {path: /x, upstream: a}\n  - {path: /y, upstream: a,\n"
            "     rate_limit: {requests: 5}}\n",
            5,
            "routes[1].rate_limit.per",
        ),
        (
            ROUTES + "  - {path: /x, upstream: a, rate_limit: {requests: 5, per: 1m, burst: 2}}\n",
            3,
            "routes[0].rate_limit.burst",
        ),
        (ROUTES + "  - {path: /x, upstream: a, rate_limit: 5/1m}\n", 3, "routes[0].rate_limit"),
        (
            ROUTES + "  - {path: /x, upstream: a, public: true,\n"
            "     rate_limit: {requests: 5, per: 1m}}\n",
            4,
            "routes[0].rate_limit",
        ),
        ("routes: {a: 1}\n", 1, "routes"),
        ("cache: 5\n", 1, "cache"),
    ],
)
def test_bad_values_name_path_and_line(text: str, line: int, path: str) -> None:
    found = problems_of(text)
    assert any(p.startswith(f"line {line}: {path}:") for p in found), found


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("cache:\n  local_ttl: 5s\n   bad: [\n", 3),
        ("listen: {proxy: '0.0.0.0:8080'\n", 2),
        ("cache:\n\tlocal_ttl: 5s\n", 2),
        ("cache: {}\nlog: {}\ncache: {}\n", 3),  # duplicate keys are an error, not last-wins
        ("a: 'unterminated\n", 2),
    ],
)
def test_bad_yaml_gives_a_line(text: str, line: int, tmp_path: Path) -> None:
    code, out, err = run("check-config", "--config", write(tmp_path, text))
    assert (code, out) == (1, "")
    assert f"line {line}:" in err, err


def test_top_level_must_be_a_mapping() -> None:
    assert problems_of("- listen\n") == [
        "line 1: must be a mapping of fields",
        "routes: at least one route is required (see config/keygate.example.yaml)",
    ]


def test_unreadable_file_is_a_clear_error(tmp_path: Path) -> None:
    code, _, err = run("check-config", "--config", str(tmp_path))  # a folder
    assert code == 1
    assert str(tmp_path) in err and "cannot read" in err


# --- a config that cannot silently be wrong: a file, and routes ---------------------------


def test_no_config_file_is_an_error_naming_where_it_looked(tmp_path: Path) -> None:
    # The bug this guards: `keygate check-config` in an empty folder said "ok".
    code, out, err = run("check-config")
    assert (code, out) == (1, "")
    assert str(tmp_path / "config" / "keygate.yaml") in err
    assert "--config" in err and "KEYGATE_CONFIG" in err
    assert len(err.splitlines()) == 1


def test_other_commands_refuse_a_missing_config_too() -> None:
    code, out, err = run("keys", "list", "--org", "x")
    assert (code, out) == (1, "")
    assert err.startswith("keygate: config error: config/keygate.yaml: no config file at")


@pytest.mark.parametrize("given", ["--config", "KEYGATE_CONFIG"])
def test_missing_given_file_names_it_and_where_it_came_from(
    given: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "config").mkdir()  # the default exists, but the given file wins
    (tmp_path / "config" / "keygate.yaml").write_text(EXAMPLE.read_text())
    if given == "--config":
        code, _, err = run("check-config", "--config", "nope.yaml")
    else:
        monkeypatch.setenv("KEYGATE_CONFIG", "nope.yaml")
        code, _, err = run("check-config")
    assert code == 1
    assert f"no config file at {tmp_path / 'nope.yaml'} (given by {given})" in err


def test_empty_file_names_the_missing_routes(tmp_path: Path) -> None:
    code, out, err = run("check-config", "--config", write(tmp_path, ""))
    assert (code, out) == (1, "")
    assert err == (
        f"{tmp_path / 'keygate.yaml'}: routes: at least one route is required"
        " (see config/keygate.example.yaml)\n"
    )


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("upstreams: {a: {url: 'http://x'}}\n", None),
        ("upstreams: {a: {url: 'http://x'}}\nroutes: []\n", 2),
        ("upstreams: {a: {url: 'http://x'}}\nroutes:\n", 2),
    ],
)
def test_a_config_without_routes_is_an_error(text: str, line: int | None) -> None:
    where = f"line {line}: " if line else ""
    assert problems_of(text) == [
        f"{where}routes: at least one route is required (see config/keygate.example.yaml)"
    ]


def test_minimal_config_gives_the_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL), env={})
    assert config.database_url == "postgresql://keygate@localhost/keygate"
    assert config.cache.local_ttl == 5.0
    assert [r.path for r in config.routes] == ["/x"]
    assert config.scopes is None  # no catalogue: any well-formed scope is accepted


# --- environment overrides -------------------------------------------------------------


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        MINIMAL + "database_url: postgresql://file/db\nredis_url: redis://file/0\n"
        "admin_token: from-file\n",
    )
    env = {
        "KEYGATE_DATABASE_URL": "postgresql://u:p@env:5433/db",
        "KEYGATE_REDIS_URL": "redis://env:6380/1",
        "KEYGATE_ADMIN_TOKEN": "from-env",
        "KEYGATE_SECRET": SECRET,
    }
    config = load_config(path, env=env)
    assert config.database_url == "postgresql://u:p@env:5433/db"
    assert config.redis_url == "redis://env:6380/1"
    assert config.admin_token == "from-env"
    assert config.secret == SECRET
    unset = load_config(path, env={})
    assert (unset.database_url, unset.redis_url, unset.admin_token, unset.secret) == (
        "postgresql://file/db",
        "redis://file/0",
        "from-file",
        None,
    )


def test_keygate_config_selects_the_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KEYGATE_CONFIG", write(tmp_path, MINIMAL + "cache: {local_ttl: 7s}\n"))
    assert load_config().cache.local_ttl == 7.0
    # --config wins over KEYGATE_CONFIG.
    assert load_config(str(EXAMPLE)).cache.local_ttl == 5.0


def test_default_path_is_used_when_present(tmp_path: Path) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "keygate.yaml").write_text(MINIMAL + "cache: {local_ttl: 9s}\n")
    assert load_config(env={}).cache.local_ttl == 9.0
    assert load_config(env={}).source == "config/keygate.yaml"


@pytest.mark.parametrize("secret", ["short", "x" * 31])
def test_short_secret_from_env_is_rejected(secret: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEYGATE_SECRET", secret)
    code, out, err = run("check-config", "--config", str(EXAMPLE))
    assert (code, out) == (1, "")
    assert "KEYGATE_SECRET" in err and "32 bytes" in err
    assert secret not in err.replace("KEYGATE_SECRET", "")  # the secret itself is not printed


def test_short_secret_in_file_names_its_line() -> None:
    assert problems_of("log: {}\nsecret: tooshort\n" + MINIMAL) == [
        "line 2: secret: must be at least 32 bytes"
    ]


def test_secret_of_32_bytes_is_accepted() -> None:
    assert parse_config(MINIMAL, "x", {"KEYGATE_SECRET": "x" * 32}).secret == "x" * 32
    # Bytes, not characters: 16 two-byte characters are enough.
    assert parse_config(MINIMAL, "x", {"KEYGATE_SECRET": "é" * 16}).secret == "é" * 16


@pytest.mark.parametrize(
    ("name", "value"),
    [("KEYGATE_DATABASE_URL", "mysql://u:hunter2@db/x"), ("KEYGATE_REDIS_URL", "memcached://x")],
)
def test_bad_env_urls_are_rejected(name: str, value: str) -> None:
    found = problems_of(MINIMAL, {name: value})
    assert len(found) == 1 and found[0].startswith(f"{name}:")
    assert "hunter2" not in found[0]


# --- the trust-boundary fields (server limits, trusted proxies, verify queue) ------------


def test_boundary_fields_default_to_the_documented_values() -> None:
    config = parse_config(EXAMPLE.read_text(), str(EXAMPLE), {})
    server = config.server
    assert (server.header_timeout, server.body_idle_timeout, server.keepalive_timeout) == (
        10.0,
        30.0,
        75.0,
    )
    assert (server.max_header_count, server.max_header_field, server.max_header_bytes) == (
        100,
        8192,
        32768,
    )
    assert server.trusted_proxies == ()
    assert (config.keys.max_queued_verifies_per_org, config.keys.max_queued_verifies) == (32, 256)
    assert all(route.max_message == 1024 * 1024 for route in config.routes)


def test_trusted_proxies_are_networks() -> None:
    config = parse_config(
        ROUTES + "  - {path: /x, upstream: a}\n"
        "server:\n  trusted_proxies: [10.0.0.0/8, 192.168.1.7, 'fd00::/8']\n",
        "t.yaml",
        {},
    )
    assert [str(n) for n in config.server.trusted_proxies] == [
        "10.0.0.0/8",
        "192.168.1.7/32",
        "fd00::/8",
    ]


@pytest.mark.parametrize(
    ("section", "path"),
    [
        ("server:\n  trusted_proxies: [10.0.0.0/33]\n", "server.trusted_proxies"),
        ("server:\n  trusted_proxies: 10.0.0.0/8\n", "server.trusted_proxies"),
        ("server:\n  max_header_field: 64KiB\n", "server.max_header_field"),
        ("server:\n  max_header_bytes: 100\n", "server.max_header_bytes"),
        ("server:\n  header_timeout: 0s\n", "server.header_timeout"),
        ("keys:\n  max_queued_verifies: 4\n", "keys.max_queued_verifies_per_org"),
    ],
)
def test_bad_boundary_fields_name_their_field(section: str, path: str) -> None:
    found = problems_of(ROUTES + "  - {path: /x, upstream: a}\n" + section)
    assert any(f"{path}:" in p for p in found), found


def test_route_max_message_is_a_positive_size() -> None:
    found = problems_of(ROUTES + "  - {path: /x, upstream: a, websocket: true, max_message: 0}\n")
    assert any("routes[0].max_message:" in p for p in found), found


# --- the scopes catalogue -----------------------------------------------------------------

CATALOGUE = """\
upstreams: {a: {url: 'http://x'}}
scopes:
  read: Read things
  workflows:run: Start workflows
routes:
  - {path: /x, upstream: a, scopes: [read]}
  - {path: /y, upstream: a, scopes: ["workflows:run"]}
"""


def test_catalogue_is_read_with_descriptions_and_where_it_stands() -> None:
    config = parse_config(CATALOGUE, "k.yaml", {})
    assert config.scopes is not None
    assert dict(config.scopes.descriptions) == {
        "read": "Read things",
        "workflows:run": "Start workflows",
    }
    assert config.scopes.where == "k.yaml line 2"
    assert config.scopes.knows("workflows:*") and not config.scopes.knows("write")


def test_route_scope_outside_the_catalogue_names_the_route_line() -> None:
    text = CATALOGUE + "  - {path: /z, upstream: a, scopes: [raed]}\n"
    assert problems_of(text) == [
        'line 8: routes[2].scopes: scope "raed" is not in the scopes catalogue; '
        'did you mean "read"?'
    ]


@pytest.mark.parametrize(
    ("catalogue", "line", "path", "message"),
    [
        ("scopes: [read]\n", 1, "scopes", "must map each scope keys may carry"),
        ("scopes: {}\n", 1, "scopes", "must map each scope keys may carry"),
        ("scopes:\n", 1, "scopes", "must map each scope keys may carry"),
        ("scopes:\n  read: ok\n  'a::b': bad\n", 3, "scopes.a::b", "'a::b' is not a valid"),
        ("scopes:\n  'w:*': all w\n", 2, "scopes.w:*", "list single scopes here"),
        ("scopes:\n  '*': all\n", 2, "scopes.*", "list single scopes here"),
        ("scopes:\n  read: ''\n", 2, "scopes.read", "needs a description"),
        ("scopes:\n  read:\n", 2, "scopes.read", "needs a description"),
        ("scopes:\n  read: 5\n", 2, "scopes.read", "needs a description"),
    ],
)
def test_bad_catalogue_names_entry_and_line(
    catalogue: str, line: int, path: str, message: str
) -> None:
    found = problems_of(catalogue + MINIMAL)
    assert len(found) == 1 and found[0].startswith(f"line {line}: {path}: {message}"), found


def test_the_example_catalogue_covers_the_example_routes() -> None:
    config = parse_config(EXAMPLE.read_text(), str(EXAMPLE), {})
    assert config.scopes is not None
    required = {scope for route in config.routes for scope in route.scopes}
    assert required and required <= set(config.scopes.descriptions)
    assert {"keys:read", "keys:manage"} <= set(config.scopes.descriptions)


# --- check-config --json -----------------------------------------------------------------


def test_check_config_json_lists_every_error_with_path_and_line(tmp_path: Path) -> None:
    code, out, err = run(
        "check-config",
        "--json",
        "--config",
        write(
            tmp_path,
            CATALOGUE + "  - {path: /z, upstream: a, scopes: [raed]}\ncache: {local_tl: 1s}\n",
        ),
    )
    assert code == 1
    report = json.loads(out)
    assert report["ok"] is False and report["checks"] == []
    assert report["source"] == str(tmp_path / "keygate.yaml")
    assert [(e["path"], e["line"]) for e in report["errors"]] == [
        ("cache.local_tl", 9),
        ("routes[2].scopes", 8),
    ]
    assert "unknown field" in report["errors"][0]["message"]
    assert 'did you mean "read"?' in report["errors"][1]["message"]
    assert err.endswith("keygate.yaml: 2 problems in the configuration\n")
    assert len(err.splitlines()) == 1


def test_check_config_json_ok(tmp_path: Path) -> None:
    code, out, err = run("check-config", "--json", "--config", str(EXAMPLE))
    assert (code, err) == (0, "")
    assert json.loads(out) == {"ok": True, "source": str(EXAMPLE), "errors": [], "checks": []}


def test_check_config_json_missing_file(tmp_path: Path) -> None:
    code, out, _ = run("check-config", "--json")
    assert code == 1
    [error] = json.loads(out)["errors"]
    assert error["path"] is None and error["line"] is None
    assert str(tmp_path / "config" / "keygate.yaml") in error["message"]


# --- check listeners (SPEC §12) ---------------------------------------------------------


def test_check_listeners_are_off_unless_set_and_read_when_set() -> None:
    off = parse_config(ROUTES + "  - {path: /x, upstream: a}\n", "t.yaml", {})
    assert (off.listen.check, off.listen.check_grpc) == (None, None)
    on = parse_config(
        "listen: {check: '127.0.0.1:8082', check_grpc: '[::1]:9191'}\n"
        + ROUTES
        + "  - {path: /x, upstream: a}\n",
        "t.yaml",
        {},
    )
    assert (on.listen.check, on.listen.check_grpc) == ("127.0.0.1:8082", "[::1]:9191")


@pytest.mark.parametrize(
    ("listen", "path", "says"),
    [
        ("{check: 8082}", "listen.check", "HOST:PORT"),
        ("{check_grpc: 'localhost'}", "listen.check_grpc", "HOST:PORT"),
        ("{proxy: '0.0.0.0:8080', check: '0.0.0.0:8080'}", "listen.check", "listen.proxy"),
        ("{check: '127.0.0.1:8082', check_grpc: '127.0.0.1:8082'}", "listen.check_grpc", "check"),
    ],
)
def test_check_listener_mistakes_name_the_field(listen: str, path: str, says: str) -> None:
    found = problems_of(f"listen: {listen}\n" + ROUTES + "  - {path: /x, upstream: a}\n")
    assert any(p.startswith(f"line 1: {path}:") and says in p for p in found), found
