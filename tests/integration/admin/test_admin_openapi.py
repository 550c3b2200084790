"""The OpenAPI 3.1 document: valid, complete (every route of api.py), and true of the live API.

schemathesis generates requests for every operation from the served document and sends
them to the running gateway with the root token; each response must be documented (status,
content type, body schema) and none may be a 5xx. Half the cases use a real org and key, so
the success paths are exercised too, not only 404s.
"""

from __future__ import annotations

import asyncio
import json
import re
import urllib.request
from collections.abc import Iterator
from typing import Any, cast

import aiohttp
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openapi_spec_validator import validate
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from gateway.admin.api import PREFIX, admin_api
from gateway.admin.openapi import openapi_document
from gateway.admin.principals import AdminAuth
from gateway.keys.service import KeyService
from tests.support.admin_client import AdminClient
from tests.support.credentials import ISSUED, ROOT_TOKEN
from tests.support.gateway_process import GatewayProcess

MAX_EXAMPLES = 25
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    response_schema_conformance,
    content_type_conformance,
]
OPERATIONS = sorted(
    (op["operationId"], method.upper(), path)
    for path, item in openapi_document()["paths"].items()
    for method, op in item.items()
    if method != "parameters"
)


def served_document(gateway: GatewayProcess) -> dict[str, Any]:
    url = gateway.admin_url + PREFIX + "/openapi.json"
    with urllib.request.urlopen(url, timeout=5) as reply:
        assert reply.status == 200
        assert reply.headers["Content-Type"].startswith("application/json")
        document: dict[str, Any] = json.load(reply)
    return document


def test_served_document_is_valid_openapi_3_1(gateway: GatewayProcess) -> None:
    document = served_document(gateway)
    assert document == openapi_document()
    assert document["openapi"].startswith("3.1")
    validate(document)  # raises OpenAPIValidationError with the path of the problem


def _canonical(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "{}", path)


def test_every_route_of_the_admin_app_is_documented() -> None:
    """A new handler in api.py without its OpenAPI entry fails here."""
    app = admin_api(cast(KeyService, None), cast(AdminAuth, None))  # only the router is read
    routed = {
        (route.method, _canonical(route.resource.canonical))
        for route in app.router.routes()
        if route.resource is not None and route.method != "HEAD"
    }
    documented = {(method, _canonical(path)) for _, method, path in OPERATIONS}
    assert routed == documented, {
        "undocumented routes": sorted(routed - documented),
        "documented but not routed": sorted(documented - routed),
    }
    ids = [op_id for op_id, _, _ in OPERATIONS]
    assert len(ids) == len(set(ids)), "operationIds must be unique"


@pytest.fixture(scope="module")
def schema() -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_dict(openapi_document())


@pytest.fixture
def real_ids(admin_gateway: GatewayProcess) -> dict[str, str]:
    """A fresh org and key for the generated requests of one operation to act on."""

    async def make() -> dict[str, str]:
        async with aiohttp.ClientSession() as http:
            root = AdminClient(http, admin_gateway.admin_url, ROOT_TOKEN)
            org = await root.create_org("schemathesis")
            key = await root.create_key(org, ["read", "write"], name="fuzzed")
            # A real member, so the member operations reach their 2xx answers too.
            email = f"m-{key['key']['id'].lower()}@example.com"
            (
                await root.call("POST", f"/orgs/{org}/members", {"email": email, "role": "member"})
            ).ok(201)
            return {"org": org, "key_id": key["key"]["id"], "email": email}

    return asyncio.run(make())


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as s:
        yield s


@pytest.mark.parametrize(
    ("operation_id", "method", "path"), OPERATIONS, ids=[op[0] for op in OPERATIONS]
)
def test_live_api_conforms_to_its_document(
    schema: schemathesis.BaseSchema,
    gateway: GatewayProcess,
    real_ids: dict[str, str],
    session: requests.Session,
    operation_id: str,
    method: str,
    path: str,
) -> None:
    operation = schema[path][method.lower()]
    params = {
        name: real_ids[name] for name in ("org", "key_id", "email") if "{" + name + "}" in path
    }
    strategies = [
        operation.as_strategy(generation_mode=mode, path_parameters=fixed)
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)
        for fixed in ([{}, params] if params else [{}])
    ]
    base_url = gateway.admin_url + PREFIX
    statuses: list[int] = []

    @given(case=st.one_of(strategies))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: schemathesis.Case[Any]) -> None:
        response = case.call_and_validate(
            base_url=base_url,
            session=session,
            checks=CHECKS,
            headers={"Authorization": f"Bearer {ROOT_TOKEN}"},
        )
        statuses.append(response.status_code)
        if response.status_code == 201 and "secret" in response.text:
            ISSUED.append(response.json()["secret"])

    run()
    assert statuses, "no request was sent"
    assert all(status < 500 for status in statuses)
    assert any(200 <= status < 300 for status in statuses), (
        f"{operation_id}: no generated request succeeded: {sorted(set(statuses))}"
    )
