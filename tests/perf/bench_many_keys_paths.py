"""Many keys in the background paths (issue 15, item 3; a benchmark, not a test):

    .venv/bin/python tests/perf/bench_many_keys_paths.py [--keys 100000] [--rounds 3]

Starts an embedded PostgreSQL and Redis in a temp dir (both stopped and removed at the
end), migrates, inserts --keys keys in one SQL statement (cheap fake hashes: nothing here
verifies a secret), then measures, each --rounds times (medians and worst shown):

1. last_used: a flush with every key pending (each with a newer stamp than the row
   has, so every row is written), three ways: the statement before issue 15 (one
   `UPDATE ... FROM unnest` for all keys), today's `stamp_last_used` as one statement
   for all keys, and `LastUsedRecorder.flush` (STAMP_CHUNK keys per statement). The
   longest single statement is what holds row locks longest; the gateway's pool
   cancels any statement longer than `server.store_timeout` (default 2 s).
2. Re-sync: every key changed (one UPDATE bumping each version), Redis emptied, then
   the re-sync writes every changed key into Redis: before issue 15 (one query for all,
   then one Redis round trip per key) and today's `resync_recent_changes` (pages of
   RESYNC_BATCH, one pipeline each). The Python memory the re-sync's rows take at peak
   (tracemalloc) is shown too.
3. Rate counters: one route counter per key counted through `RedisRateCounts.count`
   (the gateway's script); then Redis's `MEMORY USAGE` of one counter, `used_memory`
   before and after, and the TTL of every counter (SCAN).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import shutil
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from gateway.auth import key_changes  # noqa: E402
from gateway.auth.key_lookup import KeyLookup  # noqa: E402
from gateway.auth.last_used import STAMP_CHUNK, LastUsedRecorder  # noqa: E402
from gateway.config import Argon2Params, load_config  # noqa: E402
from gateway.embedded import EmbeddedPostgres, EmbeddedRedis  # noqa: E402
from gateway.keys.hashing import SecretHasher  # noqa: E402
from gateway.keys.state import KeyState  # noqa: E402
from gateway.store import queries  # noqa: E402
from gateway.store.db import Database  # noqa: E402
from gateway.store.key_cache import RedisKeyCache  # noqa: E402
from gateway.store.migrate import migrate  # noqa: E402
from gateway.store.rate_counts import Counter, RedisRateCounts, counter_name  # noqa: E402

TEST_CONFIG = ROOT / "tests" / "support" / "keygate.test.yaml"
TIMEOUT = 120.0  # the benchmark's own pool: nothing here may be cut short

# The statement `stamp_last_used` ran before issue 15 (one for the whole flush).
OLD_STAMP = """UPDATE api_keys AS k SET last_used_at = s.at
   FROM unnest($1::text[], $2::timestamptz[]) AS s(id, at)
   WHERE k.id = s.id AND (k.last_used_at IS NULL OR k.last_used_at < s.at)"""

INSERT_KEYS = """
INSERT INTO api_keys (id, org, name, prefix, env, secret_hash, scopes, created_at,
                      created_by)
SELECT lpad(to_hex(i), 8, '0'), 'bench', 'k' || i, 'kg_test_' || lpad(to_hex(i), 8, '0'),
       'test', '$argon2id$bench', '{read}', now(), 'bench'
FROM generate_series(1, $1) AS i
"""


def figures(label: str, seconds: list[float], extra: str = "") -> None:
    print(
        f"  {label:<52} median {statistics.median(seconds) * 1000:8.0f} ms"
        f"   worst {max(seconds) * 1000:8.0f} ms{extra}"
    )


async def timed(action: Callable[[], Awaitable[Any]]) -> float:
    started = time.perf_counter()
    await action()
    return time.perf_counter() - started


class StatementTimes:
    """Wraps `queries.stamp_last_used` to time each statement the recorder runs."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.original = queries.stamp_last_used

    async def __call__(self, conn: Any, ids: Any, at: Any) -> int:
        started = time.perf_counter()
        try:
            return await self.original(conn, ids, at)
        finally:
            self.times.append(time.perf_counter() - started)


async def bench_last_used(db: Database, ids: list[str], rounds: int) -> None:
    print(f"last_used: a flush of {len(ids):,} distinct keys (every row written)")

    async def reset() -> None:  # not timed: every run then writes every row
        async with db.connection() as conn:
            await conn.execute("UPDATE api_keys SET last_used_at = NULL", timeout=TIMEOUT)

    def stamps() -> list[float]:
        return [time.time()] * len(ids)

    async def old() -> None:
        async with db.connection() as conn:
            now = [datetime.now(UTC)] * len(ids)
            result = await conn.execute(OLD_STAMP, ids, now, timeout=TIMEOUT)
        assert result == f"UPDATE {len(ids)}", result

    async def one_statement() -> None:
        async with db.connection() as conn:
            written = await queries.stamp_last_used(conn, ids, stamps())
        assert written == len(ids), written

    recorder = LastUsedRecorder(db, 5.0, len(ids))
    timer = StatementTimes()

    async def chunked() -> None:
        for key_id in reversed(ids):  # any order: the flush sorts
            recorder.record(key_id)
        written = await recorder.flush()
        assert written == len(ids), written

    results: dict[str, list[float]] = {"old": [], "one": [], "chunked": []}
    for _ in range(rounds):
        await reset()
        results["old"].append(await timed(old))
        await reset()
        results["one"].append(await timed(one_statement))
        await reset()
        queries.stamp_last_used = timer  # type: ignore[assignment]
        try:
            results["chunked"].append(await timed(chunked))
        finally:
            queries.stamp_last_used = timer.original
    figures("before: one UPDATE ... FROM unnest", results["old"])
    figures("one stamp_last_used statement (locks in id order)", results["one"])
    figures(
        f"LastUsedRecorder.flush, {STAMP_CHUNK:,} per statement",
        results["chunked"],
        f"   (longest statement {max(timer.times) * 1000:.0f} ms)",
    )


