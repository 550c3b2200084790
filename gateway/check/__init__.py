"""External authorization (SPEC §12): the proxy's decision for a request that another
proxy (Envoy, nginx, Traefik, Caddy) forwards itself.

`decide` runs the decision and records it; `http_api` answers Envoy's HTTP ext_authz,
nginx `auth_request` and forward auth on `listen.check`; `grpc_api` answers Envoy's gRPC
`Authorization/Check` on `listen.check_grpc`.
"""
