"""SPEC §12: the check APIs decide exactly as the proxy does. One table of requests, each
asked through the proxy listener and through every check API (Envoy HTTP and gRPC, nginx,
forward auth); status, error code and identity must agree everywhere."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from tests.integration.check.askers import APIS, Answer, Asker
from tests.support.keys import KeyMaker, MadeKey, unknown_key


@dataclass
class Keys:
    reader: MadeKey
    writer: MadeKey
    revoked: MadeKey
    expired: MadeKey
    test_env: MadeKey


@dataclass(frozen=True)
class Case:
    name: str
    method: str
    target: str
    credential: Callable[[Keys], dict[str, str]]
    status: int
    code: str | None


def bearer(pick: Callable[[Keys], MadeKey]) -> Callable[[Keys], dict[str, str]]:
    return lambda k: pick(k).auth


READER = bearer(lambda k: k.reader)
WRITER = bearer(lambda k: k.writer)


def nothing(_: Keys) -> dict[str, str]:
    return {}


CASES = [
    Case("public route, no key", "GET", "/public/status?x=1", nothing, 200, None),
    Case("no route", "GET", "/nowhere", nothing, 404, "no_route"),
    Case("route, wrong method", "DELETE", "/api/read/x", READER, 404, "no_route"),
    Case("case-sensitive segments", "GET", "/API/read/1", nothing, 404, "no_route"),
    Case("encoded slash", "GET", "/api/read/a%2Fb", READER, 400, "invalid_path"),
    Case(
        "climbs above root",
        "GET",
        "/../api/read/x",
        READER,
        400,
        "invalid_path",
    ),
    Case("backslash", "GET", "/api/read/a\\b", READER, 400, "invalid_path"),
    Case(
        "dot segments normalised, then matched",
        "GET",
        "/api/write/../read/%78",
        READER,
        200,
        None,
    ),
    Case(
        "dot segments normalised into a route the method lacks",
        "GET",
        "/api/read/../write/x",
        WRITER,
        404,
        "no_route",
    ),
    Case("missing key", "GET", "/api/read/x", nothing, 401, "missing_api_key"),
    Case(
        "malformed key",
        "GET",
        "/api/read/x",
        lambda k: {"X-API-Key": "kg_live_nonsense"},
        401,
        "invalid_api_key",
    ),
    Case(
        "unknown key id",
        "GET",
        "/api/read/x",
        lambda k: {"Authorization": f"Bearer {unknown_key()}"},
        401,
        "invalid_api_key",
    ),
    Case("revoked key", "GET", "/api/read/x", bearer(lambda k: k.revoked), 401, "revoked_api_key"),
    Case("expired key", "GET", "/api/read/x", bearer(lambda k: k.expired), 401, "expired_api_key"),
    Case(
        "X-API-Key header",
        "GET",
        "/api/read/x?q=1",
        lambda k: {"X-API-Key": k.reader.secret},
        200,
        None,
    ),
    Case(
        "two different keys",
        "GET",
        "/api/read/x",
        lambda k: {**k.reader.auth, "X-API-Key": k.writer.secret},
        400,
        "invalid_request",
    ),
    Case(
        "lacks the route's scope",
        "POST",
        "/api/write/x",
        READER,
        403,
        "insufficient_scope",
    ),
    Case("has the scope", "PUT", "/api/write/x", WRITER, 200, None),
    Case(
        "all scopes required",
        "GET",
        "/api/multi",
        READER,
        403,
        "insufficient_scope",
    ),
    Case(
        "org in path, key's own",
        "GET",
        "/api/orgs/{org}/x",
        READER,
        200,
        None,
    ),
    Case(
        "org in path, another org",
        "GET",
        "/api/orgs/someone-else/x",
        READER,
        403,
        "wrong_org",
    ),
    Case("HEAD on a GET route", "HEAD", "/api/read/x", READER, 200, None),
]


@pytest.fixture
async def made(keys: KeyMaker) -> Keys:
    org = await keys.org("check")
    reader = await keys.key(["read"], org=org)
    writer = await keys.key(["read", "write"], org=org)
    revoked = await keys.key(["read"], org=org)
    await keys.revoke(revoked.id)
    expired = await keys.key(["read"], org=org, expires_in=0.5)
    test_env = await keys.key(["read"], org=org, env="test")
    await asyncio.sleep(0.6)  # the expired key's time has passed
    return Keys(reader, writer, revoked, expired, test_env)


def _target(case: Case, k: Keys) -> str:
    return case.target.replace("{org}", k.reader.org)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_every_api_decides_as_the_proxy(case: Case, made: Keys, asker: Asker) -> None:
    target = _target(case, made)
    credential = case.credential(made)
    answers: dict[str, Answer] = {}
    for api in APIS:
        answers[api] = await asker.ask(api, case.method, target, credential)
    summary = {api: (a.status, a.code) for api, a in answers.items()}
    assert all(v == (case.status, case.code) for v in summary.values()), summary
    proxy = answers["proxy"]
    for api, answer in answers.items():
        if case.status == 200 and case.method != "HEAD":
            assert answer.identity == proxy.identity, (api, answer.identity, proxy.identity)
        if case.status != 200:
            # The same refusal: the same headers a client acts on, the same message.
            for name in ("www-authenticate", "retry-after", "cache-control"):
                assert answer.headers.get(name) == proxy.headers.get(name), (api, name)
            assert answer.body is not None and proxy.body is not None
            assert answer.body["error"]["message"] == proxy.body["error"]["message"]
