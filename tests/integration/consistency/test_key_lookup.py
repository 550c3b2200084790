"""KeyLookup as a component, on the session's real PostgreSQL and Redis (never mocked).

The interleavings that matter are driven deterministically: a barrier injected into the
component (its `checkpoint`) holds a lookup right after it read Redis or Postgres, or just
before its argon2 verify; meanwhile the key is revoked through the real service, whose
change reaches this lookup only as another gateway's would (Redis pub/sub, heard by the
lookup's own listener); then the barrier is released. The revoked key must be refused by
the very next request, whatever the interleaving. The wrong-secret limit and the argon2
queue are checked with counts of verifies started (real argon2 on real threads).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import secrets
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis

from gateway.auth.authenticate import parse_presented
from gateway.auth.errors import Refusal, TooManyAttempts
from gateway.auth.key_changes import POSTGRES, REDIS
from gateway.auth.key_lookup import KeyLookup
from gateway.config import Argon2Params, Config, load_config
from gateway.keys.format import base62_checksum
from gateway.keys.hashing import SecretHasher, fast_verifier
from gateway.keys.models import Actor, ApiKey
from gateway.keys.service import KeyService
from gateway.keys.state import KeyState
from gateway.observability import metrics
from gateway.store.db import Database
from gateway.store.key_cache import CHANNEL, KeyCacheWriter, RedisKeyCache
from tests.support.configs import TEST_CONFIG
from tests.support.stores import Stores

ACTOR = Actor(principal="test:lookup")
SECRET = secrets.token_bytes(32)
ARGON2 = Argon2Params(time_cost=1, memory_kib=4096, parallelism=1)


class Barrier:
    """Holds the first lookup that reaches `point` until released."""

    def __init__(self, point: str) -> None:
        self.point = point
        self.reached = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self, point: str, key_id: str) -> None:
        if point == self.point and not self.reached.is_set():
            self.reached.set()
            await self.release.wait()


class HoldAll:
    """Holds every lookup that reaches `point` until released; counts them."""

    def __init__(self, point: str) -> None:
        self.point = point
        self.held = 0
        self.release = asyncio.Event()

    async def __call__(self, point: str, key_id: str) -> None:
        if point == self.point:
            self.held += 1
            await self.release.wait()


@dataclasses.dataclass
class World:
    config: Config
    db: Database
    hasher: SecretHasher
    service: KeyService  # another gateway's (or the CLI's) service: publishes on Redis
    old_build_service: KeyService  # as a build before versions: publishes bare ids
    redis: aioredis.Redis
    lookups: list[KeyLookup]
    stack: contextlib.AsyncExitStack

    async def lookup(self, **kwargs: Any) -> KeyLookup:
        """A running lookup (listener subscribed) with its own Redis client."""
        config: Config = kwargs.pop("config", self.config)
        lookup = KeyLookup(
            keys=config.keys,
            cache=config.cache,
            db=self.db,
            redis=RedisKeyCache.connect(self.config.redis_url, 600, 1.0, SECRET),
            hasher=self.hasher,
            server_secret=SECRET,
            **kwargs,
        )
        before = await self.subscribers()
        await self.stack.enter_async_context(contextlib.asynccontextmanager(lookup.lifetime)())
        # Until both channels are subscribed and have re-synced: only then does it trust
        # Redis entries (before, a lookup reads PostgreSQL; SPEC §5), and only then is no
        # start-up re-sync left to run. A channel's re-sync evicts the entries of keys
        # changed within the Redis TTL (a test's key was just made): one that ran after a
        # test's first request evicted the entry that test went on to rely on.
        for _ in range(500):
            if (
                await self.subscribers() > before
                and lookup.redis_trusted
                and lookup.channels == {REDIS, POSTGRES}
            ):
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("the lookup never subscribed and re-synced")
        self.lookups.append(lookup)
        return lookup

    async def subscribers(self) -> int:
        counts = await self.redis.pubsub_numsub(CHANNEL)
        return int(counts[0][1])

    async def key(self, scopes: tuple[str, ...] = ("read",), org: str | None = None) -> Made:
        if org is None:
            org = f"lk-{uuid.uuid4().hex[:10]}"
            await self.service.create_org(ACTOR, org)
        created = await self.service.create_key(ACTOR, org, "lookup", list(scopes))
        return Made(created.key.id, created.secret, created.key.display_prefix, org)


@dataclasses.dataclass(frozen=True)
class Made:
    id: str
    secret: str
    display_prefix: str
    org: str

    def wrong(self) -> str:
        body = self.display_prefix + secrets.token_hex(16)
        return body + base62_checksum(body)


@pytest.fixture
async def world(clean_stores: Stores) -> AsyncIterator[World]:
    config = load_config(str(TEST_CONFIG))
    config = dataclasses.replace(
        config,
        redis_url=clean_stores.redis_url,
        database_url=clean_stores.database_url,
        keys=dataclasses.replace(config.keys, argon2=ARGON2, verify_threads=2),
    )
    db = Database(clean_stores.database_url)
    hasher = SecretHasher(ARGON2, threads=2)
    writer = KeyCacheWriter(RedisKeyCache.connect(clean_stores.redis_url, 600, 2.0))
    old_cache = RedisKeyCache.connect(clean_stores.redis_url, 600, 2.0)

    async def old_build_writer(key: ApiKey) -> None:
        await old_cache.put(KeyState.of(key), None)
        await old_cache.client.publish(CHANNEL, key.id)

    client = aioredis.Redis.from_url(clean_stores.redis_url)
    async with contextlib.AsyncExitStack() as stack:
        try:
            yield World(
                config,
                db,
                hasher,
                KeyService(db, config.keys, hasher, on_change=writer.key_changed),
                KeyService(db, config.keys, hasher, on_change=old_build_writer),
                client,
                [],
                stack,
            )
        finally:
            await stack.aclose()
            await writer.close()
            await old_cache.close()
            await client.aclose()
            await db.close()
            hasher.close()


async def heard(lookup: KeyLookup, key_id: str, version: int) -> None:
    """Until the lookup's listener has delivered the change `key_id` -> `version`."""
    for _ in range(500):
        if lookup.local.floor(key_id) >= version:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the invalidation never arrived")


