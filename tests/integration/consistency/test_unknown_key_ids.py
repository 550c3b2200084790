"""Negative caching of unknown key ids (gaps, `unknown_ids`), on real PostgreSQL and Redis.

A scan of random well-formed keys costs at most one Postgres read per gap between known
ids, then nothing (no Redis read either) for the TTL; a key created afterwards, even with
the very id that was probed, is accepted within 1 s everywhere (PostgreSQL announces the
insert) and at once where it was made; and a gap read by a lookup held across the creation
of a key inside it is never cached. Store reads are counted at the component's own
checkpoints, which it awaits right after each Redis and Postgres read.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from gateway.auth import key_changes
from gateway.auth.key_lookup import KeyLookup
from gateway.keys.format import generate_key
from gateway.keys.models import ApiKey
from gateway.keys.service import KeyService
from gateway.observability import metrics
from gateway.store import queries
from gateway.store.key_notifications import CHANNEL
from tests.integration.consistency.test_key_lookup import (
    ACTOR,
    SECRET,
    Barrier,
    World,
    heard,
    outcome,
)
from tests.integration.consistency.test_key_lookup import world as _world  # noqa: F401

CLIENT = "10.9.0.1"


@pytest.fixture(name="world")
def world_fixture(_world: World) -> World:  # noqa: F811 - the imported fixture
    """test_key_lookup's world: a real PostgreSQL and Redis, lookups started on demand."""
    return _world


class Reads:
    """A checkpoint that counts the store reads of a lookup, by tier."""

    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()

    async def __call__(self, point: str, key_id: str) -> None:
        self.counts[point] += 1


async def running(world: World, **kwargs: Any) -> KeyLookup:
    """A running lookup that hears PostgreSQL too: only that channel announces new keys,
    so only then do gaps live `cache.unknown_ttl` (and its arrival clears them)."""
    lookup = await world.lookup(**kwargs)
    for _ in range(500):
        if key_changes.POSTGRES in lookup.channels:
            return lookup
        await asyncio.sleep(0.01)
    raise AssertionError("the lookup never listened on PostgreSQL")


def unknown_key(world: World, key_id: str | None = None) -> str:
    """A well-formed key (right prefix, valid checksum) for an id that holds no key."""
    full, _ = generate_key(world.config.keys.prefixes["live"], key_id)
    return full


async def new_org(world: World) -> str:
    org = f"uk-{uuid.uuid4().hex[:10]}"
    await world.service.create_org(ACTOR, org)
    return org


async def insert_with_id(world: World, org: str, key_id: str) -> tuple[ApiKey, str]:
    """A key with a chosen id, written as another gateway's service would (PostgreSQL alone
    announces it: no Redis message, no call into the lookup under test)."""
    prefix = world.config.keys.prefixes["live"]
    full, parts = generate_key(prefix, key_id)
    draft = ApiKey(
        id=key_id,
        org=org,
        name="probed",
        prefix=prefix,
        env="live",
        scopes=("read",),
        metadata={},
        created_at=datetime.now(UTC),
        created_by=ACTOR.principal,
        expires_at=None,
        last_used_at=None,
        revoked_at=None,
        revoked_by=None,
        revoke_reason=None,
        rolled_from=None,
        version=1,
        rate_limit=None,
        secret_hash=await world.hasher.hash_async(parts.secret),
    )
    async with world.db.transaction() as conn:
        return await queries.insert_key(conn, draft), full


def fresh_id(taken: set[str]) -> str:
    while True:
        key_id = unknown_key_id()
        if key_id not in taken:
            return key_id


def unknown_key_id() -> str:
    return generate_key("x_")[1].key_id


def postgres_misses() -> float:
    value = metrics.REGISTRY.get_sample_value(
        "keygate_key_cache_requests_total", {"tier": "postgres", "result": "miss"}
    )
    return value or 0.0


# ------------------------------------------------------------------------- scans


async def test_a_scan_of_random_ids_costs_one_query_per_gap_then_nothing(world: World) -> None:
    org = await new_org(world)
    known = [await world.key(org=org) for _ in range(5)]
    reads = Reads()
    lookup = await running(world, checkpoint=reads)
    hot = known[0]
    assert await outcome(lookup.identify(hot.secret, CLIENT)) == "allowed"
    reads.counts.clear()
    misses = postgres_misses()

    taken = {k.id for k in known}
    scan = [unknown_key(world, fresh_id(taken)) for _ in range(400)]
    first = [await outcome(lookup.identify(key, CLIENT)) for key in scan[:200]]
    second = [await outcome(lookup.identify(key, CLIENT)) for key in scan[200:]]
    assert set(first) == set(second) == {"invalid_api_key"}
    gaps = len(known) + 1
    print(f"400 random ids against {len(known)} keys: {dict(reads.counts)} store reads")
    assert reads.counts["postgres"] <= gaps  # one read per gap at most, whatever the scan
    assert postgres_misses() - misses == reads.counts["postgres"]
    assert len(lookup.unknown) <= gaps

    # Every id of the scan again, and any other id in a learnt gap: no store read at all.
    reads.counts.clear()
    again = [await outcome(lookup.identify(key, CLIENT)) for key in scan]
    assert set(again) == {"invalid_api_key"}
    assert reads.counts == {}
    # The hot key was never evicted by the scan, nor is it refused.
    assert len(lookup.local) == 1 and lookup.local.get(hot.id) is not None
    for key in known:
        assert await outcome(lookup.identify(key.secret, CLIENT)) == "allowed"


