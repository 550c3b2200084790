"""Who is calling the admin API: the root token, or an API key acting inside its own org."""

from __future__ import annotations

import hmac
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from aiohttp import web

from gateway.admin.telemetry import ADMIN_KEY, PRINCIPAL
from gateway.auth.credentials import read_credential
from gateway.auth.errors import Refusal
from gateway.auth.key_lookup import KeyLookup
from gateway.config import KeysConfig
from gateway.keys.models import Actor
from gateway.observability.request_ids import valid_traceparent


class AdminUnauthorized(Refusal):
    status = 401
    code = "unauthorized"
    message = "Send the admin token or an API key with keys:read / keys:manage as a Bearer token."

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="keygate-admin"'}


@dataclass(frozen=True)
class AdminAuth:
    root_token: str | None
    allow_anonymous_root: bool  # loopback-only listeners with allow_unauthenticated_loopback
    resolver: KeyLookup
    keys: KeysConfig

    async def actor(self, request: web.Request, request_id: str) -> Actor:
        """The acting principal, with the request's context for the audit log."""
        root = Actor(
            principal="root",
            client_ip=request.remote,
            request_id=request_id,
            traceparent=valid_traceparent(request.headers.get("traceparent")),
        )
        try:
            presented = read_credential(request.headers)
        except Refusal:
            raise AdminUnauthorized() from None
        if presented is None:
            if self.allow_anonymous_root:
                request[PRINCIPAL] = root.principal
                return root
            raise AdminUnauthorized()
        if self.root_token and hmac.compare_digest(presented.encode(), self.root_token.encode()):
            request[PRINCIPAL] = root.principal
            return root
        try:
            state = await self.resolver.identify(presented, request.remote)
        except Refusal as refusal:
            if refusal.key is not None:  # a known key refused: the access log names it
                request[ADMIN_KEY] = refusal.key
            if refusal.status in (429, 503):
                # Throttled (someone guessed at this key's id) or stores unreachable: the
                # key may be right, so it must not look invalid (SPEC §3 steps 6 and 7).
                raise
            raise AdminUnauthorized() from None
        request[PRINCIPAL], request[ADMIN_KEY] = f"key:{state.display_prefix}", state
        # The key's own holdings travel with it: they are its ceiling (gateway/keys/ceiling.py).
        return replace(
            root,
            principal=f"key:{state.display_prefix}",  # SPEC §1: key:<display prefix>
            org=state.org,
            scopes=state.scopes,
            env=state.env,
            expires_at=(
                None if state.expires_at is None else datetime.fromtimestamp(state.expires_at, UTC)
            ),
            rate_limit=state.rate_limit,
        )