async def old_resync(lookup: KeyLookup) -> int:
    """The re-sync before issue 15: every row in one query, one Redis call per key."""
    assert lookup.redis is not None
    async with lookup.db.connection() as conn:
        rows = await conn.fetch(
            f"""SELECT {queries._KEY_COLUMNS} FROM api_keys
                WHERE updated_at > now() - make_interval(secs => $1)""",
            lookup.cache_config.redis_ttl,
            timeout=TIMEOUT,
        )
    changed = [queries._key(r) for r in rows]
    for key in changed:
        await lookup.redis.put(KeyState.of(key), None)
        lookup.changed(key.id, key.version)
    return len(changed)


async def bench_resync(db: Database, redis_url: str, keys: int, rounds: int) -> None:
    print(f"re-sync: {keys:,} keys changed within the Redis TTL, Redis emptied before each run")
    config = load_config(str(TEST_CONFIG))
    argon2 = Argon2Params(time_cost=1, memory_kib=1024, parallelism=1)
    hasher = SecretHasher(argon2, threads=1)
    cache = RedisKeyCache.connect(redis_url, 600, 30.0, b"bench")
    lookup = KeyLookup(
        keys=dataclasses.replace(config.keys, argon2=argon2),
        cache=config.cache,
        db=db,
        redis=cache,
        hasher=hasher,
        server_secret=b"bench",
    )
    async with db.connection() as conn:
        await conn.execute("UPDATE api_keys SET version = version + 1", timeout=TIMEOUT)
    try:
        results: dict[str, list[float]] = {"old": [], "new": []}
        peaks: dict[str, int] = {}
        resyncs = {"old": old_resync, "new": key_changes.resync_recent_changes}
        for round_ in range(rounds + 1):
            for name, resync in resyncs.items():
                await cache.client.flushall()
                traced = round_ == rounds  # a last round for memory: tracemalloc is slow
                if traced:
                    tracemalloc.start()
                started = time.perf_counter()
                count = await resync(lookup)
                if traced:
                    peaks[name] = tracemalloc.get_traced_memory()[1]
                    tracemalloc.stop()
                else:
                    results[name].append(time.perf_counter() - started)
                assert count == keys, (name, count)
                assert await cache.client.dbsize() == keys
        figures(
            "before: one query, one Redis call per key",
            results["old"],
            f"   (peak Python memory {peaks['old'] / 2**20:.0f} MiB)",
        )
        figures(
            f"resync_recent_changes: pages of {key_changes.RESYNC_BATCH:,}, pipelined",
            results["new"],
            f"   (peak Python memory {peaks['new'] / 2**20:.0f} MiB)",
        )
    finally:
        hasher.close()
        await cache.close()


async def bench_rate_counters(redis_url: str, keys: int) -> None:
    print(f"rate counters: {keys:,} keys, one request each on a route limited to 100/60s")
    client = aioredis.Redis.from_url(redis_url)
    try:
        await client.flushall()
        counts = RedisRateCounts(client)
        before = (await client.info("memory"))["used_memory"]
        now = time.time()
        window = int(now) - int(now) % 60
        started = time.perf_counter()
        batch = 50  # concurrent requests (the pool allows few connections)
        for start in range(0, keys, batch):
            await asyncio.gather(
                *(
                    counts.count(
                        [Counter(counter_name("read", f"{i:08x}", 60, window), 100, window + 60)],
                        now,
                    )
                    for i in range(start, min(keys, start + batch))
                )
            )
        took = time.perf_counter() - started
        after = (await client.info("memory"))["used_memory"]
        sample = counter_name("read", f"{0:08x}", 60, window)
        usage = await client.memory_usage(sample)
        without_ttl = 0
        total = 0
        async for name in client.scan_iter(match="keygate:rl:*", count=1000):
            total += 1
            if await client.pttl(name) < 0:
                without_ttl += 1
        print(f"  {total:,} counters written in {took:.1f} s; one is {sample}")
        print(f"  MEMORY USAGE of one counter: {usage} B")
        print(
            f"  used_memory grew by {(after - before) / 2**20:.1f} MiB"
            f" ({(after - before) / keys:.0f} B per counter)"
        )
        print(f"  counters without a TTL: {without_ttl}")
    finally:
        await client.aclose()


async def main(args: argparse.Namespace) -> None:
    base = Path(tempfile.mkdtemp(prefix="keygate-bench-many-keys-"))
    pg = EmbeddedPostgres(base / "pg")
    rd = EmbeddedRedis(base / "redis")
    try:
        pg.start()
        rd.start()
        db = Database(pg.url, timeout=TIMEOUT)
        try:
            await migrate(db)
            async with db.connection() as conn:
                await conn.execute("INSERT INTO orgs (slug, name) VALUES ('bench', 'bench')")
                await conn.execute(INSERT_KEYS, args.keys, timeout=TIMEOUT)
                await conn.execute("VACUUM ANALYZE api_keys", timeout=TIMEOUT)
                ids = [r["id"] for r in await conn.fetch("SELECT id FROM api_keys ORDER BY id")]
            print(f"{len(ids):,} keys in PostgreSQL; {args.rounds} rounds\n")
            await bench_last_used(db, ids, args.rounds)
            print()
            await bench_resync(db, rd.url, len(ids), args.rounds)
            print()
            await bench_rate_counters(rd.url, len(ids))
        finally:
            await db.close()
    finally:
        rd.destroy()
        pg.destroy()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    asyncio.run(main(parser.parse_args()))
