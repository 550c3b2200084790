"""The open WebSocket sessions of each key, with what their route requires.

A session was authorised once, at its upgrade; when its key changes (revoked, expired, or
a scope or org the route needs is gone) it must end with 1008 (policy violation). So each
session is registered with its route's requirement, and `enforce` re-authorises every
session of a key against the key's new state.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field

from aiohttp import web

from gateway.auth.authenticate import authorise, check_status
from gateway.auth.errors import Refusal
from gateway.keys.state import KeyState

POLICY_VIOLATION = 1008


@dataclass(frozen=True)
class RouteNeed:
    """What the session's route requires of its key (as `authorise` takes it)."""

    scopes: tuple[str, ...] = ()
    org_param: str | None = None
    params: Mapping[str, str] = field(default_factory=dict)


_NO_NEED = RouteNeed()


class WebSocketSessions:
    """The open client-side sockets of each key, for closing when the key no longer may."""

    def __init__(self) -> None:
        self._by_key: dict[str, dict[web.WebSocketResponse, RouteNeed]] = {}
        # Closing waits for the client's close frame (up to aiohttp's timeout): in tasks
        # of their own, so that one slow client never holds up the caller (the listener).
        self._closing: set[asyncio.Task[bool]] = set()

    def add(
        self, key_id: str, ws: web.WebSocketResponse, need: RouteNeed | None = None
    ) -> None:
        """Register a session; without `need`, only revocation and expiry close it."""
        self._by_key.setdefault(key_id, {})[ws] = need or _NO_NEED

    def remove(self, key_id: str, ws: web.WebSocketResponse) -> None:
        sockets = self._by_key.get(key_id)
        if sockets is not None:
            sockets.pop(ws, None)
            if not sockets:
                del self._by_key[key_id]

    def keys(self) -> list[str]:
        return list(self._by_key)

    def __contains__(self, key_id: object) -> bool:
        return key_id in self._by_key

    async def enforce(self, state: KeyState, now: float) -> int:
        """Close (1008) each session of `state`'s key that `state` no longer authorises;
        returns how many are closing (without waiting for their clients)."""
        sessions = list(self._by_key.get(state.id, {}).items())
        closing: list[tuple[web.WebSocketResponse, str]] = []
        try:
            check_status(state, now)
        except Refusal as refusal:
            closing = [(ws, refusal.message) for ws, _ in sessions]
        else:
            for ws, need in sessions:
                try:
                    authorise(state, scopes=need.scopes, org_param=need.org_param,
                              params=need.params)
                except Refusal as refusal:
                    closing.append((ws, refusal.message))
        for ws, reason in closing:
            self._close(ws, reason)
        return len(closing)

    def _close(self, ws: web.WebSocketResponse, reason: str) -> None:
        # A close reason must fit a control frame (125 bytes, 2 of them for the code).
        task = asyncio.create_task(ws.close(code=POLICY_VIOLATION, message=reason.encode()[:123]))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def __len__(self) -> int:
        return sum(len(s) for s in self._by_key.values())
