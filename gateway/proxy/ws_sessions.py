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


@dataclass(frozen=True)
class _Session:
    need: RouteNeed
    # Resolved with the reason once the key no longer authorises the session. The relay
    # that owns the socket closes it (1008): it alone reads from the socket, so it can
    # wait for the client's close frame before the connection ends, as RFC 6455 §7.1.1
    # asks. A close from here, beside the relay's reader, would race its teardown.
    ended: asyncio.Future[str]


class WebSocketSessions:
    """The open client-side sockets of each key, for ending when the key no longer may."""

    def __init__(self) -> None:
        self._by_key: dict[str, dict[web.WebSocketResponse, _Session]] = {}

    def add(
        self, key_id: str, ws: web.WebSocketResponse, need: RouteNeed | None = None
    ) -> asyncio.Future[str]:
        """Register a session; without `need`, only revocation and expiry end it.

        Returns the future its owner awaits: resolved with the reason to close it (1008)."""
        ended: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._by_key.setdefault(key_id, {})[ws] = _Session(need or _NO_NEED, ended)
        return ended

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
        """End (1008) each session of `state`'s key that `state` no longer authorises;
        returns how many are ending (without waiting for their clients)."""
        sessions = list(self._by_key.get(state.id, {}).values())
        ending: list[tuple[_Session, str]] = []
        try:
            check_status(state, now)
        except Refusal as refusal:
            ending = [(session, refusal.message) for session in sessions]
        else:
            for session in sessions:
                need = session.need
                try:
                    authorise(
                        state, scopes=need.scopes, org_param=need.org_param, params=need.params
                    )
                except Refusal as refusal:
                    ending.append((session, refusal.message))
        for session, reason in ending:
            if not session.ended.done():
                session.ended.set_result(reason)
        return len(ending)

    def __len__(self) -> int:
        return sum(len(s) for s in self._by_key.values())
