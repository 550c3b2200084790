"""`keygate dev`: the whole stack on one machine, no Docker, no root.

Embedded PostgreSQL and Redis keep their data in `.keygate/` between runs; a demo echo
upstream answers on 127.0.0.1:9000; an org `demo` gets a key (printed once, when created);
then `config/dev.yaml` is served until Ctrl-C, which stops everything started here.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import sys
from pathlib import Path

from aiohttp import web
from yarl import URL

from gateway.config import Config, load_config
from gateway.demo_upstream import demo_app
from gateway.embedded import EmbeddedPostgres, EmbeddedRedis
from gateway.keys.errors import Conflict
from gateway.keys.models import Actor
from gateway.keys.service import open_key_service
from gateway.server import configure_logging, run_async, run_worker
from gateway.store.migrate import migrate

DATA_DIR = Path(".keygate")
DEV_CONFIG = Path("config/dev.yaml")
DEMO_UPSTREAM = "demo"  # the upstream in the dev config that the demo app plays


def _dev_secret() -> str:
    """A server secret kept in .keygate/ so Redis entries stay valid across runs."""
    path = DATA_DIR / "secret"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip()


async def _ensure_demo_key(config: Config) -> str | None:
    """Create org `demo` and its key on the first run; return the full key then."""
    actor = Actor(principal="dev")
    async with open_key_service(config) as service:
        await migrate(service.db)
        try:
            await service.create_org(actor, "demo", "Demo org")
        except Conflict:
            return None
        created = await service.create_key(actor, "demo", "demo key", ["read", "events"])
        return created.secret


def _print_welcome(config: Config, key: str | None) -> None:
    proxy = "http://" + config.listen.proxy
    admin = "http://" + config.listen.admin
    host, port = _demo_address(config)
    print(f"\nKeygate dev is up. Proxy: {proxy}  Admin: {admin}  "
          f"Demo upstream: http://{host}:{port}")
    print(f"Postgres: {config.database_url}\nRedis:    {config.redis_url}\n")
    if key is None:
        print("The demo key was created on an earlier run and cannot be shown again.")
        print("Get a fresh one with:  .venv/bin/keygate keys create --org demo --name me "
              "--scope read --scope events")
        key = "<your key>"
    else:
        print("Demo key for org `demo` (scopes: read events). It is shown only this once:\n")
        print(f"    {key}\n")
    print("Try:")
    print(f"  # 200, echoed by the demo upstream\n"
          f"  curl -i {proxy}/api/v1/sessions/42 -H 'Authorization: Bearer {key}'")
    print(f"  # 401 missing_api_key\n  curl -i {proxy}/api/v1/sessions/42")
    print(f"  # 403 insufficient_scope (the key lacks `manage`)\n"
          f"  curl -i -X POST {proxy}/api/v1/sessions -H 'X-API-Key: {key}'")
    print("\nPress Ctrl-C to stop everything.\n", flush=True)


def _demo_address(config: Config) -> tuple[str, int]:
    upstream = config.upstreams.get(DEMO_UPSTREAM)
    url = URL(upstream.url if upstream else "http://127.0.0.1:9000")
    return url.host or "127.0.0.1", url.port or 80


async def _serve(config: Config, secret: str, key_printer: str | None) -> None:
    runner = web.AppRunner(demo_app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, *_demo_address(config)).start()
    try:
        await run_worker(
            config, secret.encode(), shared_port=False,
            on_ready=lambda: _print_welcome(config, key_printer),
        )
    finally:
        await runner.cleanup()


def run_dev(config_path: str | None = None) -> int:
    DATA_DIR.mkdir(exist_ok=True)
    postgres = EmbeddedPostgres(DATA_DIR / "postgres")
    redis = EmbeddedRedis(DATA_DIR / "redis", persist=True)
    print("Starting embedded PostgreSQL and Redis in .keygate/ ...", file=sys.stderr)
    postgres.start()
    try:
        redis.start()
        try:
            secret = _dev_secret()
            env = {**os.environ, "KEYGATE_DATABASE_URL": postgres.url,
                   "KEYGATE_REDIS_URL": redis.url, "KEYGATE_SECRET": secret}
            config = load_config(config_path or str(DEV_CONFIG), env)
            config = dataclasses.replace(config, dev=True)
            configure_logging(config)
            key = run_async(_ensure_demo_key(config))
            run_async(_serve(config, secret, key))
        finally:
            redis.stop()
    finally:
        postgres.stop()
    return 0
