"""A revocation of user tokens reaches every worker within 1 s through either channel alone
(SPEC §11): through Redis when the gateway has lost PostgreSQL altogether (its LISTEN
connection cut), and through PostgreSQL when Redis is stopped (after its LISTEN connection
was killed by `pg_terminate_backend` and came back by itself).

Each test has its own Redis to stop and reaches the session's PostgreSQL through a relay
it can cut; the gateways are real `keygate serve --workers 2` processes, every revocation
is made by the real `keygate` CLI."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pytest
import redis

from gateway.embedded import EmbeddedRedis
from gateway.store.token_revocations import APPLICATION_NAME, REDIS_CHANNEL
from tests.integration.user_tokens import tokens as t
from tests.integration.user_tokens.conftest import ALICE, BOB, ORG, Idp
from tests.integration.user_tokens.support import (
    Relay,
    bearer,
    call,
    issuers_config,
    with_port,
)
from tests.support.cli import run_keygate
from tests.support.configs import gateway_env
from tests.support.db import fetch
from tests.support.errors import Reply, assert_error
from tests.support.gateway_process import (
    GatewayProcess,
    UpstreamProcess,
    start_gateway,
    stopped_cleanly,
)
from tests.support.keys import ACTOR, key_maker
from tests.support.oidc_provider import access_token
from tests.support.stores import Stores

BOUND = 1.0
WORKERS = 2


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    rd = EmbeddedRedis(tmp_path / "redis")
    rd.start()
    try:
        yield rd
    finally:
        rd.destroy()


@pytest.fixture
async def relay(clean_stores: Stores) -> AsyncIterator[Relay]:
    """A way to the session's PostgreSQL that the test can cut."""
    port = urlsplit(clean_stores.database_url).port
    assert port is not None
    relay = Relay(port)
    await relay.start()
    try:
        yield relay
    finally:
        await relay.cut()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """Every request on a fresh connection, so SO_REUSEPORT spreads them over the workers."""
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(force_close=True, limit=0),
        timeout=aiohttp.ClientTimeout(total=10),
    ) as session:
        yield session


async def statuses(http: aiohttp.ClientSession, url: str, token: str, n: int = 40) -> list[Reply]:
    return list(await asyncio.gather(*(call(http, url, bearer(token)) for _ in range(n))))


async def listener_pids(database_url: str) -> set[int]:
    """The backends of the workers' LISTEN sessions for token revocations."""
    rows = await fetch(
        database_url,
        "SELECT pid FROM pg_stat_activity WHERE application_name = $1",
        APPLICATION_NAME,
    )
    return {int(r["pid"]) for r in rows}


async def pg_listeners(database_url: str) -> int:
    return len(await listener_pids(database_url))


async def all_listening(stores: Stores) -> bool:
    return await pg_listeners(stores.database_url) >= WORKERS


async def until(what: str, check: object, limit: float = 10.0) -> None:
    deadline = time.monotonic() + limit
    while not await check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"{what}: not after {limit} s"
        await asyncio.sleep(0.05)


async def refused_everywhere_within_bound(
    http: aiohttp.ClientSession, url: str, token: str, since: float
) -> float:
    """Seconds from `since` until a whole batch (spread over the workers) is refused with
    revoked_token; fails past the bound."""
    while True:
        replies = await statuses(http, url, token, 10)
        if all(r.status == 401 and r.body["error"]["code"] == "revoked_token" for r in replies):
            return time.monotonic() - since
        odd = [r.text for r in replies if r.status not in (200, 401)]
        assert not odd, odd
        late = [(r.status, r.text[:120]) for r in replies if r.status != 401]
        assert time.monotonic() - since < BOUND, f"still accepted after the bound: {late}"
        await asyncio.sleep(0.02)


def gateway(
    idp: Idp,
    upstream: UpstreamProcess,
    stores: Stores,
    rd: EmbeddedRedis,
    tmp_path: Path,
    database_url: str | None = None,
) -> GatewayProcess:
    env = gateway_env(stores, database_url=database_url, KEYGATE_REDIS_URL=rd.url)
    return start_gateway(issuers_config(upstream, [idp.issuer]), tmp_path, env, workers=WORKERS)


