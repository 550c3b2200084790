"""`keygate dev`: the whole stack on one machine, no Docker, no root.

Embedded PostgreSQL and Redis keep their data in `.keygate/` between runs, on the same
ports when those are still free (recorded in `.keygate/dev.json`, which also lets the CLI
find this run); a demo echo upstream answers on 127.0.0.1:9000; an org `demo` gets a key
(printed once, when created) and an owner `dev@localhost`, who gets a fresh one-time
sign-in link to the console on every run; then `config/dev.yaml` is served until Ctrl-C,
which stops everything started here.

The demo upstream also plays an identity provider (gateway.demo_issuer): it serves the
JWKS of a key pair kept in `.keygate/`, the dev config trusts that issuer under
`user_tokens:`, and every run prints a fresh user token for org `demo` beside the key, so
a dashboard's token and a script's key can be tried on the same route with no network.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from yarl import URL

from gateway.config import Config, UpstreamConfig, UserTokenIssuer, is_loopback_url, load_config
from gateway.demo_issuer import ISSUER_PATH, JWKS_PATH, KEY_FILE, DemoIssuer, jwks
from gateway.demo_issuer import load_or_create_key as load_or_create_issuer_key
from gateway.demo_upstream import demo_app
from gateway.dev_state import (
    DATA_DIR,
    SECRET_FILE,
    DevState,
    hold_run_lock,
    read_state,
    write_state,
)
from gateway.embedded import EmbeddedPostgres, EmbeddedRedis, reuse_or_free_port
from gateway.keys.errors import Conflict, ServiceError
from gateway.keys.models import Actor
from gateway.keys.service import open_key_service
from gateway.people.models import invite_url
from gateway.people.service import open_people_service, public_origin
from gateway.server import configure_logging, run_async, run_worker
from gateway.store.migrate import migrate

DEV_CONFIG = Path("config/dev.yaml")
DEMO_UPSTREAM = "demo"  # the upstream in the dev config that the demo app plays
DEV_OWNER = "dev@localhost"  # the developer, owner of org `demo` in the console
DEMO_SUBJECT = "dashboard-user"  # the person the demo user token speaks for
DEMO_SCOPES = ("read", "events")  # the demo key's scopes, so both reach the same routes
TOKEN_LIFETIME = 3600.0


class DevError(Exception):
    """`keygate dev` cannot start; the message says why and what to do."""


@dataclass(frozen=True)
class Welcome:
    """What the banner shows: the demo key (None after the first run), the console link,
    the demo user token and the issuer that signed it (None without a demo issuer)."""

    key: str | None = None
    link: str | None = None
    token: str | None = None
    issuer: str | None = None


@dataclass(frozen=True)
class DevOptions:
    """`keygate dev`'s options; None keeps what the config file says."""

    config: str | None = None
    proxy_port: int | None = None
    admin_port: int | None = None
    demo_port: int | None = None


def _dev_secret() -> str:
    """A server secret kept in .keygate/ so Redis entries stay valid across runs."""
    path = DATA_DIR / SECRET_FILE
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


async def _sign_in_link(config: Config) -> str | None:
    """A one-time link signing `dev@localhost` (owner of `demo`) in to the console; it
    sets their password. None when the console is off."""
    if not config.console.enabled:
        return None
    async with open_people_service(config) as people:
        try:
            invite = await people.invite(
                Actor(principal="dev"), DEV_OWNER, "demo", "owner", name="Dev"
            )
        except ServiceError as exc:  # e.g. the developer made dev@localhost an admin
            print(f"No console sign-in link for {DEV_OWNER}: {exc}", file=sys.stderr)
            return None
    return invite_url(public_origin(config), invite.token)


