"""What every edge-proxy test asserts alike: the forged identity a client sends, what the
recording upstream saw, and a refusal as Keygate writes it."""

from __future__ import annotations

import time
from typing import Any

import aiohttp

from tests.support.recording_upstream import SEEN_HEADER, Recorded, RecordingUpstream

# A client's own identity, in the spellings an upstream stack may read as X-Keygate-*.
FORGED = {
    "X-Keygate-Org": "evil-org",
    "X-Keygate-Scopes": "admin",
    "X-Keygate-Subject": "forged-user",
    "X-Keygate-Credential": "user",
    "X_Keygate_Org": "evil-org",
    "X.Keygate.Scopes": "admin",
}


def seen(upstream: RecordingUpstream, request_id: str) -> Recorded:
    """The one request the upstream recorded with this X-Request-Id."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        found = [r for r in upstream.requests() if r.request_id == request_id]
        if found:
            assert len(found) == 1, found
            return found[0]
        time.sleep(0.02)
    raise AssertionError(f"the upstream never saw request {request_id}")


def never_seen(upstream: RecordingUpstream, marker: str) -> None:
    """No request whose target holds `marker` reached the upstream."""
    time.sleep(0.2)
    assert not [r for r in upstream.requests() if marker in r.head.target], marker


def keygate_fields(record: Recorded) -> dict[str, list[str]]:
    """Every field the upstream got that any stack could read as X-Keygate-*."""
    out: dict[str, list[str]] = {}
    for name, value in record.head.fields:
        canonical = name.lower().replace("_", "-").replace(".", "-")
        if canonical.startswith("x-keygate-"):
            out.setdefault(name, []).append(value)
    return out


async def refusal(reply: aiohttp.ClientResponse, status: int, code: str) -> dict[str, Any]:
    """The refusal's JSON body, once its status, code and headers are Keygate's."""
    body: dict[str, Any] = await reply.json(content_type=None)
    assert reply.status == status, (reply.status, body)
    assert reply.headers["Content-Type"].startswith("application/json")
    assert body["error"]["code"] == code, body
    assert reply.headers.get("Cache-Control") == "no-store"
    assert reply.headers["X-Request-Id"] == body["error"]["request_id"]
    assert SEEN_HEADER not in reply.headers  # the edge proxy answered; the API never did
    return body