async def outcome(call: Any) -> str:
    try:
        await call
    except Refusal as refusal:
        return refusal.code
    return "allowed"


# ------------------------------------------------------------------------- versions


@pytest.mark.parametrize(
    ("point", "bare_id"),
    [
        ("redis", False),  # read a warm Redis entry (with verifier), then held
        ("postgres", False),  # read the row, then held
        ("verify", False),  # read the row, held before argon2
        ("verify", True),  # the same, told by an older build: a bare id, no version
        ("redis", True),
    ],
)
async def test_a_lookup_in_flight_across_a_revocation_cannot_resurrect_the_key(
    world: World, point: str, bare_id: bool
) -> None:
    key = await world.key()
    if point == "redis":  # another gateway verified the key: Redis holds its verifier
        other = await world.lookup()
        await other.identify(key.secret, "10.0.0.1")
    barrier = Barrier(point)
    lookup = await world.lookup(checkpoint=barrier)
    in_flight = asyncio.create_task(outcome(lookup.identify(key.secret, "10.0.0.1")))
    await asyncio.wait_for(barrier.reached.wait(), 5)

    generation = lookup.local.ticket()
    service = world.old_build_service if bare_id else world.service
    revoked = await service.revoke_key(ACTOR, key.id, reason="test")
    if bare_id:  # no version to go by: the message is heard when the generation moves
        for _ in range(500):
            if lookup.local.ticket() != generation:
                break
            await asyncio.sleep(0.01)
    else:
        await heard(lookup, key.id, revoked.key.version)

    barrier.release.set()
    assert await in_flight in ("allowed", "revoked_api_key")  # it began before the revoke
    assert await outcome(lookup.identify(key.secret, "10.0.0.1")) == "revoked_api_key"
    entry = lookup.local.get(key.id)
    assert entry is None or entry.state is None or entry.state.revoked


# ------------------------------------------------------------------ wrong-secret limit


def counter() -> tuple[list[str], Callable[[str], None]]:
    started: list[str] = []
    return started, started.append


async def test_two_hundred_concurrent_wrong_secrets_run_at_most_the_limit_of_verifies(
    world: World,
) -> None:
    key = await world.key()
    started, on_start = counter()
    lookup = await world.lookup(on_verify_start=on_start)
    limit = world.config.cache.max_failures_per_key
    results = await asyncio.gather(
        *(outcome(lookup.identify(key.wrong(), "10.0.0.66")) for _ in range(200))
    )
    assert 0 < len(started) <= limit
    # Only the verifies that ran answer 401; every other attempt is refused without argon2:
    # 429 over the limit, or 503 when the org's verify queue was full (its attempt is
    # given back, so which of the two each gets depends on timing; neither is ever a 401).
    assert results.count("invalid_api_key") == len(started)
    assert results.count("too_many_attempts") + results.count("auth_unavailable") == (
        200 - len(started)
    )
    assert results.count("too_many_attempts") > 0  # the limiter itself refused attempts
    # The owner, elsewhere, is not affected; a right secret gives its place back.
    assert await outcome(lookup.identify(key.secret, "10.0.0.1")) == "allowed"


