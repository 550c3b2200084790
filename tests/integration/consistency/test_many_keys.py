"""Many keys in the background paths (issue 15): the `last_used_at` flush, the Redis re-sync
after a reconnect, and rate-limit counters, each with thousands of distinct keys.

On this package's own PostgreSQL and Redis; stamp writes are counted by the package's
trigger (conftest), which also records the transaction that made each write, so the
number and size of the flush's statements are what PostgreSQL saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import math
import secrets
import string
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis

from gateway.auth import key_changes
from gateway.auth.key_lookup import KeyLookup
from gateway.auth.last_used import STAMP_CHUNK, LastUsedRecorder
from gateway.config import Argon2Params, load_config
from gateway.keys.errors import StoreUnavailable
from gateway.keys.hashing import SecretHasher
from gateway.keys.state import KeyState
from gateway.store import queries
from gateway.store.db import Database
from gateway.store.key_cache import RedisKeyCache, state_to_json
from gateway.store.rate_counts import Counter, RedisRateCounts, counter_name
from tests.integration.consistency.conftest import OwnStores
from tests.support.configs import TEST_CONFIG

FLUSHED_KEYS = 20_000
RESYNCED_KEYS = 5_000
ARGON2 = Argon2Params(time_cost=1, memory_kib=1024, parallelism=1)

# Keys straight into the table (cheap fake hashes: nothing here verifies a secret).
INSERT_KEYS = """
INSERT INTO api_keys (id, org, name, prefix, env, secret_hash, scopes, created_at,
                      created_by)
SELECT id, $1, 'many', 'kg_test_' || id, 'test', '$argon2id$fake', '{read}', now(), 'test'
FROM unnest($2::text[]) AS id
"""


class ManyKeys:
    """Inserts keys straight into the table; removes them again after the test, with their
    Redis entries: left in the package's database, thousands of keys changed within the
    Redis TTL would make every later gateway's re-sync (at start-up) re-sync them too."""

    def __init__(self, stores: OwnStores) -> None:
        self.stores = stores
        self.orgs: list[str] = []
        self.ids: list[str] = []

    async def __call__(self, count: int) -> list[str]:
        """`count` new keys of a new org; their ids, interleaved (neither in id order nor
        in reverse)."""
        org = f"many-{uuid.uuid4().hex[:10]}"
        tag = "".join(secrets.choice(string.ascii_letters) for _ in range(3))  # 8 = 3 + 5
        ids = [f"{tag}{i:05x}" for i in range(count)]
        ids = ids[1::2] + ids[::2]
        self.orgs.append(org)
        self.ids += ids
        conn = await asyncpg.connect(self.stores.database_url)
        try:
            await conn.execute("INSERT INTO orgs (slug, name) VALUES ($1, $1)", org)
            await conn.execute(INSERT_KEYS, org, ids)
        finally:
            await conn.close()
        return ids

    async def remove(self) -> None:
        conn = await asyncpg.connect(self.stores.database_url)
        try:
            await conn.execute("DELETE FROM api_keys WHERE org = ANY($1)", self.orgs)
            await conn.execute("DELETE FROM orgs WHERE slug = ANY($1)", self.orgs)
        finally:
            await conn.close()
        client = aioredis.Redis.from_url(self.stores.redis_url)
        try:
            for start in range(0, len(self.ids), 1000):
                await client.delete(*(f"keygate:key:{i}" for i in self.ids[start : start + 1000]))
        finally:
            await client.aclose()


@pytest.fixture
async def insert_keys(own_stores: OwnStores) -> AsyncIterator[ManyKeys]:
    made = ManyKeys(own_stores)
    try:
        yield made
    finally:
        await made.remove()


@pytest.fixture
async def db(own_stores: OwnStores) -> AsyncIterator[Database]:
    database = Database(own_stores.database_url, timeout=30.0)
    try:
        yield database
    finally:
        await database.close()


async def stamp_writes(stores: OwnStores, ids: list[str]) -> list[asyncpg.Record]:
    return await stores.fetch(
        "SELECT key_id, last_used_at, xact FROM test_stamp_writes WHERE key_id = ANY($1)", ids
    )


# ------------------------------------------------------------------------------ last_used