def _print_welcome(config: Config, welcome: Welcome) -> None:
    key, link, token = welcome.key, welcome.link, welcome.token
    proxy = "http://" + config.listen.proxy
    admin = "http://" + config.listen.admin
    host, port = _demo_address(config)
    print(
        f"\nKeygate dev is up. Proxy: {proxy}  Admin: {admin}  Demo upstream: http://{host}:{port}"
    )
    print(f"Postgres: {config.database_url}\nRedis:    {config.redis_url}\n")
    if key is None:
        print("The demo key was created on an earlier run and cannot be shown again.")
        print(
            "Get a fresh one (from this folder, while this runs) with:\n"
            f"  {_keygate_command()} keys create --org demo --name me "
            "--scope read --scope events"
        )
        key = "<your key>"
    else:
        print("Demo key for org `demo` (scopes: read events). It is shown only this once:\n")
        print(f"    {key}\n")
    if token is not None:
        print(
            f"Demo user token for org `demo` (subject {DEMO_SUBJECT}, scopes: "
            f"{' '.join(DEMO_SCOPES)}), signed by the demo issuer {welcome.issuer};\n"
            "valid for 1 h, a fresh one on every run:\n"
        )
        print(f"    {token}\n")
    print("Try:")
    print(
        f"  # 200, echoed by the demo upstream (X-Keygate-Credential: key): a script's API key\n"
        f"  curl -i {proxy}/api/v1/sessions/42 -H 'Authorization: Bearer {key}'"
    )
    if token is not None:
        print(
            f"  # 200 on the same route (X-Keygate-Credential: user): a dashboard's user token\n"
            f"  curl -i {proxy}/api/v1/sessions/42 -H 'Authorization: Bearer {token}'"
        )
    print(f"  # 401 missing_api_key\n  curl -i {proxy}/api/v1/sessions/42")
    print(
        f"  # 403 insufficient_scope (the key lacks `manage`)\n"
        f"  curl -i -X POST {proxy}/api/v1/sessions -H 'X-API-Key: {key}'"
    )
    if link is not None:
        print(f"\nConsole: {admin}/console/ (Settings → API keys of org `demo`)")
        print(f"Sign in as {DEV_OWNER} (owner of `demo`) with this one-time link:\n")
        print(f"    {link}\n")
        print("It sets your password and works once, for 24 h; each run prints a new one.")
    print("\nPress Ctrl-C to stop everything.\n", flush=True)


def _keygate_command() -> str:
    """How to run `keygate` from here: the console script next to this Python if any."""
    script = Path(sys.executable).with_name("keygate")
    if script.exists():
        try:
            return str(script.relative_to(Path.cwd()))
        except ValueError:
            return str(script)
    return f"{sys.executable} -m gateway"


def _with_ports(config: Config, options: DevOptions) -> Config:
    """The config with the listener and demo upstream ports given on the command line."""
    listen = config.listen
    if options.proxy_port is not None:
        listen = dataclasses.replace(listen, proxy=_on_port(listen.proxy, options.proxy_port))
    if options.admin_port is not None:
        listen = dataclasses.replace(listen, admin=_on_port(listen.admin, options.admin_port))
    upstreams = dict(config.upstreams)
    demo = upstreams.get(DEMO_UPSTREAM)
    if options.demo_port is not None and demo is not None:
        upstreams[DEMO_UPSTREAM] = UpstreamConfig(
            **{**dataclasses.asdict(demo), "url": str(URL(demo.url).with_port(options.demo_port))}
        )
    config = dataclasses.replace(config, listen=listen, upstreams=upstreams)
    return dataclasses.replace(config, user_tokens=_demo_issuer_moved(config))


def _is_demo_issuer(issuer: UserTokenIssuer) -> bool:
    """The demo issuer of the dev config: a loopback issuer URL at ISSUER_PATH."""
    return is_loopback_url(issuer.issuer) and URL(issuer.issuer).path.rstrip("/") == ISSUER_PATH


