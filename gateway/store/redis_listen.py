"""Messages of one Redis pub/sub channel on a link of its own, for the invalidation
channels (key changes, user-token revocations)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError


async def messages(client: aioredis.Redis, channel: str) -> AsyncGenerator[str, None]:
    """ "" once subscribed (the caller may trust its caches from then on), then each
    message; raises RedisError when the link drops.

    Its own connection, never retried: a link that reconnected by itself would hide the
    messages published while it was down."""
    pool = client.connection_pool
    link = aioredis.Redis(
        connection_pool=pool.__class__(
            connection_class=pool.connection_class,
            **{**pool.connection_kwargs, "retry": Retry(NoBackoff(), 0)},
        )
    )
    pubsub = link.pubsub(ignore_subscribe_messages=True)
    try:
        await pubsub.subscribe(channel)
        yield ""
        while True:
            message = await pubsub.get_message(timeout=1.0)
            if message is not None and message.get("type") == "message":
                data = message["data"]
                yield data.decode() if isinstance(data, bytes) else str(data)
    finally:
        with contextlib.suppress(RedisError, OSError):
            await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]  # untyped before redis 5.3
        with contextlib.suppress(RedisError, OSError):
            await link.connection_pool.disconnect()
