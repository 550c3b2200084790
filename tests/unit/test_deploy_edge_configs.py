"""The Traefik and Envoy configs under deploy/ (SPEC §12), which no binary here can load:
parsed, and checked for what makes them safe — the check address, that every identity
header Keygate sends reaches the API and no client-sent one does, that a refusal reaches
the client, and that Keygate down is never a pass. The Envoy filters are also read into
Envoy's own messages (xds-protos), which refuses any misspelt field.

nginx and Caddy run for real: tests/integration/edge/.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.core.v3 import config_source_pb2
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401  (an Any type)
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2,  # noqa: F401  (an Any type)
)
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2  # noqa: F401
from envoy.type.matcher.v3 import string_pb2
from google.protobuf import json_format

from gateway.auth.authenticate import SUBJECT, identity_headers
from gateway.keys.state import KeyState
from gateway.proxy.headers import X_REQUEST_ID
from tests.support.deploy import DEPLOY

TRAEFIK = DEPLOY / "traefik"
ENVOY_HTTP = DEPLOY / "envoy" / "envoy-http.yaml"
ENVOY_GRPC = DEPLOY / "envoy" / "envoy-grpc.yaml"
EXT_AUTHZ = "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz"

_KEY = KeyState("a1B2c3D4", "acme", "kg_live_", "live", ("read",), None, False, 1)
# Every identity field Keygate sends upstream: a key's, and a user token's subject.
IDENTITY = (*(str(name) for name, _ in identity_headers(_KEY)), str(SUBJECT))
# Client-sent spellings an upstream stack may read as X-Keygate-Org.
ALIASES = ("X-Keygate-Org", "x-keygate-org", "X_Keygate_Org", "X.Keygate.Org", "x.keygate-org")


def load(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return doc


def go_canonical(name: str) -> str:
    """Go's http.CanonicalHeaderKey: the form in which Traefik and Caddy match names."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


def test_identity_names_are_the_ones_keygate_sends() -> None:
    assert set(IDENTITY) == {
        "X-Keygate-Credential",
        "X-Keygate-Org",
        "X-Keygate-Key-Id",
        "X-Keygate-Scopes",
        "X-Keygate-Env",
        "X-Keygate-Subject",
    }


# -- Traefik (v3.x) -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def traefik() -> dict[str, Any]:
    return load(TRAEFIK / "keygate.yml")["http"]  # type: ignore[no-any-return]


def forward_auth(traefik: dict[str, Any]) -> dict[str, Any]:
    found = [m["forwardAuth"] for m in traefik["middlewares"].values() if "forwardAuth" in m]
    assert len(found) == 1, found
    return found[0]  # type: ignore[no-any-return]


def test_traefik_static_config_loads_the_dynamic_file() -> None:
    static = load(TRAEFIK / "traefik.yml")
    assert Path(static["providers"]["file"]["filename"]).name == "keygate.yml"
    assert "websecure" in static["entryPoints"]
    assert "forwardedHeaders" not in static["entryPoints"]["websecure"]
    assert "v3" in (TRAEFIK / "traefik.yml").read_text(encoding="utf-8").split("\n\n")[0]
    assert "v3" in (TRAEFIK / "keygate.yml").read_text(encoding="utf-8").split("\n\n")[0]


def test_traefik_asks_keygate_forward_auth_without_trusting_the_client(
    traefik: dict[str, Any],
) -> None:
    auth = forward_auth(traefik)
    assert auth["address"].endswith("/forward-auth")
    assert auth["address"].startswith("http://127.0.0.1:8082/")
    assert auth["trustForwardHeader"] is False
    # Every client header goes to Keygate (the credential among them): no allow-list.
    assert "authRequestHeaders" not in auth
    assert not auth.get("forwardBody", False)