async def test_attempts_whose_client_went_away_mid_verify_still_count(world: World) -> None:
    key = await world.key()
    started, on_start = counter()
    hold = HoldAll("verify")
    limit = world.config.cache.max_failures_per_key
    roomy = dataclasses.replace(
        world.config, keys=dataclasses.replace(world.config.keys, max_queued_verifies_per_org=limit)
    )  # every verify queues
    lookup = await world.lookup(on_verify_start=on_start, checkpoint=hold, config=roomy)
    callers = [asyncio.create_task(lookup.identify(key.wrong(), "10.0.0.66")) for _ in range(limit)]
    for _ in range(1000):  # every one reserved its attempt and waits for argon2
        if hold.held == limit:
            break
        await asyncio.sleep(0.01)
    for caller in callers:
        caller.cancel()  # the clients disconnect (aiohttp cancels their handlers)
    await asyncio.gather(*callers, return_exceptions=True)
    with pytest.raises(TooManyAttempts) as refused:
        await lookup.identify(key.wrong(), "10.0.0.66")
    assert int(refused.value.headers()["Retry-After"]) >= 1
    hold.release.set()
    for _ in range(1000):  # the verifies still run (their slots are freed by them)
        if len(started) == limit and not lookup.verifies.running:
            break
        await asyncio.sleep(0.01)
    with pytest.raises(TooManyAttempts):
        await lookup.identify(key.wrong(), "10.0.0.66")
    assert len(started) == limit


async def test_one_address_never_locks_out_the_owner_and_known_keys_are_never_throttled(
    world: World,
) -> None:
    key = await world.key()
    started, on_start = counter()
    lookup = await world.lookup(on_verify_start=on_start)
    burst = await asyncio.gather(
        *(outcome(lookup.identify(key.wrong(), "10.0.0.66")) for _ in range(500))
    )
    limit = world.config.cache.max_failures_per_key
    assert burst.count("invalid_api_key") <= limit  # far below the per-id cap (10x)
    assert lookup.failures.retry_after(key.id, "10.0.0.1") is None
    assert await outcome(lookup.identify(key.secret, "10.0.0.1")) == "allowed"
    # Its right secret is known now: never throttled, even from the attacker's address,
    # and wrong ones are refused by the keyed hash (401, no argon2).
    verifies = len(started)
    assert await outcome(lookup.identify(key.secret, "10.0.0.66")) == "allowed"
    assert await outcome(lookup.identify(key.wrong(), "10.0.0.66")) == "invalid_api_key"
    # And on a fresh gateway that finds the verifier in Redis.
    fresh = await world.lookup()
    assert await outcome(fresh.identify(key.secret, "10.0.0.66")) == "allowed"
    assert len(started) == verifies


async def test_one_tenants_flood_delays_anothers_first_verify_by_two_rounds_at_most(
    world: World,
) -> None:
    flood_org = f"lk-{uuid.uuid4().hex[:10]}"
    await world.service.create_org(ACTOR, flood_org)
    flood_keys = [await world.key(org=flood_org) for _ in range(4)]
    victim = await world.key()
    started, on_start = counter()
    queued_at: list[int] = []

    async def mark(point: str, key_id: str) -> None:
        if point == "verify" and key_id == victim.id:
            queued_at.append(len(started))

    lookup = await world.lookup(on_verify_start=on_start, checkpoint=mark)
    slots = world.config.keys.verify_threads
    flood = [
        asyncio.create_task(outcome(lookup.identify(k.wrong(), f"10.1.{i}.{j}")))
        for i, k in enumerate(flood_keys)
        for j in range(40)
    ]
    for _ in range(5000):  # until the flood is running and queued
        if len(started) >= 2 * slots:
            break
        await asyncio.sleep(0.001)
    assert await outcome(lookup.identify(victim.secret, "10.2.0.1")) == "allowed"
    ahead = started.index(victim.org) - queued_at[0]
    results = await asyncio.gather(*flood)
    print(
        f"flood: {len(started) - 1} verifies, outcomes "
        f"{ {r: results.count(r) for r in set(results)} }; the victim waited for {ahead}"
    )
    assert ahead <= 2 * slots
    assert set(results) <= {"invalid_api_key", "auth_unavailable"}  # 503 when queues full


