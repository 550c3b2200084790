"""The open WebSocket sessions of each key, with what their route requires.

A session was authorised once, at its upgrade; when its key changes (revoked, expired, or
a scope or org the route needs is gone) it must end with 1008 (policy violation). So each
session is registered with its route's requirement, and `enforce` re-authorises every
session of a key against the key's new state.

When the worker stops, `going_away` ends every session (public routes' too) with 1001
(RFC 6455 §7.4.1, "going away"): left open, a session would hold the worker for the whole
`server.drain_timeout` and then be cut without a close frame (1006), which clients treat
as a failure rather than as a cue to reconnect elsewhere.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from aiohttp import web

from gateway.auth.authenticate import authorise, check_status
from gateway.auth.errors import Refusal
from gateway.auth.token_claims import UserIdentity
from gateway.keys.state import KeyState

POLICY_VIOLATION = 1008
GOING_AWAY = 1001
SHUTTING_DOWN = "the gateway is shutting down"


@dataclass(frozen=True)
class Ending:
    """Why a session must end: the close code and reason its relay sends."""

    code: int
    reason: str


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
    # Resolved once the session must end (its key no longer authorises it: 1008; the
    # worker stops: 1001). The relay that owns the socket closes it: it alone reads from
    # the socket, so it can wait for the client's close frame before the connection
    # ends, as RFC 6455 §7.1.1 asks. A close from here, beside the relay's reader, would
    # race its teardown.
    ended: asyncio.Future[Ending]


class WebSocketSessions:
    """The open client-side sockets of each key, for ending when the key no longer may."""

    def __init__(self) -> None:
        # Sessions of public routes (no key) under None: only `going_away` ends them.
        self._by_key: dict[str | None, dict[web.WebSocketResponse, _Session]] = {}
        # Sessions opened with a user token (SPEC §11), with its identity: ended when the
        # token expires or its subject's tokens are revoked (gateway.auth.user_tokens).
        self._users: dict[web.WebSocketResponse, tuple[UserIdentity, _Session]] = {}
        self._gone = False

    def add(
        self,
        key_id: str | None,
        ws: web.WebSocketResponse,
        need: RouteNeed | None = None,
        user: UserIdentity | None = None,
    ) -> asyncio.Future[Ending]:
        """Register a session (a key's, a user token's: `user`, or a public route's);
        without `need`, only revocation and expiry end it.

        Returns the future its owner awaits: resolved with how to close it. A session
        opened once the worker is going away is told so at once."""
        ended: asyncio.Future[Ending] = asyncio.get_running_loop().create_future()
        if self._gone:
            ended.set_result(Ending(GOING_AWAY, SHUTTING_DOWN))
        session = _Session(need or _NO_NEED, ended)
        if user is not None:
            self._users[ws] = (user, session)
        else:
            self._by_key.setdefault(key_id, {})[ws] = session
        return ended

    def end_users(self, why: Callable[[UserIdentity], str | None]) -> int:
        """End (1008) each user-token session for which `why` gives a reason; returns
        how many are ending."""
        ending = 0
        for identity, session in list(self._users.values()):
            if session.ended.done():
                continue
            reason = why(identity)
            if reason is not None:
                session.ended.set_result(Ending(POLICY_VIOLATION, reason))
                ending += 1
        return ending

    def going_away(self) -> int:
        """The worker stops: end every session, now and opened from now on, with 1001;
        returns how many were open."""
        self._gone = True
        sessions = [s for by_ws in self._by_key.values() for s in by_ws.values()]
        sessions += [session for _, session in self._users.values()]
        for session in sessions:
            if not session.ended.done():
                session.ended.set_result(Ending(GOING_AWAY, SHUTTING_DOWN))
        return len(sessions)

    def remove(self, key_id: str | None, ws: web.WebSocketResponse) -> None:
        if self._users.pop(ws, None) is not None:
            return
        sockets = self._by_key.get(key_id)
        if sockets is not None:
            sockets.pop(ws, None)
            if not sockets:
                del self._by_key[key_id]

    def keys(self) -> list[str]:
        return [key_id for key_id in self._by_key if key_id is not None]

    def __contains__(self, key_id: object) -> bool:
        return key_id in self._by_key

    async def enforce(self, state: KeyState, now: float) -> int:
        """End (1008) each session of `state`'s key that `state` no longer authorises;
        returns how many are ending (without waiting for their clients)."""
        sessions = list(self._by_key.get(state.id, {}).values())
        ending: list[tuple[_Session, str]] = []  # (session, refusal message)
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
                session.ended.set_result(Ending(POLICY_VIOLATION, reason))
        return len(ending)

    def __len__(self) -> int:
        return sum(len(s) for s in self._by_key.values()) + len(self._users)