async def test_flush_of_twenty_thousand_keys_writes_each_once_in_bounded_transactions(
    own_stores: OwnStores, db: Database, insert_keys: ManyKeys
) -> None:
    ids = await insert_keys(FLUSHED_KEYS)
    recorder = LastUsedRecorder(db, 5.0, max_pending=100_000)
    for _ in range(3):  # many requests per key in the interval: one stamp each
        for key_id in ids:
            recorder.record(key_id)
    last_request = time.time()

    started = time.perf_counter()
    written = await recorder.flush()
    took = time.perf_counter() - started

    writes = await stamp_writes(own_stores, ids)
    per_xact: dict[int, int] = {}
    for row in writes:
        per_xact[row["xact"]] = per_xact.get(row["xact"], 0) + 1
    print(
        f"{FLUSHED_KEYS:,} keys flushed in {took * 1000:.0f} ms, {len(per_xact)} transactions"
        f" of at most {max(per_xact.values()):,} rows"
    )
    assert written == FLUSHED_KEYS and len(recorder) == 0
    assert len(writes) == FLUSHED_KEYS
    assert {row["key_id"] for row in writes} == set(ids)  # each key written exactly once
    assert len(per_xact) == math.ceil(FLUSHED_KEYS / STAMP_CHUNK)
    assert max(per_xact.values()) <= STAMP_CHUNK
    # Each stamp is the key's last request in the interval, never later.
    assert all(row["last_used_at"].timestamp() <= last_request for row in writes)

    # Nothing pending, nothing written: at most one write per key per interval.
    assert await recorder.flush() == 0
    assert len(await stamp_writes(own_stores, ids)) == FLUSHED_KEYS


async def test_a_flush_failing_midway_keeps_only_the_unwritten_stamps(
    own_stores: OwnStores, insert_keys: ManyKeys
) -> None:
    ids = await insert_keys(FLUSHED_KEYS)
    in_order = sorted(ids)
    third_chunk = in_order[2 * STAMP_CHUNK]
    # A row of the third chunk locked by another transaction: that chunk's statement waits
    # on it, and its connection is then cut (as a failover or an administrator would), so
    # the flush fails there. No timeout decides which chunk fails: a loaded machine only
    # makes each step slower.
    db = Database(own_stores.database_url, timeout=60.0)
    recorder = LastUsedRecorder(db, 5.0, max_pending=100_000)
    for key_id in ids:
        recorder.record(key_id)
    blocker = await asyncpg.connect(own_stores.database_url)
    try:
        async with blocker.transaction():
            await blocker.execute("SELECT 1 FROM api_keys WHERE id = $1 FOR UPDATE", third_chunk)
            flush = asyncio.create_task(recorder.flush())
            waiting = await wait_for_lock_waiter(own_stores, blocker.get_server_pid())
            await blocker.execute("SELECT pg_terminate_backend($1)", waiting)
            with pytest.raises(StoreUnavailable):
                await flush
        written = {row["key_id"] for row in await stamp_writes(own_stores, ids)}
        assert written == set(in_order[: 2 * STAMP_CHUNK])  # two chunks committed
        assert len(recorder) == FLUSHED_KEYS - 2 * STAMP_CHUNK  # the rest still pending

        assert await recorder.flush() == FLUSHED_KEYS - 2 * STAMP_CHUNK
        writes = await stamp_writes(own_stores, ids)
        assert len(writes) == FLUSHED_KEYS and {row["key_id"] for row in writes} == set(ids)
        assert len(recorder) == 0
    finally:
        await blocker.close()
        await db.close()


async def wait_for_lock_waiter(stores: OwnStores, holder: int) -> int:
    """The pid of the backend waiting for a lock that backend `holder` holds. Asked on a
    connection of its own, one query per transaction: within a transaction PostgreSQL
    answers pg_stat_activity from a snapshot taken at its first read."""
    watcher = await asyncpg.connect(stores.database_url)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            pid = await watcher.fetchval(
                "SELECT pid FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid)) LIMIT 1",
                holder,
            )
            if pid is not None:
                return int(pid)
            await asyncio.sleep(0.05)
    finally:
        await watcher.close()
    raise AssertionError("no statement came to wait on the locked row")


