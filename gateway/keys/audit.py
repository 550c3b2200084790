"""One audit entry for an admin action: who (the Actor and its request context), what and
where. Every service (keys, people, user tokens) writes its entries through this."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from gateway.keys.models import Actor
from gateway.store import queries
from gateway.store.db import Connection


async def record(
    conn: Connection,
    actor: Actor,
    now: datetime,
    action: str,
    org: str,
    *,
    key_id: str | None = None,
    old_scopes: Sequence[str] | None = None,
    new_scopes: Sequence[str] | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """Append the entry inside the caller's transaction (it commits with the action)."""
    await queries.insert_audit(
        conn,
        at=now,
        org=org,
        key_id=key_id,
        action=action,
        principal=actor.principal,
        old_scopes=old_scopes,
        new_scopes=new_scopes,
        client_ip=actor.client_ip,
        request_id=actor.request_id,
        traceparent=actor.traceparent,
        details=details or {},
        user_agent=actor.user_agent,
    )