def test_traefik_copies_every_identity_field_and_drops_every_forged_one(
    traefik: dict[str, Any],
) -> None:
    """Traefik deletes each request field the regex matches (Go's canonical names) and each
    listed one, then copies those of Keygate's answer."""
    auth = forward_auth(traefik)
    regex = re.compile(auth["authResponseHeadersRegex"])
    listed = {go_canonical(name) for name in auth.get("authResponseHeaders", [])}

    def copied(name: str) -> bool:
        return go_canonical(name) in listed or bool(regex.search(go_canonical(name)))

    for name in (*IDENTITY, str(X_REQUEST_ID)):
        assert copied(name), name
    for alias in ALIASES:
        assert copied(alias), alias
    for other in ("X-Keygateway-Org", "Authorization", "X-Api-Key", "X-Forwarded-For"):
        assert not copied(other), other


def test_traefik_router_asks_keygate_then_hides_the_credential(
    traefik: dict[str, Any],
) -> None:
    middlewares = traefik["middlewares"]
    (auth_name,) = [n for n, m in middlewares.items() if "forwardAuth" in m]
    routers = traefik["routers"]
    assert routers, "no router"
    for router in routers.values():
        chain = router["middlewares"]
        assert chain[0] == auth_name, chain
        assert router["service"] in traefik["services"]
        hidden = {
            name.lower()
            for step in chain[1:]
            for name, value in middlewares[step]
            .get("headers", {})
            .get("customRequestHeaders", {})
            .items()
            if value == ""
        }
        assert {"authorization", "x-api-key"} <= hidden, chain
    (service,) = traefik["services"].values()
    assert service["loadBalancer"]["servers"] == [{"url": "http://127.0.0.1:9000"}]


# -- Envoy (v1.31+) -------------------------------------------------------------------------


def ext_authz(path: Path) -> dict[str, Any]:
    """The ext_authz filter's typed_config, the only one of the listener's filters."""
    (listener,) = load(path)["static_resources"]["listeners"]
    (chain,) = listener["filter_chains"]
    (hcm,) = chain["filters"]
    filters = hcm["typed_config"]["http_filters"]
    assert filters[-1]["name"] == "envoy.filters.http.router"  # the router comes last
    (found,) = [f for f in filters if f["name"] == "envoy.filters.http.ext_authz"]
    assert filters.index(found) < len(filters) - 1
    config: dict[str, Any] = found["typed_config"]
    assert config["@type"] == EXT_AUTHZ
    return config


def as_message(config: dict[str, Any]) -> ext_authz_pb2.ExtAuthz:
    """Envoy's own message, from the config less its @type: unknown fields raise."""
    message = ext_authz_pb2.ExtAuthz()
    json_format.ParseDict({k: v for k, v in config.items() if k != "@type"}, message)
    return message


def cluster(path: Path, name: str) -> dict[str, Any]:
    (found,) = [c for c in load(path)["static_resources"]["clusters"] if c["name"] == name]
    return found  # type: ignore[no-any-return]


def endpoint(found: dict[str, Any]) -> tuple[str, int]:
    (group,) = found["load_assignment"]["endpoints"]
    (lb,) = group["lb_endpoints"]
    address = lb["endpoint"]["address"]["socket_address"]
    return address["address"], address["port_value"]


def matches(patterns: list[string_pb2.StringMatcher], name: str) -> bool:
    """Envoy's StringMatcher on a (lower-case) header name: safe_regex matches whole."""
    for p in patterns:
        kind = p.WhichOneof("match_pattern")
        if kind == "exact" and name == p.exact:
            return True
        if kind == "prefix" and name.startswith(p.prefix):
            return True
        if kind == "safe_regex" and re.fullmatch(p.safe_regex.regex, name):
            return True
    return False


@pytest.mark.parametrize("path", [ENVOY_HTTP, ENVOY_GRPC], ids=["http", "grpc"])
def test_envoy_bootstrap_is_envoy_messages_throughout(path: Path) -> None:
    """The whole static bootstrap, typed_config (Any) included, read as Envoy's Bootstrap:
    a misspelt field or type anywhere raises."""
    json_format.ParseDict(load(path), bootstrap_pb2.Bootstrap())
    assert "v1.31" in path.read_text(encoding="utf-8").split("\n\n")[0]


