"""`keygate routes list|test`: the route table as the proxy sees it.

`routes test METHOD PATH` answers what the proxy would do with that request line before
any credential is read: the same target checks, path normalisation and route table, so
a refusal here is the refusal a client would get (like Envoy's router check tool).
"""

from __future__ import annotations

import argparse
from typing import Any

from gateway.config import Config, RouteConfig

from .context import command_config
from .output import EXIT_OK, EXIT_USER_ERROR, Output


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    routes = sub.add_parser(
        "routes",
        help="show the route table and which route a request takes",
        description="Inspect the configured routes without starting the gateway.",
    ).add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = routes.add_parser(
        "list", parents=[common], help="list the routes in match order (first match wins)"
    )
    listing.set_defaults(run=list_routes)
    test = routes.add_parser(
        "test",
        parents=[common],
        help="which route, upstream and scopes a request gets, or how the proxy refuses it",
        description="Show what the proxy does with METHOD PATH: the route it matches, its "
        "upstream, the scopes a key needs (or that it is public), or the refusal "
        "(status and code). Exit 1 when the request would be refused.",
    )
    test.add_argument(
        "method", metavar="METHOD", help="HTTP method as sent, e.g. GET (case-sensitive)"
    )
    test.add_argument(
        "path",
        metavar="PATH",
        help="request target as a client sends it, e.g. /api/v1/orgs/acme/x?y=1",
    )
    test.set_defaults(run=test_route)


def route_json(index: int, route: RouteConfig, config: Config) -> dict[str, Any]:
    upstream = config.upstreams.get(route.upstream)
    return {
        "index": index,
        "name": route.name,
        "path": route.path,
        "methods": sorted(route.methods) if route.methods is not None else None,
        "upstream": route.upstream,
        "upstream_url": upstream.url if upstream else None,
        "public": route.public,
        "scopes": list(route.scopes),
        "org_param": route.org_param,
        "websocket": route.websocket,
        "forward_credentials": route.forward_credentials,
        "max_body": route.max_body,
        "rate_limit": str(route.rate_limit) if route.rate_limit is not None else None,
        "line": route.line,
    }


def list_routes(args: argparse.Namespace, out: Output) -> int:
    config = command_config(args)
    items = [route_json(i, r, config) for i, r in enumerate(config.routes)]
    if out.as_json:
        out.json({"source": config.source, "items": items})
        return EXIT_OK
    out.table(
        ["#", "NAME", "METHODS", "PATH", "UPSTREAM", "ACCESS"],
        [
            [
                str(r["index"]),
                r["name"],
                " ".join(r["methods"] or ["any"]),
                r["path"],
                r["upstream"],
                _access(r),
            ]
            for r in items
        ],
    )
    return EXIT_OK


def test_route(args: argparse.Namespace, out: Output) -> int:
    # The proxy's own steps, in its order (gateway.proxy.handler, gateway.proxy.decision).
    from gateway.auth.errors import Refusal
    from gateway.proxy.decision import split_target
    from gateway.proxy.errors import BadPath, NoRoute
    from gateway.proxy.framing import check_target
    from gateway.proxy.listener import parse_request_line
    from gateway.proxy.paths import InvalidPath, normalise_path
    from gateway.proxy.routes import RouteTable

    config = command_config(args)
    method = args.method
    table = RouteTable.compile(config.routes)
    try:
        # As the proxy's parser reads the request line: `get` or `FOO` never reach a route.
        method, target = parse_request_line(method, args.path, config.server)
        check_target(method, target)
        raw_path, _query = split_target(target)
        try:
            path = normalise_path(raw_path)
        except InvalidPath as exc:
            raise BadPath(f"The request path is not acceptable: {exc.reason}.") from None
        match = table.match(method, path)
        if match is None:
            raise NoRoute()
    except Refusal as refusal:
        if out.as_json:
            out.json(
                {
                    "method": method,
                    "matched": False,
                    "status": refusal.status,
                    "code": refusal.code,
                    "message": refusal.message,
                }
            )
        hint = (
            f" (methods are case-sensitive: {method.upper()}?)" if method.upper() != method else ""
        )
        out.err.write(
            f"keygate: error: the proxy refuses {method} with {refusal.status} "
            f"{refusal.code}: {refusal.message}{hint}\n"
        )
        return EXIT_USER_ERROR
    index = next(i for i, r in enumerate(config.routes) if r is match.route)
    route = route_json(index, match.route, config)
    result = {
        "method": method,
        "path": path,
        "matched": True,
        "route": route,
        "params": dict(match.params),
    }
    if out.as_json:
        out.json(result)
        return EXIT_OK
    where = f"#{index}" + (f", {config.source} line {route['line']}" if route["line"] else "")
    out.fields(
        {
            "route": f"{route['name']} ({where})",
            "pattern": f"{' '.join(route['methods'] or ['any'])} {route['path']}",
            "path": path if path == raw_path else f"{path} (normalised from {raw_path})",
            "upstream": f"{route['upstream']} ({route['upstream_url']})",
            "access": _access(route),
            "params": " ".join(f"{k}={v}" for k, v in match.params.items()) or None,
            "websocket": "yes" if route["websocket"] else "no",
            "max_body": route["max_body"],
            "rate_limit": route["rate_limit"],
        }
    )
    return EXIT_OK


def _access(route: dict[str, Any]) -> str:
    if route["public"]:
        return "public (no key)"
    scopes = " ".join(route["scopes"]) or "none"
    org = f", org {{{route['org_param']}}} must be the key's" if route["org_param"] else ""
    return f"key with scopes: {scopes}{org}"