async def test_concurrent_flushes_of_the_same_keys_in_opposite_orders_never_deadlock(
    own_stores: OwnStores, db: Database, insert_keys: ManyKeys
) -> None:
    ids = await insert_keys(FLUSHED_KEYS)
    backwards = list(reversed(ids))
    # Two gateways' statements on their own connections, each with stamps newer than the
    # last round, so both have every row to lock; repeated to give a deadlock its chance.
    first = await asyncpg.connect(own_stores.database_url)
    second = await asyncpg.connect(own_stores.database_url)
    try:
        at = int(time.time()) - 3600  # the recorders' stamps come later
        for round_ in range(3):
            older = [float(at + 2 * round_ + 1)] * len(ids)
            newer = [float(at + 2 * round_ + 2)] * len(ids)
            written = await asyncio.gather(
                queries.stamp_last_used(first, ids, older),
                queries.stamp_last_used(second, backwards, newer),
            )
            # Whichever went first, the newer stamp was written, and the older one either
            # before it or not at all (re-checked once the row's lock was free).
            assert written[1] == FLUSHED_KEYS, written
            rows = await own_stores.fetch(
                "SELECT DISTINCT last_used_at FROM api_keys WHERE id = ANY($1)", ids
            )
            assert [r["last_used_at"] for r in rows] == [datetime.fromtimestamp(newer[0], UTC)]
    finally:
        await first.close()
        await second.close()

    # The same through two recorders (as two gateways flushing at once).
    recorders = [LastUsedRecorder(db, 5.0, 100_000), LastUsedRecorder(db, 5.0, 100_000)]
    for key_id in ids:
        recorders[0].record(key_id)
    for key_id in backwards:
        recorders[1].record(key_id)
    flushed = await asyncio.gather(*(r.flush() for r in recorders))
    assert sum(flushed) >= FLUSHED_KEYS, flushed


# ------------------------------------------------------------------------------ re-sync


@contextlib.asynccontextmanager
async def a_lookup(
    own_stores: OwnStores, db: Database, redis_url: str | None = None
) -> AsyncIterator[KeyLookup]:
    """A key lookup on the package's stores (or on `redis_url`), not started: the re-sync
    is called alone."""
    config = load_config(str(TEST_CONFIG))
    hasher = SecretHasher(ARGON2, threads=1)
    cache = RedisKeyCache.connect(redis_url or own_stores.redis_url, 600, 10.0, b"many-keys")
    try:
        yield KeyLookup(
            keys=dataclasses.replace(config.keys, argon2=ARGON2),
            cache=config.cache,
            db=db,
            redis=cache,
            hasher=hasher,
            server_secret=b"many-keys",
        )
    finally:
        hasher.close()
        await cache.close()


@pytest.fixture
async def lookup(own_stores: OwnStores, db: Database) -> AsyncIterator[KeyLookup]:
    async with a_lookup(own_stores, db) as made:
        yield made


async def redis_entries(
    client: aioredis.Redis, ids: list[str]
) -> dict[str, tuple[int, dict[str, Any]]]:
    """(version, state) of each id's Redis entry."""
    async with client.pipeline(transaction=False) as pipe:
        for key_id in ids:
            pipe.hmget(f"keygate:key:{key_id}", ["v", "s"])
        replies = await pipe.execute()
    return {
        key_id: (int(v), json.loads(s))
        for key_id, (v, s) in zip(ids, replies, strict=True)
        if v is not None
    }


async def test_resync_writes_every_changed_key_at_its_newest_version_never_over_a_newer(
    own_stores: OwnStores, lookup: KeyLookup, insert_keys: ManyKeys
) -> None:
    ids = await insert_keys(RESYNCED_KEYS)
    conn = await asyncpg.connect(own_stores.database_url)
    try:  # every key changed (one transaction: one updated_at), some of them twice
        await conn.execute("UPDATE api_keys SET version = version + 1 WHERE id = ANY($1)", ids)
        await conn.execute(
            "UPDATE api_keys SET version = version + 1, scopes = '{write}' WHERE id = ANY($1)",
            ids[:100],
        )
        rows = await conn.fetch("SELECT id, version FROM api_keys WHERE id = ANY($1)", ids)
    finally:
        await conn.close()
    versions = {r["id"]: r["version"] for r in rows}
    assert lookup.redis is not None
    client = lookup.redis.client
    # Stale entries (version 1, as before the changes) for some keys, and for others an
    # entry newer than PostgreSQL's row as this read sees it (another gateway wrote a
    # later change first): the re-sync must replace the first, never the second.
    stale, newer = ids[100:1100], ids[1100:1200]
    async with client.pipeline(transaction=False) as pipe:
        for key_id in stale:
            state = KeyState(key_id, "x", "p", "test", ("read",), None, False, 1, None)
            pipe.hset(f"keygate:key:{key_id}", mapping={"v": 1, "s": state_to_json(state)})
        for key_id in newer:
            state = KeyState(key_id, "x", "p", "test", ("admin",), None, True, 99, None)
            pipe.hset(f"keygate:key:{key_id}", mapping={"v": 99, "s": state_to_json(state)})
        await pipe.execute()

    started = time.perf_counter()
    count = await key_changes.resync_recent_changes(lookup)
    took = time.perf_counter() - started
    print(
        f"re-sync of {count:,} recently changed keys (of which {RESYNCED_KEYS:,} here): "
        f"{took * 1000:.0f} ms"
    )

    assert count is not None and count >= RESYNCED_KEYS  # other tests' keys count too
    entries = await redis_entries(client, ids)
    assert set(entries) == set(ids)
    for key_id in ids:
        version, entry = entries[key_id]
        if key_id in newer:
            assert (version, entry["version"], entry["revoked"]) == (99, 99, True)
        else:
            assert version == entry["version"] == versions[key_id], key_id
            assert entry["scopes"] == (["write"] if key_id in ids[:100] else ["read"])
    # Every key was announced to this process at its version (older states refused).
    assert all(lookup.local.floor(key_id) >= versions[key_id] for key_id in ids)