# ------------------------------------------------------------------ entry lifetimes
# Issue 15: while an invalidation channel is live, entries live until invalidated (up to
# cache.max_age) and a key in use is refreshed in the background before expiry; with no
# channel, the short bound applies again. Time is the lookup's monotonic clock, moved by
# hand; store reads are counted through the metrics the gateway exports.

MAX_AGE = 600.0


class Monotonic:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


class Gate:
    """Holds the next lookup step that reaches `point` once armed, until released."""

    def __init__(self) -> None:
        self.point: str | None = None
        self.reached = asyncio.Event()
        self.release = asyncio.Event()

    def arm(self, point: str) -> None:
        self.point = point

    async def __call__(self, point: str, key_id: str) -> None:
        if point == self.point:
            self.point = None
            self.reached.set()
            # Bounded: a test whose request reached the gate by mistake fails, not hangs.
            await asyncio.wait_for(self.release.wait(), 30)


def store_reads() -> dict[str, float]:
    """keygate_key_cache_requests_total of the Redis and Postgres tiers, and local hits."""
    metrics.flush_tallies()
    return {
        f"{tier}/{result}": metrics.REGISTRY.get_sample_value(
            "keygate_key_cache_requests_total", {"tier": tier, "result": result}
        )
        or 0.0
        for tier in ("local", "redis", "postgres")
        for result in ("hit", "miss")
    }


def lifetime_config(world: World) -> Config:
    return dataclasses.replace(
        world.config,
        cache=dataclasses.replace(world.config.cache, local_ttl=1.0, max_age=MAX_AGE),
    )


async def test_while_changes_are_heard_an_entry_outlives_local_ttl_without_store_reads(
    world: World,
) -> None:
    clock = Monotonic()
    key = await world.key()
    lookup = await world.lookup(config=lifetime_config(world), monotonic=clock)
    assert lookup.local.ttl == MAX_AGE  # a channel is live and re-synced
    await lookup.identify(key.secret, "10.0.0.1")
    before = store_reads()
    clock.now += 60  # 60 local_ttl later, well before the refresh point (>= 70 % of 600 s)
    for _ in range(100):
        assert (await lookup.identify(key.secret, "10.0.0.1")).id == key.id
    after = store_reads()
    assert after["local/hit"] - before["local/hit"] == 100
    assert {k: after[k] - before[k] for k in after if not k.startswith("local")} == {
        "redis/hit": 0,
        "redis/miss": 0,
        "postgres/hit": 0,
        "postgres/miss": 0,
    }
    # Still refused within 1 s of a revocation (real time: the change is heard, not aged).
    revoked = await world.service.revoke_key(ACTOR, key.id, reason="test")
    await asyncio.wait_for(heard(lookup, key.id, revoked.key.version), 1.0)
    assert await outcome(lookup.identify(key.secret, "10.0.0.1")) == "revoked_api_key"


async def test_a_key_in_use_is_refreshed_in_the_background_and_no_request_waits(
    world: World,
) -> None:
    clock, gate = Monotonic(), Gate()
    key = await world.key()
    lookup = await world.lookup(config=lifetime_config(world), monotonic=clock, checkpoint=gate)
    await lookup.identify(key.secret, "10.0.0.1")
    clock.now += 0.95 * MAX_AGE  # past the refresh point, before expiry
    gate.arm("redis")
    # Answered from the entry while its refresh is held mid-read.
    assert (await asyncio.wait_for(lookup.identify(key.secret, "10.0.0.1"), 1)).id == key.id
    await asyncio.wait_for(gate.reached.wait(), 5)
    gate.release.set()
    for _ in range(500):  # until the refreshed entry is in place
        entry = lookup.local.get(key.id)
        if entry is not None and entry.expires > clock.now + 0.5 * MAX_AGE:
            break
        await asyncio.sleep(0.01)
    else:
        raise AssertionError("the refresh never replaced the entry")
    before = store_reads()
    clock.now += 0.5 * MAX_AGE  # beyond the first entry's expiry: the refreshed one serves
    assert (await lookup.identify(key.secret, "10.0.0.1")).id == key.id
    after = store_reads()
    assert after["redis/hit"] == before["redis/hit"]  # no request read Redis
    assert after["postgres/hit"] == before["postgres/hit"]


