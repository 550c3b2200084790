"""Every admin route is counted under its own OpenAPI operation id, never as "none"."""

from __future__ import annotations

from typing import cast

from gateway.admin.api import PREFIX, admin_api
from gateway.admin.openapi import openapi_document
from gateway.admin.principals import AdminAuth
from gateway.admin.telemetry import _template, operation_ids
from gateway.keys.service import KeyService


def test_every_admin_route_has_its_operation_id() -> None:
    app = admin_api(cast(KeyService, None), cast(AdminAuth, None))  # only the router is read
    operations = operation_ids(PREFIX)
    routed = {
        (route.method, _template(PREFIX + route.resource.canonical))
        for route in app.router.routes()
        if route.resource is not None and route.method != "HEAD"
    }
    assert routed and routed <= set(operations), sorted(routed - set(operations))
    documented = {
        op["operationId"]
        for item in openapi_document()["paths"].values()
        for op in item.values()
        if isinstance(op, dict) and "operationId" in op
    }
    assert {operations[r] for r in routed} == documented