async def test_the_postgres_resync_reads_every_changed_key_across_pages(
    own_stores: OwnStores, lookup: KeyLookup, insert_keys: ManyKeys
) -> None:
    ids = await insert_keys(RESYNCED_KEYS)
    changed = await key_changes._recent_changes(lookup)
    found = [key.id for key in changed]
    assert len(found) == len(set(found))  # no key read twice across pages
    assert set(ids) <= set(found)
    assert len(found) > key_changes.RESYNC_BATCH  # several pages

    assert lookup.redis is not None
    await key_changes._repair_redis(lookup, changed)
    entries = await redis_entries(lookup.redis.client, ids)
    assert set(entries) == set(ids)


async def test_a_periodic_resync_reads_only_its_window(
    own_stores: OwnStores, lookup: KeyLookup, insert_keys: ManyKeys
) -> None:
    """The periodic re-sync covers what changed since its last complete run, not the whole
    Redis TTL: older changes cost it nothing (the channel's connect re-synced them)."""
    ids = await insert_keys(2 * key_changes.RESYNC_BATCH)
    old, recent = ids[: key_changes.RESYNC_BATCH], ids[key_changes.RESYNC_BATCH :]
    conn = await asyncpg.connect(own_stores.database_url)
    try:
        await conn.execute(
            "UPDATE api_keys SET updated_at = now() - interval '300 seconds' WHERE id = ANY($1)",
            old,
        )
    finally:
        await conn.close()
    assert lookup.redis is not None
    await lookup.redis.client.delete(*(f"keygate:key:{key_id}" for key_id in ids))
    count = await key_changes.resync_recent_changes(lookup, window=60)
    assert count is not None and count >= len(recent)
    entries = await redis_entries(lookup.redis.client, ids)
    assert set(entries) == set(recent)  # within the window: every one; before it: none
    assert await key_changes.resync_recent_changes(lookup) is not None  # the whole TTL
    assert set(await redis_entries(lookup.redis.client, ids)) == set(ids)


def unshared_redis_url(own_stores: OwnStores) -> str:
    """A Redis database of the package's server that no gateway uses. The re-sync lease is
    fleet-wide: on the package's own database, a gateway that another test left running
    (the package-scoped fleet) claims it on its own schedule, between a test's steps."""
    return own_stores.redis_url.rsplit("/", 1)[0] + "/7"


