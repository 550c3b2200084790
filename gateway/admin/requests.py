"""Reading admin API input: JSON bodies and query strings, strictly, with the field named."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from aiohttp import web

from gateway.keys.errors import InvalidInput
from gateway.units import parse_duration

MAX_BODY = 64 * 1024
MAX_DURATION = 100 * 365 * 86400.0
NULL = type(None)  # in `allowed`: the field may be JSON null


async def json_body(
    request: web.Request, allowed: dict[str, type | tuple[type, ...]]
) -> dict[str, Any]:
    """The request's JSON object; unknown fields and wrong types are 400 naming the field.

    An empty body counts as `{}` so that bodiless POSTs (revoke, roll) work.
    """
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise InvalidInput(f"the JSON body is larger than {MAX_BODY} bytes")
    raw = await request.content.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        raise InvalidInput(f"the JSON body is larger than {MAX_BODY} bytes")
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidInput("the body must be a JSON object")
    for name, value in body.items():
        if not _text_only(name) or not _text_only(value):
            # JSON's \ud800 escapes make strings no UTF-8 can hold: nothing downstream
            # (PostgreSQL, the logs) could store or print them.
            field = name if _text_only(name) else None
            raise InvalidInput("the body holds a lone UTF-16 surrogate (\\ud800-\\udfff)", field)
        if name not in allowed:
            known = ", ".join(sorted(allowed))
            raise InvalidInput(f"unknown field {name!r} (known fields: {known})", name)
        expected = allowed[name]
        if value is None and NULL in _tuple(expected):
            continue
        if value is None or (isinstance(value, bool) and bool not in _tuple(expected)):
            raise InvalidInput(f"{name} must be {_type_name(expected)}", name)
        if not isinstance(value, expected):
            raise InvalidInput(f"{name} must be {_type_name(expected)}", name)
    return body


def _text_only(value: Any) -> bool:
    """Every string in `value` (keys and items too) can be encoded as UTF-8."""
    if isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError:
            return False
        return True
    if isinstance(value, dict):
        return all(_text_only(k) and _text_only(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_text_only(v) for v in value)
    return True


def _tuple(t: type | tuple[type, ...]) -> tuple[type, ...]:
    return t if isinstance(t, tuple) else (t,)


def _type_name(t: type | tuple[type, ...]) -> str:
    names = {
        str: "a string",
        list: "an array",
        dict: "an object",
        int: "an integer",
        bool: "a boolean",
        NULL: "null",
    }
    return " or ".join(names.get(x, x.__name__) for x in _tuple(t))


def string_list(body: dict[str, Any], name: str) -> list[str] | None:
    value = body.get(name)
    if value is None:
        return None
    if not all(isinstance(item, str) for item in value):
        raise InvalidInput(f"{name} must be an array of strings", name)
    return list(value)


def duration(body: dict[str, Any], name: str) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise InvalidInput(f"{name}: {exc}", name) from None
    if seconds > MAX_DURATION:  # beyond datetime's range: would overflow, not be 400
        raise InvalidInput(f"{name} is longer than 100 years", name)
    return seconds


def timestamp(body: dict[str, Any], name: str) -> datetime | None:
    value = body.get(name)
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(
            f"{name} must be an RFC 3339 time such as 2030-01-31T00:00:00Z", name
        ) from None
    if parsed.tzinfo is None:
        raise InvalidInput(f"{name} needs a time zone, e.g. a trailing Z for UTC", name)
    return parsed


def query_limit(request: web.Request, default: int = 50) -> int:
    raw = request.query.get("limit")
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise InvalidInput("limit must be a whole number from 1 to 1000", "limit") from None


def query_text(request: web.Request, name: str) -> str | None:
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise InvalidInput(f"give {name} once", name)
    return values[0] if values and values[0] != "" else None