async def test_gaps_are_read_again_after_their_ttl(world: World) -> None:
    reads = Reads()
    lookup = await running(world, checkpoint=reads)
    assert lookup.unknown.ttl == world.config.cache.unknown_ttl  # a channel is live
    probe = unknown_key(world)
    assert await outcome(lookup.identify(probe, CLIENT)) == "invalid_api_key"
    assert await outcome(lookup.identify(probe, CLIENT)) == "invalid_api_key"
    assert reads.counts["postgres"] == 1
    lookup.unknown.clock = lambda: time.monotonic() + world.config.cache.unknown_ttl + 1
    assert await outcome(lookup.identify(probe, CLIENT)) == "invalid_api_key"
    assert reads.counts["postgres"] == 2


# ------------------------------------------------------------------ creation


async def test_a_key_created_with_a_probed_id_elsewhere_is_accepted_within_a_second(
    world: World,
) -> None:
    org = await new_org(world)
    await world.key(org=org)  # a store that is not empty
    lookup = await running(world)
    key_id = unknown_key_id()
    assert await outcome(lookup.identify(unknown_key(world, key_id), CLIENT)) == "invalid_api_key"
    assert lookup.unknown.covers(key_id)

    _, full = await insert_with_id(world, org, key_id)  # by another gateway: PostgreSQL tells
    created = time.monotonic()
    while await outcome(lookup.identify(full, CLIENT)) != "allowed":
        assert time.monotonic() - created < 1.0, "the new key was refused for over 1 s"
        await asyncio.sleep(0.005)
    print(f"accepted {time.monotonic() - created:.4f} s after its creation")
    assert not lookup.unknown.covers(key_id)


async def test_a_key_created_through_this_lookup_is_accepted_at_once(world: World) -> None:
    """A lookup that hears no channel at all: only its own `key_changed` (what the admin
    API's service calls) can tell it, and it must be enough."""
    org = await new_org(world)
    lookup = KeyLookup(
        keys=world.config.keys,
        cache=world.config.cache,
        db=world.db,
        redis=None,
        hasher=world.hasher,
        server_secret=SECRET,
    )
    key_id = unknown_key_id()
    assert await outcome(lookup.identify(unknown_key(world, key_id), CLIENT)) == "invalid_api_key"
    key, full = await insert_with_id(world, org, key_id)
    # Unheard, the gap still refuses it (for at most DEGRADED_LOCAL_TTL: no channel live).
    assert lookup.unknown.ttl <= 1.0
    assert await outcome(lookup.identify(full, CLIENT)) == "invalid_api_key"
    assert await lookup.key_changed(key) is None
    assert await outcome(lookup.identify(full, CLIENT)) == "allowed"


async def test_a_key_created_through_the_service_wired_to_this_lookup_is_accepted(
    world: World,
) -> None:
    """The admin API's create, as app.py wires it, in an empty store: the probe's gap is
    the whole id space, so the new key (whatever its id) lies in it."""
    org = await new_org(world)
    lookup = await running(world)
    assert await outcome(lookup.identify(unknown_key(world), CLIENT)) == "invalid_api_key"
    assert len(lookup.unknown) == 1
    service = KeyService(world.db, world.config.keys, world.hasher, on_change=lookup.key_changed)
    created = await service.create_key(ACTOR, org, "new", ["read"])
    started = time.monotonic()
    while await outcome(lookup.identify(created.secret, CLIENT)) != "allowed":
        assert time.monotonic() - started < 1.0, "the new key was refused for over 1 s"
        await asyncio.sleep(0.005)


# ------------------------------------------------------------------ interleaving


async def test_a_gap_read_across_the_creation_of_a_key_inside_it_is_not_cached(
    world: World,
) -> None:
    org = await new_org(world)
    barrier = Barrier("postgres")
    lookup = await running(world, checkpoint=barrier)
    probed = unknown_key(world)
    # Held right after Postgres answered "no key anywhere": the gap is the whole id space.
    in_flight = asyncio.create_task(outcome(lookup.identify(probed, CLIENT)))
    await asyncio.wait_for(barrier.reached.wait(), 5)

    generation = lookup.unknown.ticket()
    created = await world.service.create_key(ACTOR, org, "racer", ["read"])
    for _ in range(500):  # until PostgreSQL's announcement of the insert is heard
        if lookup.unknown.ticket() != generation:
            break
        await asyncio.sleep(0.01)
    else:
        raise AssertionError("the creation was never heard")
    barrier.release.set()
    assert await in_flight == "invalid_api_key"  # what it read was true when it read it
    assert len(lookup.unknown) == 0  # ...but it is not kept: it holds the new key
    assert await outcome(lookup.identify(created.secret, CLIENT)) == "allowed"


