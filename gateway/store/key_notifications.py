"""Key changes as PostgreSQL announces them: `LISTEN keygate_key_changes`.

Migration 0004 makes PostgreSQL itself `NOTIFY` every committed key change as
`<id>:<version>` (the same message as the Redis channel, `key_cache.invalidation`), so a
gateway hears a change whoever made it and whatever that writer's view of Redis. Since
migration 0007 a statement that changed several keys announces them together,
space-separated (`key_cache.parse_invalidations`). The
listening session itself is gateway.store.pg_listen's (shared with user-token revocations).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

from gateway.store.db import Database
from gateway.store.pg_listen import KEEPALIVE, notifications

CHANNEL = "keygate_key_changes"
# How the listening sessions show in pg_stat_activity (one per gateway worker).
APPLICATION_NAME = "keygate-invalidations"


def key_notifications(db: Database, keepalive: float = KEEPALIVE) -> AsyncGenerator[str, None]:
    """ "" once listening (every change committed from then on will be heard), then each
    notification's payload as it arrives; raises StoreUnavailable when the connection
    cannot be made or is lost (the caller reconnects and re-syncs)."""
    return notifications(db, CHANNEL, application_name=APPLICATION_NAME, keepalive=keepalive)
