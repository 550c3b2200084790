"""The JSON error shape of SPEC §3, checked the same way for the proxy and the admin API."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

REALM = 'Bearer realm="keygate"'


@dataclass
class Reply:
    """One response as read: status, headers and the body text."""

    status: int
    headers: Mapping[str, str]
    text: str

    @property
    def body(self) -> Any:
        return json.loads(self.text)

    def ok(self, status: int = 200) -> Any:
        assert self.status == status, f"expected {status}, got {self.status}: {self.text}"
        return self.body


def assert_error(reply: Reply, status: int, code: str, field: str | None = None) -> dict[str, Any]:
    """`reply` is the refusal SPEC §3 describes, with `status` and `code` (and, for the
    admin API's invalid input, `field`); returns the `error` object."""
    assert reply.status == status, f"expected {status} {code}, got {reply.status}: {reply.text}"
    headers = reply.headers
    assert headers.get("Content-Type", "").split(";")[0] == "application/json", headers
    assert headers.get("Cache-Control") == "no-store", headers
    server = headers.get("Server", "").lower()
    assert "aiohttp" not in server and "python" not in server, server
    body = reply.body
    assert set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error, dict)
    assert set(error) - {"field"} == {"code", "message", "request_id"}, error
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"], error
    assert error["request_id"] == headers.get("X-Request-Id"), (error, headers)
    if field is not None:
        assert error.get("field") == field, error
    return dict(error)


async def get_error(
    http: aiohttp.ClientSession, url: str, status: int, code: str, **kwargs: Any
) -> tuple[dict[str, Any], aiohttp.ClientResponse]:
    """Make a request with aiohttp and check it was refused with `status` and `code`."""
    method = kwargs.pop("method", "GET")
    async with http.request(method, url, **kwargs) as reply:
        text = await reply.text()
        error = assert_error(Reply(reply.status, reply.headers, text), status, code)
        return error, reply


def invalid_token_header(reply_headers: Any) -> str:
    """The WWW-Authenticate of a refused credential (RFC 6750 `invalid_token`)."""
    value: str = reply_headers["WWW-Authenticate"]
    assert value.startswith(f'{REALM}, error="invalid_token", error_description="'), value
    assert value.endswith('"')
    return value
