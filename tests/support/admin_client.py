"""A client for one gateway's admin listener: real HTTP, one bearer credential."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import aiohttp

from tests.support.credentials import issued
from tests.support.errors import Reply

ADMIN = "/admin/v1"


def unique_slug(label: str = "t") -> str:
    return f"{label[:40]}-{uuid.uuid4().hex[:10]}"


class AdminClient:
    """Real HTTP calls to one gateway's admin listener, with one bearer credential."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, token: str | None) -> None:
        self.session = session
        self.base_url = base_url
        self.token = token

    def as_(self, token: str | None) -> AdminClient:
        return AdminClient(self.session, self.base_url, token)

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> Reply:
        sent: dict[str, str] = {}
        if self.token is not None:
            sent["Authorization"] = f"Bearer {self.token}"
        data: bytes | str | None = raw
        if body is not None:
            data = json.dumps(body)
        if data is not None:
            sent["Content-Type"] = "application/json"
        sent.update(headers or {})
        own = path.startswith(("/admin/", "/healthz", "/readyz", "/metrics"))
        url = self.base_url + (path if own else ADMIN + path)
        async with self.session.request(
            method, url, data=data, headers=sent, params=params
        ) as response:
            return Reply(response.status, response.headers, await response.text())

    async def create_org(self, label: str = "t") -> str:
        slug = unique_slug(label)
        (await self.call("POST", "/orgs", {"slug": slug})).ok(201)
        return slug

    async def create_key(self, org: str, scopes: Iterable[str], **fields: Any) -> dict[str, Any]:
        """`{"key": key, "secret": full key}`; the full key is remembered in ISSUED."""
        body = {"name": fields.pop("name", "test key"), "scopes": list(scopes), **fields}
        created: dict[str, Any] = (await self.call("POST", f"/orgs/{org}/keys", body)).ok(201)
        issued(created["secret"])
        return created

    async def audit(self, org: str, **params: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = (
            await self.call("GET", f"/orgs/{org}/audit", params=params)
        ).ok()["items"]
        return items