def _demo_issuer_moved(config: Config) -> tuple[UserTokenIssuer, ...]:
    """`user_tokens` with the demo issuer at the demo upstream's address: the issuer and
    its JWKS follow --demo-port (or an edited upstream URL), as the upstream does."""
    host, port = _demo_address(config)
    origin = f"http://{host}:{port}"
    return tuple(
        dataclasses.replace(i, issuer=origin + ISSUER_PATH, jwks_url=origin + JWKS_PATH)
        if _is_demo_issuer(i)
        else i
        for i in config.user_tokens
    )


def _demo_issuer(config: Config) -> DemoIssuer | None:
    """The signer of demo user tokens, when the config trusts the demo issuer; its key
    pair is made on the first run and kept in .keygate/."""
    entry = next((i for i in config.user_tokens if _is_demo_issuer(i)), None)
    if entry is None:
        return None
    return DemoIssuer(
        load_or_create_issuer_key(DATA_DIR / KEY_FILE),
        entry.issuer,
        entry.audience,
        org_claim=entry.org_claim,
        scopes_claim=entry.scopes_claim,
    )


def _on_port(address: str, port: int) -> str:
    host = address.rpartition(":")[0] or "127.0.0.1"
    return f"{host}:{port}"


def _demo_address(config: Config) -> tuple[str, int]:
    upstream = config.upstreams.get(DEMO_UPSTREAM)
    url = URL(upstream.url if upstream else "http://127.0.0.1:9000")
    return url.host or "127.0.0.1", url.port or 80


async def _serve(
    config: Config, secret: str, welcome: Welcome, issuer: DemoIssuer | None = None
) -> None:
    app = demo_app(jwks(issuer.key) if issuer is not None else None)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, *_demo_address(config)).start()
    try:
        await run_worker(
            config,
            secret.encode(),
            shared_port=False,
            on_ready=lambda: _print_welcome(config, welcome),
        )
    finally:
        await runner.cleanup()


def run_dev(options: DevOptions) -> int:
    """Start the stores, record them in .keygate/dev.json, serve until Ctrl-C."""
    config_path = Path(options.config or DEV_CONFIG).resolve()
    DATA_DIR.mkdir(exist_ok=True)
    previous = read_state()
    lock = hold_run_lock()  # held until this function returns (or the process ends)
    if lock is None:
        pid = f" (pid {previous.pid})" if previous and previous.pid else ""
        raise DevError(
            f"keygate dev is already running from this folder{pid}; stop it with Ctrl-C first"
        )
    postgres = EmbeddedPostgres(
        DATA_DIR / "postgres", port=reuse_or_free_port(previous.postgres_port if previous else None)
    )
    redis = EmbeddedRedis(
        DATA_DIR / "redis",
        port=reuse_or_free_port(previous.redis_port if previous else None),
        persist=True,
    )
    state = DevState(postgres.port, redis.port, postgres.url, redis.url, str(config_path))
    print("Starting embedded PostgreSQL and Redis in .keygate/ ...", file=sys.stderr)
    write_state(state)  # the ports, even if what follows fails
    postgres.start()
    try:
        redis.start()
        try:
            secret = _dev_secret()
            env = {
                **os.environ,
                "KEYGATE_DATABASE_URL": postgres.url,
                "KEYGATE_REDIS_URL": redis.url,
                "KEYGATE_SECRET": secret,
            }
            config = _with_ports(load_config(str(config_path), env), options)
            config = dataclasses.replace(config, dev=True)
            configure_logging(config)
            key = run_async(_ensure_demo_key(config))
            link = run_async(_sign_in_link(config))
            issuer = _demo_issuer(config)
            token = None
            if issuer is not None:
                token = issuer.token(
                    subject=DEMO_SUBJECT, org="demo", scopes=DEMO_SCOPES, lifetime=TOKEN_LIFETIME
                )
            welcome = Welcome(key, link, token, issuer.issuer if issuer else None)
            write_state(dataclasses.replace(state, pid=os.getpid()))
            try:
                run_async(_serve(config, secret, welcome, issuer))
            finally:
                write_state(state)
        finally:
            redis.stop()
    finally:
        postgres.stop()
        lock.close()
    return 0