@pytest.mark.parametrize("point", ["redis", "postgres"])
async def test_a_refresh_in_flight_across_a_revocation_cannot_resurrect_the_key(
    world: World, point: str
) -> None:
    clock, gate = Monotonic(), Gate()
    key = await world.key()
    lookup = await world.lookup(config=lifetime_config(world), monotonic=clock, checkpoint=gate)
    await lookup.identify(key.secret, "10.0.0.1")
    if point == "postgres":  # Redis lost its entry: the refresh reads the row
        await world.redis.delete(f"keygate:key:{key.id}")
    clock.now += 0.95 * MAX_AGE
    gate.arm(point)
    # Answered from the entry while its refresh is held mid-read.
    assert await asyncio.wait_for(outcome(lookup.identify(key.secret, "10.0.0.1")), 5) == "allowed"
    await asyncio.wait_for(gate.reached.wait(), 5)  # the refresh read the live state

    revoked = await world.service.revoke_key(ACTOR, key.id, reason="test")
    await heard(lookup, key.id, revoked.key.version)
    gate.release.set()
    for _ in range(100):  # let the refresh finish and try its put
        await asyncio.sleep(0.01)
    assert await outcome(lookup.identify(key.secret, "10.0.0.1")) == "revoked_api_key"
    entry = lookup.local.get(key.id)
    assert entry is None or entry.state is None or entry.state.revoked


async def test_with_no_channel_heard_entries_are_dropped_and_live_the_short_bound(
    world: World, clean_stores: Stores
) -> None:
    """Only the PostgreSQL channel (no Redis): its session is killed and may not come back
    (the database refuses new connections), so this worker hears no change at all."""
    clock = Monotonic()
    key = await world.key()
    lookup = KeyLookup(
        keys=world.config.keys,
        cache=lifetime_config(world).cache,
        db=world.db,
        redis=None,
        hasher=world.hasher,
        server_secret=SECRET,
        monotonic=clock,
    )
    await world.stack.enter_async_context(contextlib.asynccontextmanager(lookup.lifetime)())
    for _ in range(500):
        if lookup.channels == {"postgres"}:
            break
        await asyncio.sleep(0.01)
    await lookup.identify(key.secret, "10.0.0.1")
    clock.now += 60
    before = store_reads()
    await lookup.identify(key.secret, "10.0.0.1")
    assert store_reads()["postgres/hit"] == before["postgres/hit"]  # long-lived meanwhile

    probe = await asyncpg.connect(clean_stores.database_url)
    database = await probe.fetchval("SELECT current_database()")
    await probe.close()
    # From another database: PostgreSQL will not disallow connections to one's own.
    admin = await asyncpg.connect(clean_stores.database_url, database="postgres")
    try:
        await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = 'keygate-invalidations'"
        )
        for _ in range(500):
            if not lookup.channels:
                break
            await asyncio.sleep(0.01)
        assert not lookup.channels
        assert lookup.local.ttl <= 1.0
        assert lookup.local.get(key.id) is None  # dropped at once
        reads = store_reads()["postgres/hit"]
        await lookup.identify(key.secret, "10.0.0.1")  # refilled from Postgres
        assert store_reads()["postgres/hit"] == reads + 1
        clock.now += 1.5  # past the short bound: read again
        await lookup.identify(key.secret, "10.0.0.1")
        assert store_reads()["postgres/hit"] == reads + 2
    finally:
        await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
        await admin.close()
    for _ in range(500):  # the channel comes back, re-synced: long lifetimes again
        if lookup.channels == {"postgres"}:
            break
        await asyncio.sleep(0.01)
    assert lookup.local.ttl == MAX_AGE


async def test_a_lookup_that_came_back_outdated_is_not_joined(world: World) -> None:
    """Identical lookups in flight share one read; one that came back outdated (its key
    changed while it read) is settled, not in flight, even before its bookkeeping (a
    done-callback) has run. A request arriving in that moment once joined it on every
    attempt without a read and answered 503 auth_unavailable (seen at start-up, under a
    burst, while the channels' re-syncs moved the tickets). The moment is made here by
    leaving such a settled lookup in the in-flight table."""
    key = await world.key()
    lookup = await world.lookup()
    parsed = parse_presented(key.secret, world.config.keys)
    verifier = fast_verifier(lookup.verifier_key, parsed.key_id, parsed.secret)
    settled: asyncio.Future[KeyState | None] = asyncio.get_running_loop().create_future()
    settled.set_result(None)  # what a lookup outdated by an invalidation returns
    lookup._in_flight[verifier] = settled  # type: ignore[assignment]
    assert await outcome(lookup.identify(key.secret, "10.0.0.1")) == "allowed"
