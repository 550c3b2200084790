"""One PostgreSQL `LISTEN` session: what key changes (`keygate_key_changes`,
gateway.store.key_notifications) and user-token revocations (`keygate_token_revocations`,
gateway.store.token_revocations) are both heard through.

The session is a dedicated connection, not one of the pool's: a pooled connection is
shared, and through PgBouncer in transaction mode LISTEN does not work at all (point
`database_url` at a session-mode endpoint or at PostgreSQL itself). Each listener names
itself (`application_name`) so that it shows in pg_stat_activity, one per gateway worker.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator

import asyncpg

from gateway.store.db import UNAVAILABLE, Database

# A connection that died without a FIN or RST (a partition, a frozen host) announces
# nothing: ping it when it has been quiet this long.
KEEPALIVE = 2.0
# Notifications taken from a burst before the event loop gets a turn for other work.
_BATCH = 64


async def notifications(
    db: Database, channel: str, *, application_name: str, keepalive: float = KEEPALIVE
) -> AsyncGenerator[str, None]:
    """ "" once listening on `channel` (every notification committed from then on will be
    heard), then each notification's payload as it arrives.

    Raises StoreUnavailable when the connection cannot be made or is lost; the caller
    reconnects and re-syncs what was missed meanwhile."""
    try:
        conn: asyncpg.Connection = await asyncpg.connect(
            db.url,
            timeout=db.timeout,
            command_timeout=db.timeout,
            statement_cache_size=0,
            server_settings={"application_name": application_name},
        )
    except (*UNAVAILABLE, ValueError) as exc:  # ValueError: a malformed DSN
        raise db.unavailable(exc) from None
    heard: asyncio.Queue[str | None] = asyncio.Queue()

    def on_notify(_conn: object, _pid: int, _channel: str, payload: object) -> None:
        heard.put_nowait(str(payload))

    def on_lost(_conn: object) -> None:
        heard.put_nowait(None)

    try:
        conn.add_termination_listener(on_lost)
        try:
            await conn.add_listener(channel, on_notify)
        except UNAVAILABLE as exc:
            raise db.unavailable(exc) from None
        yield ""
        taken = 0
        while True:
            if not heard.empty():
                # A burst (one statement changing thousands of keys): take what has
                # arrived without a timer task per message, letting requests run
                # between batches.
                payload = heard.get_nowait()
                taken += 1
                if taken % _BATCH == 0:
                    await asyncio.sleep(0)
                if payload is None:
                    raise db.unavailable(ConnectionError("the LISTEN connection was closed"))
                yield payload
                continue
            try:
                payload = await asyncio.wait_for(heard.get(), keepalive)
            except TimeoutError:
                try:
                    await conn.fetchval("SELECT 1", timeout=db.timeout)
                except UNAVAILABLE as exc:
                    raise db.unavailable(exc) from None
                continue
            if payload is None:
                raise db.unavailable(ConnectionError("the LISTEN connection was closed"))
            yield payload
    finally:
        with contextlib.suppress(*UNAVAILABLE):
            await asyncio.wait_for(conn.close(), db.timeout)
        if not conn.is_closed():
            conn.terminate()