async def test_changes_outside_a_gap_in_flight_do_not_refuse_it(world: World) -> None:
    org = await new_org(world)
    keys = [await world.key(org=org) for _ in range(3)]
    barrier = Barrier("postgres")
    lookup = await running(world, checkpoint=barrier)
    key_id = fresh_id({k.id for k in keys})
    in_flight = asyncio.create_task(outcome(lookup.identify(unknown_key(world, key_id), CLIENT)))
    await asyncio.wait_for(barrier.reached.wait(), 5)
    revoked = await world.service.revoke_key(ACTOR, keys[0].id, reason="test")  # a bound, at most
    await heard(lookup, keys[0].id, revoked.key.version)
    barrier.release.set()
    assert await in_flight == "invalid_api_key"
    assert lookup.unknown.covers(key_id)


# ------------------------------------------------------------------ the trigger


async def test_postgres_announces_every_new_key(world: World) -> None:
    """Migration 0007: an insert is announced like a change, `<id>:1`, whoever makes it."""
    org = await new_org(world)
    listener = await asyncpg.connect(world.config.database_url)
    heard_: asyncio.Queue[str] = asyncio.Queue()
    try:
        await listener.add_listener(CHANNEL, lambda *args: heard_.put_nowait(args[-1]))
        created = await world.service.create_key(ACTOR, org, "announced", ["read"])
        assert await asyncio.wait_for(heard_.get(), 2) == f"{created.key.id}:1"
        key_id = unknown_key_id()
        await insert_with_id(world, org, key_id)  # plain INSERT, no service
        assert await asyncio.wait_for(heard_.get(), 2) == f"{key_id}:1"
    finally:
        await listener.close()


async def test_the_gap_query_reads_two_index_entries_not_the_table(world: World) -> None:
    org = await new_org(world)
    async with world.db.connection() as conn:
        await conn.execute(  # 5,000 keys, written directly: only their ids matter here
            """INSERT INTO api_keys (id, org, name, prefix, env, secret_hash, created_at,
                   created_by)
               SELECT substr(md5(n::text), 1, 4) || upper(substr(md5(n::text), 5, 4)), $1,
                   'bulk', 'kg_live_', 'live', '$argon2id$x', now(), 'test'
               FROM generate_series(1, 5000) AS n""",
            org,
        )
        await conn.execute("ANALYZE api_keys")
        rows = await conn.fetch(
            f"EXPLAIN (ANALYZE, COSTS OFF) {queries.KEY_OR_GAP_SQL}", unknown_key_id()
        )
    plan = "\n".join(r[0] for r in rows)
    print(plan)
    assert plan.count("api_keys_id_c_idx") == 2, plan
    assert "Seq Scan" not in plan and "Sort" not in plan, plan


# Linguistic collations that sort case-insensitively first (as en_US does); which exist
# depends on the PostgreSQL build (ICU) and the server's OS locales.
LINGUISTIC = (
    """CREATE COLLATION test_linguistic (provider = icu, locale = 'und')""",
    """CREATE COLLATION test_linguistic (provider = libc, locale = 'en_US.utf8')""",
)


@pytest.mark.parametrize("probe", ["a0000000", "Zzzzzzzz", "B0000000", "00000000", "c0000000"])
async def test_gaps_follow_code_point_order_whatever_the_column_collation(
    world: World, probe: str
) -> None:
    """Python's order, and so the gap, puts every upper-case letter first; en_US puts
    "a0000000" before "A0000000". Where the server offers such a collation the column is
    switched to it, inside a transaction rolled back at the end, and the gap query must
    answer in code-point order all the same (the embedded test server is C.UTF-8 with
    neither ICU nor en_US: there only the code-point answer itself is checked)."""
    org = await new_org(world)
    known = ["A0000000", "B0000000", "b0000000"]
    for key_id in known:
        await insert_with_id(world, org, key_id)
    i = bisect.bisect_left(known, probe)
    expected = (
        (probe, None, None)
        if probe in known
        else (None, known[i - 1] if i else None, known[i] if i < len(known) else None)
    )
    async with world.db.connection() as conn:
        change = conn.transaction()
        await change.start()
        try:
            linguistic = False
            for create in LINGUISTIC:
                try:
                    async with conn.transaction():  # a savepoint: a refusal is undone
                        await conn.execute(create)
                        await conn.execute(
                            """ALTER TABLE api_keys
                                   ALTER COLUMN id TYPE text COLLATE test_linguistic,
                                   ALTER COLUMN rolled_from TYPE text COLLATE test_linguistic"""
                        )
                    linguistic = True
                    break
                except asyncpg.PostgresError:
                    continue
            if linguistic and probe in ("a0000000", "Zzzzzzzz"):  # the hazard is real
                by_column = await conn.fetchval("SELECT max(id) FROM api_keys WHERE id < $1", probe)
                assert by_column != expected[1]
            found = await queries.find_key_or_gap(conn, probe)
        finally:
            await change.rollback()
    print(f"linguistic collation available: {linguistic}")
    assert ((found.key.id if found.key else None), found.below, found.above) == expected
