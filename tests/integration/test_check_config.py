"""`keygate check-config --connect` against real stores, and the scopes catalogue as the
CLI enforces it (SPEC §7): typos refused with the nearest name, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.cli import Cli
from tests.support.configs import gateway_config
from tests.support.db import Db
from tests.support.gateway_process import closed_port, write_config
from tests.support.stores import Stores

ROUTES = [{"path": "/api/**", "upstream": "api", "scopes": ["read"]}]
UPSTREAMS = {"api": {"url": "http://127.0.0.1:9"}}


def config_file(tmp_path: Path, **sections: object) -> str:
    config = gateway_config(UPSTREAMS, ROUTES, **sections)
    config["server"] = {"store_timeout": "1s"}
    return str(write_config(tmp_path / "keygate.yaml", config))


@pytest.fixture
def point_at(monkeypatch: pytest.MonkeyPatch, stores: Stores) -> Stores:
    """The environment pointing at the session's stores; tests replace one URL to break it."""
    monkeypatch.setenv("KEYGATE_DATABASE_URL", stores.database_url)
    monkeypatch.setenv("KEYGATE_REDIS_URL", stores.redis_url)
    monkeypatch.delenv("KEYGATE_CONFIG", raising=False)
    return stores


# --- --connect --------------------------------------------------------------------------


def test_connect_reports_each_store_and_the_migrations(point_at: Stores, tmp_path: Path) -> None:
    path = config_file(tmp_path)
    result = Cli()("check-config", "--connect", "--config", path)
    assert (result.code, result.err) == (0, ""), result.err
    lines = result.out.splitlines()
    assert lines[:3] == [f"config: ok ({path})", "postgres: ok", "redis: ok"]
    assert lines[3].startswith("migrations: ok (") and len(lines) == 4

    report = Cli()("check-config", "--connect", "--json", "--config", path).json()
    assert report["ok"] is True and report["errors"] == []
    assert [(c["name"], c["ok"]) for c in report["checks"]] == [
        ("postgres", True),
        ("redis", True),
        ("migrations", True),
    ]