async def test_one_gateway_of_the_fleet_runs_each_periodic_resync(
    own_stores: OwnStores, db: Database, insert_keys: ManyKeys
) -> None:
    """Two workers' periodic loops on the same Redis: the run is won by one of them (the
    other's tick finds the lease held), and the winner repairs the stale entry."""
    (key_id,) = await insert_keys(1)
    await own_stores.fetch("UPDATE api_keys SET version = version + 1 WHERE id = $1", key_id)
    url = unshared_redis_url(own_stores)
    async with a_lookup(own_stores, db, url) as first, a_lookup(own_stores, db, url) as second:
        assert first.redis is not None and second.redis is not None
        await first.redis.client.delete("keygate:resync:lease", f"keygate:key:{key_id}")
        await first.redis.put_many([a_state(key_id, version=1)])
        loops = [
            asyncio.create_task(key_changes.resync_periodically(lookup, redis, interval=2.0))
            for lookup, redis in ((first, first.redis), (second, second.redis))
        ]
        try:
            # Done when a run has marked what it read (after its Redis write: polling
            # Redis alone could cancel the winner between its write and its marks).
            deadline = time.monotonic() + 30
            while max(lookup.local.floor(key_id) for lookup in (first, second)) != 2:
                assert time.monotonic() < deadline, "the periodic re-sync never ran"
                await asyncio.sleep(0.05)
            # The winner repaired the stale entry.
            assert (await redis_entries(first.redis.client, [key_id]))[key_id][0] == 2
        finally:
            for loop in loops:
                loop.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
    # Each run marks the versions it read as heard: only the winner's lookup has.
    assert sorted(lookup.local.floor(key_id) for lookup in (first, second)) == [0, 2]


async def test_the_resync_lease_and_the_window_it_reports(own_stores: OwnStores) -> None:
    first = RedisKeyCache.connect(unshared_redis_url(own_stores), 600, 10.0, b"many-keys")
    second = RedisKeyCache.connect(unshared_redis_url(own_stores), 600, 10.0, b"many-keys")
    try:
        await first.client.delete("keygate:resync:lease", "keygate:resync:done")
        claim = await first.claim_resync(lease=0.3)
        assert claim is not None and claim[1] == math.inf  # no complete run recorded
        assert await second.claim_resync(lease=0.3) is None  # held
        await first.resync_done(claim[0])
        await asyncio.sleep(0.4)  # the lease lapses
        again = await second.claim_resync(lease=0.3)
        assert again is not None
        began, since_done = again
        # Measured on Redis's clock from when the first run began.
        assert since_done == pytest.approx(began - claim[0]) and 0.4 <= since_done < 30
        assert 0 < await first.client.pttl("keygate:resync:done") <= 600_000
    finally:
        await first.close()
        await second.close()


def a_state(key_id: str, version: int) -> KeyState:
    return KeyState(key_id, "o", "p", "test", ("read",), None, False, version, None)


async def test_put_many_keeps_the_version_rule(own_stores: OwnStores) -> None:
    cache = RedisKeyCache.connect(own_stores.redis_url, 600, 5.0, b"many-keys")
    try:
        ids = [f"pm{uuid.uuid4().hex[:6]}" for _ in range(3)]
        await cache.put_many([a_state(ids[0], 5), a_state(ids[1], 5), a_state(ids[2], 5)])
        await cache.client.script_flush()  # as after a Redis restart: the script is reloaded
        await cache.put_many([a_state(ids[0], 4), a_state(ids[1], 5), a_state(ids[2], 6)])
        entries = await redis_entries(cache.client, ids)
        assert [entries[i][0] for i in ids] == [5, 5, 6]
        for key_id in ids:
            assert 0 < await cache.client.pttl(f"keygate:key:{key_id}") <= 600_000
    finally:
        await cache.close()


# ------------------------------------------------------------------------------ rate counters


async def test_every_rate_counter_of_many_keys_expires(own_stores: OwnStores) -> None:
    client = aioredis.Redis.from_url(own_stores.redis_url)
    try:
        counts = RedisRateCounts(client)
        tag = "".join(secrets.choice(string.ascii_letters) for _ in range(3))
        now = time.time()
        window = int(now) - int(now) % 60

        def counters(i: int) -> list[Counter]:
            key_id = f"{tag}{i:05x}"
            return [
                Counter(counter_name(None, key_id, 60, window), 1, window + 60),
                Counter(counter_name("read", key_id, 60, window), 5, window + 60),
            ]

        for start in range(0, 2_000, 50):  # each key twice: the second is refused
            for _ in range(2):
                await asyncio.gather(
                    *(counts.count(counters(i), now) for i in range(start, start + 50))
                )
        names = [n async for n in client.scan_iter(match=f"keygate:rl:{{{tag}*", count=1000)]
        assert len(names) == 2 * 2_000
        async with client.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.pttl(name)
            ttls = await pipe.execute()
        live = window + 60 + 10 - now  # to the window's end plus EXPIRY_MARGIN
        assert all(0 < ttl <= live * 1000 + 1 for ttl in ttls), sorted(ttls)[:5]
    finally:
        await client.aclose()
