"""Bytes per cached key (issue 15, item 2): in-process (LocalKeyCache) and in Redis.

    .venv/bin/python tests/perf/cache_memory.py [--counts 10000,100000] [--redis-count 10000]

In-process: a LocalKeyCache filled the way a lookup answered from Redis fills it (the key
id sliced from the presented string, the state parsed from the Redis JSON by
state_from_json, a 32-byte BLAKE2b verifier, then put_proof with the 16-byte proof of the
whole string, and the identity headers its first request builds), measured with
tracemalloc (bytes still allocated after the fill, divided by N); the lines that hold them
are listed. A second fill shares the org/prefix/env strings and the scopes tuple between
entries explicitly (state_from_json does so itself since issue 15: the two agree).

Redis: entries written by RedisKeyCache.put (version-checked Lua, a verifier) in an
embedded Redis; MEMORY USAGE of one and the used_memory growth per entry; then candidate
encodings of the same content, written as plain strings with the same TTL:
  json-string  one string: `<version>|<fingerprint>|<verifier>|<state JSON>`
  packed       one string: struct-packed version, flags, expiry, rate limit, verifier
               (raw 32 bytes), fingerprint, then org/prefix/env/scopes length-prefixed
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import shutil
import struct
import sys
import tempfile
import tracemalloc
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

from gateway.auth.authenticate import identity_headers  # noqa: E402
from gateway.auth.local_cache import LocalKeyCache  # noqa: E402
from gateway.keys import format as key_format  # noqa: E402
from gateway.keys.hashing import TokenProofs, fast_verifier, verifier_key  # noqa: E402
from gateway.keys.state import KeyState  # noqa: E402
from gateway.store.key_cache import state_from_json, state_to_json  # noqa: E402

PREFIX = "kg_live_"
SECRET = b"bench-secret-" + b"x" * 40
ID_START = -key_format.BODY_LENGTH
ID_END = -key_format.BODY_LENGTH + key_format.ID_LENGTH


def sample_state(key_id: str, i: int) -> KeyState:
    """A typical key: an org slug, two scopes, no expiry, no rate limit."""
    return KeyState(
        id=key_id,
        org=f"org-{i % 500:04d}",
        prefix=PREFIX,
        env="live",
        scopes=("read", "write"),
        expires_at=None,
        revoked=False,
        version=1,
        rate_limit=None,
    )


def local_bytes(n: int, share_strings: bool, top: int) -> tuple[float, list[str]]:
    """Bytes per key of a LocalKeyCache holding n keys, and the top allocating lines."""
    keys = [key_format.generate_key(PREFIX) for _ in range(n)]
    texts = [state_to_json(sample_state(parts.key_id, i)) for i, (_, parts) in enumerate(keys)]
    vkey = verifier_key(SECRET)
    proofs = TokenProofs()
    interned: dict[object, object] = {}
    gc.collect()
    tracemalloc.start(1)
    base = tracemalloc.get_traced_memory()[0]
    cache = LocalKeyCache(ttl=600.0, max_entries=n)
    for (full, parts), text in zip(keys, texts, strict=True):
        key_id = full[ID_START:ID_END]  # as KeyLookup slices it
        verifier = fast_verifier(vkey, parts.key_id, parts.secret)
        state = state_from_json(text)
        assert state is not None
        if share_strings:
            state = KeyState(
                state.id,
                interned.setdefault(state.org, state.org),  # type: ignore[arg-type]
                interned.setdefault(state.prefix, state.prefix),  # type: ignore[arg-type]
                interned.setdefault(state.env, state.env),  # type: ignore[arg-type]
                interned.setdefault(state.scopes, state.scopes),  # type: ignore[arg-type]
                state.expires_at,
                state.revoked,
                state.version,
                state.rate_limit,
            )
        cache.put(key_id, state, verifier, ticket=cache.ticket())
        cache.put_proof(state.id, proofs.of(full))
        identity_headers(state)  # built by the key's first request, kept with its state
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - base
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__)]
    )
    tracemalloc.stop()
    assert len(cache) == n
    lines = []
    for stat in snapshot.statistics("lineno")[:top]:
        frame = stat.traceback[0]
        where = f"{Path(frame.filename).name}:{frame.lineno}"
        src = _source(frame.filename, frame.lineno)
        lines.append(f"{stat.size / n:7.1f} B/key  {where:<22} {src}")
    del cache
    return used / n, lines


def _source(filename: str, lineno: int) -> str:
    try:
        return Path(filename).read_text().splitlines()[lineno - 1].strip()[:70]
    except (OSError, IndexError):
        return ""


# ---------------------------------------------------------------------------- Redis


def pack(state: KeyState, fingerprint: str, verifier: bytes) -> bytes:
    """A compact candidate: fixed header, raw verifier, length-prefixed strings."""
    flags = (1 if state.revoked else 0) | (2 if state.expires_at is not None else 0)
    flags |= 4 if state.rate_limit is not None else 0
    limit = state.rate_limit
    head = struct.pack(
        "<IBdII",
        state.version,
        flags,
        state.expires_at or 0.0,
        limit.requests if limit else 0,
        limit.per if limit else 0,
    )
    parts = [state.org, state.prefix, state.env, " ".join(state.scopes), fingerprint]
    body = b"".join(bytes([len(p.encode())]) + p.encode() for p in parts)
    return head + verifier + body


async def redis_bytes(url: str, n: int) -> None:
    import redis.asyncio as aioredis

    from gateway.store.key_cache import RedisKeyCache

    client = aioredis.Redis.from_url(url)
    cache = RedisKeyCache(client, 600.0, SECRET)
    vkey = verifier_key(SECRET)
    ttl_ms = cache.ttl_ms
    fp = cache.verifier_field[2:]
    await client.flushdb()
    base = int((await client.info("memory"))["used_memory"])
    ids = []
    states = []
    verifiers = []
    for i in range(n):
        _, parts = key_format.generate_key(PREFIX)
        state = sample_state(parts.key_id, i)
        ids.append(parts.key_id)
        states.append(state)
        verifiers.append(fast_verifier(vkey, parts.key_id, parts.secret))
    sem = asyncio.Semaphore(64)

    async def put(state: KeyState, verifier: bytes) -> None:
        async with sem:
            await cache.put(state, verifier)

    await asyncio.gather(*(put(s, v) for s, v in zip(states, verifiers, strict=True)))
    await asyncio.sleep(1)  # client buffers of the concurrent writes released
    used = int((await client.info("memory"))["used_memory"]) - base
    one = await client.memory_usage("keygate:key:" + ids[0])
    enc = await client.object("encoding", "keygate:key:" + ids[0])
    fields = await client.hgetall("keygate:key:" + ids[0])
    payload = sum(len(k) + len(v) for k, v in fields.items())
    s_len = len(fields[b"s"])
    print(
        f"\nRedis, today's hash (RedisKeyCache.put with a verifier), {n:,} entries:\n"
        f"  MEMORY USAGE of one entry: {one} B (encoding {enc!r}; fields+values {payload} B, "
        f"of which the state JSON {s_len} B); used_memory growth {used / n:.0f} B/entry "
        f"({used * 100_000 / n / 2**20:.1f} MiB per 100,000 keys)"
    )
    results = {"hash (today)": (one, used / n)}
    candidates: dict[str, Callable[[KeyState, bytes], bytes]] = {
        "json-string": lambda s, v: (
            f"{s.version}|{fp}|".encode() + v + b"|" + state_to_json(s).encode()
        ),
        "packed": lambda s, v: pack(s, fp, v),
    }
    for name, encode in candidates.items():
        await client.flushdb()
        base = int((await client.info("memory"))["used_memory"])
        async with client.pipeline(transaction=False) as pipe:
            for s, v in zip(states, verifiers, strict=True):
                pipe.set("keygate:key:" + s.id, encode(s, v), px=ttl_ms)
            await pipe.execute()
        used = int((await client.info("memory"))["used_memory"]) - base
        one = await client.memory_usage("keygate:key:" + ids[0])
        value = await client.get("keygate:key:" + ids[0])
        enc = await client.object("encoding", "keygate:key:" + ids[0])
        results[name] = (one, used / n)
        print(
            f"  {name:<12} value {len(value or b'')} B: MEMORY USAGE {one} B "
            f"(encoding {enc!r}); used_memory growth {used / n:.0f} B/entry "
            f"({used * 100_000 / n / 2**20:.1f} MiB per 100,000 keys)"
        )
    # The same hash, had Redis kept it as a listpack: the state JSON is longer than
    # hash-max-listpack-value (64 by default), so Redis makes it a real hash table.
    await client.flushdb()
    version = (await client.info("server"))["redis_version"]
    # Redis < 7 names it hash-max-ziplist-value (the same setting).
    setting = (
        "hash-max-listpack-value" if int(version.split(".")[0]) >= 7 else ("hash-max-ziplist-value")
    )
    await client.config_set(setting, 256)
    base = int((await client.info("memory"))["used_memory"])
    await asyncio.gather(*(put(s, v) for s, v in zip(states, verifiers, strict=True)))
    await asyncio.sleep(1)
    used = int((await client.info("memory"))["used_memory"]) - base
    one = await client.memory_usage("keygate:key:" + ids[0])
    enc = await client.object("encoding", "keygate:key:" + ids[0])
    results["hash, listpack"] = (one, used / n)
    print(
        f"  hash with {setting} 256 (Redis {version}): MEMORY USAGE {one} B (encoding {enc!r}); "
        f"used_memory growth {used / n:.0f} B/entry"
    )
    await client.config_set(setting, 64)
    today = results["hash (today)"][1]
    for name, (_, per) in results.items():
        print(f"  {name:<14} {per:6.0f} B/entry  {per / today:5.2f}x today")
    await client.flushdb()
    await client.aclose()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--counts", default="10000,100000")
    p.add_argument("--redis-count", type=int, default=10000)
    p.add_argument("--max-entries", type=int, default=100_000, help="the default to size")
    p.add_argument("--top", type=int, default=8)
    args = p.parse_args()
    counts = [int(x) for x in args.counts.split(",") if x]
    per_key = {}
    print("In-process LocalKeyCache, filled as a lookup answered from Redis fills it:")
    for n in counts:
        for shared in (False, True):
            b, lines = local_bytes(n, shared, args.top)
            per_key[(n, shared)] = b
            label = "org/prefix/env/scopes shared" if shared else "as today"
            print(f"\n  N = {n:,} ({label}): {b:.0f} B per key ({b * n / 2**20:.1f} MiB)")
            if not shared:
                for line in lines:
                    print("    " + line)
    biggest = max(counts)
    b = per_key[(biggest, False)]
    print(
        f"\n{args.max_entries:,} keys (default max_entries) cost "
        f"{b * args.max_entries / 2**20:.0f} MiB per worker "
        f"({b:.0f} B/key measured at N = {biggest:,}); with shared strings "
        f"{per_key[(biggest, True)] * args.max_entries / 2**20:.0f} MiB"
    )
    from gateway.embedded import EmbeddedRedis

    tmp = Path(tempfile.mkdtemp(prefix="keygate-mem-"))
    rd = EmbeddedRedis(tmp / "redis")
    try:
        rd.start()
        asyncio.run(redis_bytes(rd.url, args.redis_count))
    finally:
        rd.destroy()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