def test_connect_names_an_unreachable_redis(
    point_at: Stores, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEYGATE_REDIS_URL", f"redis://127.0.0.1:{closed_port()}/0")
    result = Cli()("check-config", "--connect", "--config", config_file(tmp_path))
    assert result.code == 1
    assert "postgres: ok" in result.out
    assert "redis: unreachable (ConnectionError" in result.out
    assert result.err == "keygate: error: the configuration is valid, but redis is not ready\n"


def test_connect_names_an_unreachable_postgres_without_its_password(
    point_at: Stores, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"postgresql://keygate:hunter2secret@127.0.0.1:{closed_port()}/keygate"
    monkeypatch.setenv("KEYGATE_DATABASE_URL", url)
    result = Cli()("check-config", "--connect", "--json", "--config", config_file(tmp_path))
    assert result.code == 1
    checks = {c["name"]: c for c in result.json()["checks"]}
    assert checks["postgres"]["ok"] is False
    assert checks["postgres"]["detail"].startswith("unreachable (cannot reach the database")
    assert checks["migrations"] == {
        "name": "migrations",
        "ok": False,
        "detail": "not checked: postgres is unreachable",
    }
    assert checks["redis"]["ok"] is True
    assert "hunter2secret" not in result.out + result.err
    assert "postgres, migrations are not ready" in result.err


def test_connect_lists_migrations_not_applied_and_changes_nothing(
    point_at: Stores, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_database_url: str
) -> None:
    monkeypatch.setenv("KEYGATE_DATABASE_URL", fresh_database_url)
    result = Cli()("check-config", "--connect", "--config", config_file(tmp_path))
    assert result.code == 1
    assert "postgres: ok" in result.out
    [line] = [x for x in result.out.splitlines() if x.startswith("migrations:")]
    assert line.startswith("migrations: not applied: 0001_initial, 0002_")
    assert line.endswith("; run `keygate migrate`")
    assert "migrations is not ready" in result.err
    # Read-only: the check created nothing, not even the migrations table.
    tables = Db(fresh_database_url).fetch(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
    )
    assert tables == []

    assert Cli()("migrate", "--config", config_file(tmp_path)).code == 0
    assert Cli()("check-config", "--connect", "--config", config_file(tmp_path)).code == 0


def test_connect_is_not_tried_on_an_invalid_config(point_at: Stores, tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("upstreams: {a: {url: 'http://x'}}\n")
    result = Cli()("check-config", "--connect", "--config", str(path))
    assert (result.code, result.out) == (1, "")
    assert (
        result.err == f"{path}: routes: at least one route is required "
        "(see config/keygate.example.yaml)\n"
    )


# --- the scopes catalogue through the CLI -------------------------------------------------

CATALOGUE = {
    "read": "Read things",
    "workflows:run": "Start workflows",
    "workflows:cancel": "Cancel workflows",
}


@pytest.fixture
def catalogued(clean_stores: Stores, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """KEYGATE_CONFIG: a config with a scopes catalogue; an org `acme` exists."""
    path = config_file(tmp_path, scopes=CATALOGUE)
    monkeypatch.setenv("KEYGATE_CONFIG", path)
    Cli().ok("orgs", "create", "acme")
    return path


def _catalogue_line(path: str) -> int:
    lines = Path(path).read_text().splitlines()
    return lines.index("scopes:") + 1


def test_cli_refuses_a_scope_outside_the_catalogue(catalogued: str, db: Db) -> None:
    before = db.counts()
    result = Cli()(
        "keys", "create", "--org", "acme", "--name", "ci", "--scope", "read", "--scope", "reed"
    )
    assert (result.code, result.out) == (1, "")
    assert result.err == (
        f'keygate: error: scope "reed" is not in the scopes catalogue ({catalogued} line '
        f'{_catalogue_line(catalogued)}); did you mean "read"?\n'
    )
    assert db.counts() == before  # no key, no audit entry

    wildcard = Cli()("keys", "create", "--org", "acme", "--name", "w", "--scope", "workflow:*")
    assert wildcard.code == 1 and 'did you mean "workflows:*"?' in wildcard.err


@pytest.mark.parametrize("scopes", [["read"], ["workflows:*"], ["*"], ["read", "workflows:run"]])
def test_cli_accepts_catalogued_scopes_and_covering_wildcards(
    catalogued: str, scopes: list[str]
) -> None:
    args = [a for s in scopes for a in ("--scope", s)]
    created = Cli().ok("keys", "create", "--org", "acme", "--name", "ci", "--json", *args)
    assert created.json()["key"]["scopes"] == sorted(scopes)


def test_cli_update_refuses_an_unknown_scope_and_keeps_the_key(catalogued: str) -> None:
    created = (
        Cli()
        .ok("keys", "create", "--org", "acme", "--name", "ci", "--scope", "read", "--json")
        .json()
    )
    key_id = created["key"]["id"]
    refused = Cli()("keys", "update", key_id, "--scope", "workflows:rn")
    assert refused.code == 1
    assert 'scope "workflows:rn" is not in the scopes catalogue' in refused.err
    assert 'did you mean "workflows:run"?' in refused.err
    assert Cli().ok("keys", "show", key_id, "--json").json()["scopes"] == ["read"]
    updated = Cli().ok("keys", "update", key_id, "--scope", "workflows:run", "--json")
    assert updated.json()["scopes"] == ["workflows:run"]


def test_without_a_catalogue_any_well_formed_scope_is_accepted(cli: Cli) -> None:
    cli.ok("orgs", "create", "acme")
    created = cli.ok("keys", "create", "--org", "acme", "--name", "ci", "--scope", "reed")
    assert "reed" in created.out