async def test_heard_through_redis_alone_when_postgres_is_cut(
    idp: Idp,
    echo_upstream: UpstreamProcess,
    clean_stores: Stores,
    own_redis: EmbeddedRedis,
    relay: Relay,
    tmp_path: Path,
    http: aiohttp.ClientSession,
) -> None:
    via_relay = with_port(clean_stores.database_url, relay.port)
    gw = gateway(idp, echo_upstream, clean_stores, own_redis, tmp_path, via_relay)
    with stopped_cleanly(gw):
        # The CLI reaches PostgreSQL directly; the gateway only through the relay.
        direct = {**gw.env, "KEYGATE_DATABASE_URL": clean_stores.database_url}
        async with key_maker(gw.config_path, direct) as maker:
            await maker.service.create_org(ACTOR, ORG)
        # Both workers up and hearing both channels before they are warmed: a worker
        # still starting would take no share of the warming requests, and after the cut
        # it could not check a token it never saw (503, rightly).
        client = redis.Redis.from_url(own_redis.url)
        try:

            async def subscribed() -> bool:
                return client.pubsub_numsub(REDIS_CHANNEL)[0][1] >= WORKERS

            await until("workers subscribed on Redis", subscribed)
        finally:
            client.close()
        await until("workers listening on PostgreSQL", lambda: all_listening(clean_stores))
        url = gw.url + "/api/v1/sessions/1"
        alice, bob = access_token(idp.running, ALICE), access_token(idp.running, BOB)
        for token in (alice, bob):  # every worker verifies and remembers both
            assert {r.status for r in await statuses(http, url, token)} == {200}

        await relay.cut()  # the gateway has no PostgreSQL any more, LISTEN included

        async def no_listener() -> bool:
            return await pg_listeners(clean_stores.database_url) == 0

        await until("LISTEN sessions gone", no_listener, 5)
        run = await run_keygate(
            gw.config_path, direct, "tokens", "revoke", "--org", ORG, "--subject", ALICE.client_id
        )
        returned = time.monotonic()
        assert run.code == 0, run
        assert "warning" not in run.err, run.err  # Redis took it
        took = await refused_everywhere_within_bound(http, url, alice, returned)
        print(f"heard through Redis alone after {took * 1000:.0f} ms")
        # Bob's token is untouched (remembered, no store needed to accept it).
        assert {r.status for r in await statuses(http, url, bob, 10)} == {200}
        # A token that needs PostgreSQL (its org never looked up here) cannot be checked:
        # 503, not a 401 that would make a valid token look invalid.
        unseen = t.signed(idp.keys.rsa, t.claims(idp.issuer, org="globex-unseen"))
        for reply in await statuses(http, url, unseen, 4):
            assert_error(reply, 503, "auth_unavailable")


async def test_heard_through_postgres_alone_when_redis_is_stopped(
    idp: Idp,
    echo_upstream: UpstreamProcess,
    clean_stores: Stores,
    own_redis: EmbeddedRedis,
    tmp_path: Path,
    http: aiohttp.ClientSession,
) -> None:
    gw = gateway(idp, echo_upstream, clean_stores, own_redis, tmp_path)
    with stopped_cleanly(gw):
        async with key_maker(gw.config_path, gw.env) as maker:
            await maker.service.create_org(ACTOR, ORG)
        await until("workers listening on PostgreSQL", lambda: all_listening(clean_stores))
        url = gw.url + "/api/v1/sessions/1"
        alice, bob = access_token(idp.running, ALICE), access_token(idp.running, BOB)
        for token in (alice, bob):
            assert {r.status for r in await statuses(http, url, token)} == {200}

        own_redis.stop()
        # Cut every worker's LISTEN session: each must come back by itself (new backends;
        # the terminated ones may still show for a moment).
        cut = await listener_pids(clean_stores.database_url)
        assert len(cut) >= WORKERS, cut
        await fetch(
            clean_stores.database_url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid = ANY($1::int[])",
            list(cut),
        )

        async def listening_again() -> bool:
            return len(await listener_pids(clean_stores.database_url) - cut) >= WORKERS

        await until("LISTEN sessions back", listening_again, 5)
        run = await run_keygate(
            gw.config_path, gw.env, "tokens", "revoke", "--org", ORG, "--subject", ALICE.client_id
        )
        returned = time.monotonic()
        assert run.code == 0, run
        assert run.err.startswith("keygate: warning: Redis unreachable"), run.err
        took = await refused_everywhere_within_bound(http, url, alice, returned)
        print(f"heard through PostgreSQL alone after {took * 1000:.0f} ms")
        assert {r.status for r in await statuses(http, url, bob, 10)} == {200}
