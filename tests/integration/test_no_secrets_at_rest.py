"""No plaintext key at rest: after keys are created, rolled, updated and revoked, neither
a pg_dump of the database nor every value in Redis holds a full key or a secret part."""

from __future__ import annotations

import subprocess
from typing import Any

import redis

from gateway.embedded import _pgserver_bin
from gateway.keys.format import ID_LENGTH, SECRET_LENGTH, parse_key
from tests.support.cli import Cli
from tests.support.stores import Stores

PREFIXES = {"live": "kg_live_", "test": "kg_test_"}


def make_keys(cli: Cli) -> list[str]:
    """Full keys of every kind the CLI can issue, and changes that reach Redis."""
    cli.ok("orgs", "create", "acme")
    full_keys = []
    for extra in ([], ["--env", "test"], ["--expires-in", "30d"], ["--metadata", '{"team": "a"}']):
        data = cli.ok(
            "keys", "create", "--org", "acme", "--name", "k", "--scope", "read", "--json", *extra
        ).json()
        full_keys.append(data["secret"])
    ids = [parse_key(k, PREFIXES).key_id for k in full_keys]
    cli.ok("keys", "update", ids[0], "--scope", "send")
    cli.ok("keys", "revoke", ids[1], "--reason", "leaked")
    rolled = cli.ok("keys", "roll", ids[2], "--json").json()
    full_keys.append(rolled["secret"])
    rolled = cli.ok("keys", "roll", ids[3], "--grace", "0s").out
    full_keys += [w for w in rolled.split() if w.startswith("kg_live_") and len(w) > 40]
    assert len(full_keys) == 6
    # Mistakes that carry the key to the CLI must not write it anywhere either.
    cli("keys", "show", full_keys[0])
    cli("audit", "--org", "acme", "--key", full_keys[0])
    return full_keys


def secrets_of(full_keys: list[str]) -> list[str]:
    out = []
    for key in full_keys:
        parsed = parse_key(key, PREFIXES)
        assert len(parsed.secret) == SECRET_LENGTH
        out += [key, parsed.secret]
        # Any 16-character run of the secret is enough to count as leaked.
        out += [parsed.secret[i : i + 16] for i in range(0, SECRET_LENGTH - 15, 8)]
        out.append(key[len(parsed.prefix) : len(parsed.prefix) + ID_LENGTH + SECRET_LENGTH])
    return out


def pg_dump(url: str) -> str:
    result = subprocess.run(
        [str(_pgserver_bin() / "pg_dump"), "--dbname", url, "--no-owner"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result.stdout


def redis_dump(url: str) -> str:
    # Any: redis-py types every reply as bytes | str (| None); these are bytes.
    client: Any = redis.Redis.from_url(url)
    parts: list[Any] = []
    try:
        for name in client.scan_iter(count=1000):
            kind = client.type(name).decode()
            parts.append(name)
            if kind == "string":
                parts.append(client.get(name))
            elif kind == "hash":
                parts += [x for pair in client.hgetall(name).items() for x in pair]
            elif kind == "list":
                parts += client.lrange(name, 0, -1)
            elif kind == "set":
                parts += list(client.smembers(name))
            elif kind == "zset":
                parts += [m for m, _ in client.zrange(name, 0, -1, withscores=True)]
            elif kind == "stream":
                parts += [str(e) for e in client.xrange(name)]
            else:
                raise AssertionError(f"unexpected Redis type {kind} for {name!r}")
    finally:
        client.close()
    return "\n".join(p.decode("latin-1") if isinstance(p, bytes) else str(p) for p in parts)


def test_database_dump_holds_no_key(cli: Cli, clean_stores: Stores) -> None:
    full_keys = make_keys(cli)
    dump = pg_dump(clean_stores.database_url)
    # The dump does contain the keys' rows: ids, display prefixes and argon2id hashes.
    for key in full_keys:
        assert parse_key(key, PREFIXES).display_prefix[len("kg_live_") :] in dump
    assert dump.count("$argon2id$") >= len(full_keys)
    for needle in secrets_of(full_keys):
        assert needle not in dump


def test_redis_holds_no_key(cli: Cli, clean_stores: Stores) -> None:
    full_keys = make_keys(cli)
    dump = redis_dump(clean_stores.redis_url)
    # Changes were written to Redis (so this looks at real entries).
    for changed in full_keys[:4]:
        assert parse_key(changed, PREFIXES).key_id in dump
    for needle in secrets_of(full_keys):
        assert needle not in dump
    assert "$argon2id$" not in dump  # not even the hash leaves Postgres


def test_postgres_server_log_holds_no_key(cli: Cli, clean_stores: Stores) -> None:
    full_keys = make_keys(cli)
    if clean_stores.postgres is None:
        return  # an external server: its log is not ours to read
    log = (clean_stores.postgres.data_dir / "server.log").read_text(errors="replace")
    for needle in secrets_of(full_keys):
        assert needle not in log