@pytest.mark.parametrize("path", [ENVOY_HTTP, ENVOY_GRPC], ids=["http", "grpc"])
def test_envoy_never_passes_when_keygate_is_down(path: Path) -> None:
    message = as_message(ext_authz(path))
    assert message.transport_api_version == config_source_pb2.V3
    assert message.failure_mode_allow is False
    assert message.status_on_error.code == 503
    assert not message.HasField("with_request_body")
    (listener,) = load(path)["static_resources"]["listeners"]
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    (host,) = hcm["route_config"]["virtual_hosts"]
    for route in host["routes"]:
        assert route["route"]["cluster"] == "api"
        assert {"authorization", "x-api-key"} <= set(route["request_headers_to_remove"])
        assert "typed_per_filter_config" not in route  # ext_authz is on for every route
    assert endpoint(cluster(path, "api")) == ("127.0.0.1", 9000)


def test_envoy_http_asks_the_check_listener_with_what_keygate_needs() -> None:
    message = as_message(ext_authz(ENVOY_HTTP))
    service = message.http_service
    assert service.path_prefix == "/envoy"
    assert service.server_uri.uri == "http://127.0.0.1:8082"
    assert endpoint(cluster(ENVOY_HTTP, service.server_uri.cluster)) == ("127.0.0.1", 8082)
    allowed = list(message.allowed_headers.patterns)
    for name in ("authorization", "x-api-key", "x-request-id", "x-forwarded-for", "user-agent"):
        assert matches(allowed, name), name
    # Every spelling of a client's own X-Keygate-*, so that Keygate can list it for removal.
    for name in (*IDENTITY, *ALIASES, "x.keygate.scopes", "x_keygate_org"):
        assert matches(allowed, name.lower()), name
    for name in ("x-keygateway", "x-keygate", "cookie", "x-keygatex-org"):
        assert not matches(allowed, name), name


def test_envoy_http_allowed_headers_regex_is_the_spelling_rule() -> None:
    (regex,) = [
        p.safe_regex.regex
        for p in as_message(ext_authz(ENVOY_HTTP)).allowed_headers.patterns
        if p.WhichOneof("match_pattern") == "safe_regex"
    ]
    compiled = re.compile(regex)  # RE2's syntax here is Python's too
    for name in ("x-keygate-org", "x_keygate_org", "x.keygate.scopes", "x-keygate_key-id"):
        assert compiled.fullmatch(name), name
    for name in ("x-keygateway", "x-keygate", "xx-keygate-org", "x-keygat-org"):
        assert not compiled.fullmatch(name), name


def test_envoy_http_passes_identity_up_and_refusals_down() -> None:
    response = as_message(ext_authz(ENVOY_HTTP)).http_service.authorization_response
    upstream = list(response.allowed_upstream_headers.patterns)
    for name in (*IDENTITY, str(X_REQUEST_ID)):
        assert matches(upstream, name.lower()), name
    assert not matches(upstream, "authorization") and not matches(upstream, "cache-control")
    client = list(response.allowed_client_headers.patterns)
    for name in ("www-authenticate", "retry-after", "content-type", "cache-control"):
        assert matches(client, name), name
    for name in ("ratelimit-limit", "ratelimit-remaining", "ratelimit-reset", "x-request-id"):
        assert matches(client, name), name
    assert not matches(client, "x-keygate-error")
    on_success = list(response.allowed_client_headers_on_success.patterns)
    for name in ("ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"):
        assert matches(on_success, name), name
    assert not matches(on_success, "x-keygate-org") and not matches(on_success, "cache-control")


def test_envoy_grpc_asks_the_grpc_check_listener_over_http2() -> None:
    message = as_message(ext_authz(ENVOY_GRPC))
    assert message.WhichOneof("services") == "grpc_service"
    grpc = message.grpc_service
    assert grpc.HasField("envoy_grpc") and grpc.timeout.seconds > 0
    found = cluster(ENVOY_GRPC, grpc.envoy_grpc.cluster_name)
    assert endpoint(found) == ("127.0.0.1", 9191)
    options = found["typed_extension_protocol_options"][
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    ]
    assert "http2_protocol_options" in options["explicit_http_config"]
    # gRPC sends every client header when none is listed: the credential and any forged
    # X-Keygate-* reach Keygate, which names those in headers_to_remove.
    assert not message.HasField("allowed_headers")
