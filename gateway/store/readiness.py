"""Do the stores answer, and is the schema current? For `keygate check-config --connect`.

Read-only: nothing is created or migrated here. Each check says what failed in words an
operator can act on, and never prints a password from a URL.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import asyncpg
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gateway.keys.errors import StoreUnavailable
from gateway.store.db import Database, invalid_url, redact_url
from gateway.store.migrate import bundled_migrations, pending_migrations


@dataclass(frozen=True)
class Check:
    name: str  # postgres, redis, migrations
    ok: bool
    detail: str  # "ok", or what is wrong and what to do

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


async def check_stores(database_url: str, redis_url: str, wait: float) -> list[Check]:
    """Postgres, Redis and the migrations, checked at once, each within `wait` seconds."""
    (postgres, migrations), redis = await asyncio.gather(
        _check_postgres(database_url, wait), _check_redis(redis_url, wait)
    )
    return [postgres, redis, migrations]


async def _check_postgres(url: str, wait: float) -> tuple[Check, Check]:
    db = Database(url, timeout=wait, max_size=1)
    try:
        pending = await asyncio.wait_for(pending_migrations(db), wait * 2)
    except (StoreUnavailable, TimeoutError) as exc:
        reason = str(exc) or f"no answer within {wait:g}s from {redact_url(url)}"
        return (
            Check("postgres", False, f"unreachable ({reason})"),
            Check("migrations", False, "not checked: postgres is unreachable"),
        )
    except asyncpg.PostgresError as exc:  # reachable, but refused the read (permissions)
        return (
            Check("postgres", False, f"error ({type(exc).__name__}: {exc})"),
            Check("migrations", False, "not checked: postgres refused the query"),
        )
    finally:
        await db.close()
    postgres = Check("postgres", True, "ok")
    if pending:
        names = ", ".join(f"{m.version:04d}_{m.name}" for m in pending)
        return postgres, Check("migrations", False, f"not applied: {names}; run `keygate migrate`")
    return postgres, Check("migrations", True, f"ok ({len(bundled_migrations())} applied)")


async def _check_redis(url: str, wait: float) -> Check:
    try:
        client = aioredis.Redis.from_url(url, socket_timeout=wait, socket_connect_timeout=wait)
    except ValueError as exc:
        return Check("redis", False, invalid_url("Redis", url, exc))
    try:
        await asyncio.wait_for(client.ping(), wait * 2)
    except (RedisError, OSError, TimeoutError) as exc:
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return Check("redis", False, f"unreachable ({reason})")
    finally:
        await client.aclose()
    return Check("redis", True, "ok")
