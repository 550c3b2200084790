"""The OpenAPI 3.1 description of the admin API, kept next to its handlers (api.py)."""

from __future__ import annotations

from typing import Any

from gateway import __version__

_TIME = {"type": ["string", "null"], "format": "date-time"}
_SLUG = {"type": "string", "pattern": "^[a-z0-9][a-z0-9-]{1,62}$"}
_SCOPE = {
    "type": "string",
    "pattern": r"^(?:[A-Za-z0-9_.-]+:)*(?:[A-Za-z0-9_.-]+|\*)$",
    "maxLength": 128,
}
_DURATION = {
    "type": "string",
    "pattern": r"^(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+$",
    "examples": ["24h"],
}
# A window is whole seconds: whole numbers of s, m, h, d (never ms or fractions, which the
# general duration pattern allows), as the service writes it back. The service checks the
# range, 1s to 365d, which a pattern cannot say.
_WINDOW = {
    "type": "string",
    "pattern": r"^(?:\d+[smhd])+$",
    "examples": ["1m", "1h30m"],
    "description": "Whole seconds from 1s to 365d, e.g. 90s, 1m, 1h30m, 1d.",
}
_RATE_LIMIT = {
    "type": ["object", "null"],
    "additionalProperties": False,
    "required": ["requests", "per"],
    "description": "At most `requests` requests per fixed window of `per`, counted over "
    "every route; null: no limit of the key's own.",
    "properties": {
        "requests": {"type": "integer", "minimum": 1, "maximum": 1_000_000_000},
        "per": _WINDOW,
    },
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _changed(schema: dict[str, Any], description: str) -> dict[str, Any]:
    """A change's success: durable in PostgreSQL; a cache tier that missed it is named."""
    return {
        **_json(schema, description),
        "headers": {
            "Keygate-Warning": {
                "description": "Present (once per warning) when the change is durable but did not "
                "go as usual, e.g. Redis unreachable: gateways then hear the change "
                "through PostgreSQL NOTIFY, still within 1 s.",
                "schema": {"type": "string"},
            }
        },
    }


def _errors(*statuses: int) -> dict[str, Any]:
    text = {
        400: "Invalid input (the field is named)",
        401: "Missing or invalid admin credential",
        403: "Not allowed for this principal (forbidden, scope_not_held), or a change made "
        "with the console's session cookie without its X-CSRF-Token or from another "
        "origin (csrf_failed)",
        404: "Unknown org, key or member",
        409: "Conflict with the current state",
        429: "An API-key principal whose id is being guessed at (too_many_attempts): "
        "retry after Retry-After",
        503: "Database unreachable",
    }
    if 401 in statuses:  # every authenticated operation: a key principal may be throttled
        statuses = tuple(sorted({*statuses, 429}))
    return {str(s): _json(_ref("Error"), text[s]) for s in statuses}


def _body(schema: dict[str, Any], required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": schema}}}


_ORG_PARAM = {"name": "org", "in": "path", "required": True, "schema": _SLUG}
_KEY_PARAM = {
    "name": "key_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^(?:[A-Za-z0-9_-]{1,16})?[0-9A-Za-z]{8}$"},
}
_LIMIT = {
    "name": "limit",
    "in": "query",
    "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
}
_CURSOR = {"name": "cursor", "in": "query", "schema": {"type": "string"}}
_NAME = {"type": "string", "minLength": 1, "maxLength": 200}
_DATE_TIME = {"type": "string", "format": "date-time"}
_SCOPES = {
    "type": "array",
    "items": _SCOPE,
    "description": "With a `scopes:` catalogue in the gateway's config, every scope "
    "must be listed there (a wildcard must cover a listed one, `*` "
    "always may); else 400 invalid_request, field `scopes`, naming "
    "the nearest listed scope.",
}


def _input(properties: dict[str, Any], **constraints: Any) -> dict[str, Any]:
    """A request body object: only these fields (unknown fields are 400)."""
    return {
        "type": "object",
        "additionalProperties": False,
        **constraints,
        "properties": properties,
    }


_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message", "request_id"],
                "properties": {
                    "code": {"type": "string"},
                    "message": {"type": "string"},
                    "request_id": {"type": "string"},
                    "field": {"type": "string"},
                },
            }
        },
    },
    "Org": {
        "type": "object",
        "required": ["slug", "name", "created_at"],
        "properties": {
            "slug": _SLUG,
            "name": {"type": "string"},
            "created_at": {"type": "string", "format": "date-time"},
        },
    },
    "Key": {
        "type": "object",
        "required": [
            "id",
            "display_prefix",
            "org",
            "name",
            "scopes",
            "env",
            "status",
            "created_at",
            "created_by",
            "expires_at",
            "last_used_at",
            "revoked_at",
            "revoked_by",
            "revoke_reason",
            "metadata",
            "rolled_from",
            "rate_limit",
        ],
        "properties": {
            "id": {"type": "string"},
            "display_prefix": {"type": "string"},
            "org": _SLUG,
            "name": {"type": "string"},
            "scopes": {"type": "array", "items": {"type": "string"}},
            "env": {"enum": ["live", "test"]},
            "status": {"enum": ["active", "expired", "revoked"]},
            "created_at": {"type": "string", "format": "date-time"},
            "created_by": {"type": "string"},
            "expires_at": _TIME,
            "last_used_at": _TIME,
            "revoked_at": _TIME,
            "revoked_by": {"type": ["string", "null"]},
            "revoke_reason": {"type": ["string", "null"]},
            "metadata": {"type": "object"},
            "rolled_from": {"type": ["string", "null"]},
            "rate_limit": _RATE_LIMIT,
        },
    },
    "KeyWithSecret": {
        "type": "object",
        "required": ["key", "secret"],
        "properties": {"key": _ref("Key"), "secret": {"type": "string"}, "previous": _ref("Key")},
    },
    "AuditEntry": {
        "type": "object",
        "required": ["id", "at", "org", "key_id", "action", "principal"],
        "properties": {
            "id": {"type": "integer"},
            "at": {"type": "string", "format": "date-time"},
            "org": {"type": "string"},
            "key_id": {"type": ["string", "null"]},
            "action": {"type": "string"},
            "principal": {"type": "string"},
            "old_scopes": {"type": ["array", "null"], "items": {"type": "string"}},
            "new_scopes": {"type": ["array", "null"], "items": {"type": "string"}},
            "client_ip": {"type": ["string", "null"]},
            "request_id": {"type": ["string", "null"]},
            "traceparent": {"type": ["string", "null"]},
            "user_agent": {"type": ["string", "null"]},
            "details": {"type": "object"},
        },
    },
    "UserTokenRevocation": {
        "type": "object",
        "required": ["org", "subject", "issuer", "revoked_before", "revoked_by"],
        "properties": {
            "org": {"type": "string"},
            "subject": {"type": "string"},
            "issuer": {
                "type": ["string", "null"],
                "description": "null: the subject's tokens of every configured issuer",
            },
            "revoked_before": {
                "type": "string",
                "format": "date-time",
                "description": "Tokens issued (iat) until this time are refused with 401 "
                "revoked_token on every gateway within 1 s; a token without iat is refused "
                "too.",
            },
            "revoked_by": {"type": "string"},
        },
    },
    "Member": {
        "type": "object",
        "required": ["email", "name", "role", "last_sign_in_at"],
        "properties": {
            "email": {"type": "string"},
            "name": {"type": "string"},
            "role": {"enum": ["owner", "admin", "member"]},
            "last_sign_in_at": _TIME,
        },
    },
    "Invited": {
        "type": "object",
        "required": ["member", "invite_url", "expires_at"],
        "properties": {
            "member": _ref("Member"),
            "invite_url": {
                "type": "string",
                "description": "The one-time sign-in link (console.invite_ttl, 24 h by "
                "default): hand it to the person; it is not shown again.",
            },
            "expires_at": {"type": "string", "format": "date-time"},
        },
    },
    "Me": {
        "type": "object",
        "required": ["principal", "orgs"],
        "properties": {
            "principal": {
                "type": "string",
                "description": "root, user:<email>, key:<display prefix>",
            },
            "orgs": {
                "type": "array",
                "description": "A person's orgs and role in each; empty for other principals.",
                "items": {
                    "type": "object",
                    "required": ["slug", "role"],
                    "properties": {
                        "slug": _SLUG,
                        "role": {"enum": ["owner", "admin", "member"]},
                    },
                },
            },
        },
    },
}

_ROLE = {"enum": ["owner", "admin", "member"]}
_EMAIL = {"type": "string", "format": "email", "minLength": 3, "maxLength": 254}
_EMAIL_PARAM = {"name": "email", "in": "path", "required": True, "schema": _EMAIL}


def _page(item: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["items", "next_cursor"],
        "properties": {
            "items": {"type": "array", "items": _ref(item)},
            "next_cursor": {"type": ["string", "null"]},
        },
    }


def openapi_document() -> dict[str, Any]:
    """The document served at /admin/v1/openapi.json."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Keygate admin API",
            "version": __version__,
            "description": "Manage organisations, API keys and the audit log. "
            "Bearer: the root token (KEYGATE_ADMIN_TOKEN) or an API key "
            "with keys:manage / keys:read, acting inside its own org. "
            "Without a Bearer credential, the console's session cookie "
            "(keygate_session): a person acts by their role in each org "
            "(owner: members and keys; admin: keys; member: neither); an org "
            "they have no role in is 404. A cookie-authenticated change (any "
            "method but GET/HEAD) also needs the X-CSRF-Token header of the "
            "session and an Origin header naming this origin, else 403 "
            "csrf_failed. "
            "A key principal can never grant, keep or lift more than it "
            "holds itself: scopes it lacks (403 scope_not_held), an "
            "expiry later than its own, no rate limit or a looser one "
            "than its own, live keys from a test key (403 forbidden); it "
            "may update, roll or revoke only keys within all of these. "
            "Permission is checked before any lookup.",
        },
        "servers": [{"url": "/admin/v1"}],
        "security": [{"bearer": []}, {"session": []}],
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "session": {"type": "apiKey", "in": "cookie", "name": "keygate_session"},
            },
            "schemas": _SCHEMAS,
        },
        "paths": {
            "/openapi.json": {
                "get": {
                    "operationId": "getOpenApiDocument",
                    "security": [],
                    "responses": {"200": _json({"type": "object"}, "This document")},
                },
            },
            "/orgs": {
                "post": {
                    "operationId": "createOrg",
                    "requestBody": _body(
                        _input(
                            {"slug": _SLUG, "name": {"type": "string", "minLength": 1}},
                            required=["slug"],
                        )
                    ),
                    "responses": {
                        "201": _json(_ref("Org"), "Created"),
                        **_errors(400, 401, 403, 409, 503),
                    },
                },
                "get": {
                    "operationId": "listOrgs",
                    "description": "Root sees every org; an API key with keys:read or "
                    "keys:manage sees only its own (403 without either).",
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["items"],
                                "properties": {"items": {"type": "array", "items": _ref("Org")}},
                            },
                            "Orgs",
                        ),
                        **_errors(401, 403, 503),
                    },
                },
            },
            "/orgs/{org}/keys": {
                "parameters": [_ORG_PARAM],
                "post": {
                    "operationId": "createKey",
                    "requestBody": _body(
                        _input(
                            {
                                "name": _NAME,
                                "scopes": _SCOPES,
                                "env": {"enum": ["live", "test"]},
                                "expires_at": _DATE_TIME,
                                "expires_in": _DURATION,
                                "metadata": {"type": "object"},
                                "rate_limit": _RATE_LIMIT,
                            },
                            required=["name", "scopes"],
                        )
                    ),
                    "responses": {
                        "201": _json(_ref("KeyWithSecret"), "Created; the secret is shown once"),
                        **_errors(400, 401, 403, 404, 503),
                    },
                },
                "get": {
                    "operationId": "listKeys",
                    "parameters": [
                        {
                            "name": "status",
                            "in": "query",
                            "schema": {"enum": ["active", "revoked", "expired", "all"]},
                        },
                        {
                            "name": "q",
                            "in": "query",
                            "description": "Search: part of the name (any case), or the start"
                            " of the display prefix or id",
                            "schema": {"type": "string", "maxLength": 200},
                        },
                        _LIMIT,
                        _CURSOR,
                    ],
                    "responses": {
                        "200": _json(_page("Key"), "Keys, newest first"),
                        **_errors(400, 401, 403, 404, 503),
                    },
                },
            },
            "/orgs/{org}/keys/{key_id}": {
                "parameters": [_ORG_PARAM, _KEY_PARAM],
                "get": {
                    "operationId": "showKey",
                    "responses": {
                        "200": _json(_ref("Key"), "The key"),
                        **_errors(400, 401, 403, 404, 503),
                    },
                },
                "patch": {
                    "operationId": "updateKey",
                    "requestBody": _body(
                        _input(
                            {"name": _NAME, "scopes": _SCOPES, "rate_limit": _RATE_LIMIT},
                            minProperties=1,
                        )
                    ),
                    "responses": {
                        "200": _changed(_ref("Key"), "Updated"),
                        **_errors(400, 401, 403, 404, 503),
                    },
                },
            },
            "/orgs/{org}/keys/{key_id}/revoke": {
                "parameters": [_ORG_PARAM, _KEY_PARAM],
                "post": {
                    "operationId": "revokeKey",
                    "description": "Idempotent: revoking a revoked key returns it unchanged "
                    "(its first reason, time and principal) and writes no "
                    "second audit entry.",
                    "requestBody": _body(_input({"reason": _NAME}), required=False),
                    "responses": {
                        "200": _changed(_ref("Key"), "Revoked, now or before (then unchanged)"),
                        **_errors(400, 401, 403, 404, 503),
                    },
                },
            },
            "/orgs/{org}/keys/{key_id}/roll": {
                "parameters": [_ORG_PARAM, _KEY_PARAM],
                "post": {
                    "operationId": "rollKey",
                    "requestBody": _body(
                        _input(
                            {"grace": _DURATION, "expires_in": _DURATION, "expires_at": _DATE_TIME}
                        ),
                        required=False,
                    ),
                    "responses": {
                        "201": _changed(
                            _ref("KeyWithSecret"), "Rolled; the new secret is shown once"
                        ),
                        **_errors(400, 401, 403, 404, 409, 503),
                    },
                },
            },
            "/orgs/{org}/user-tokens/revoke": {
                "parameters": [_ORG_PARAM],
                "post": {
                    "operationId": "revokeUserTokens",
                    "description": "Refuse the user tokens (SPEC §11) of `subject` for this "
                    "org issued until now, from `issuer` (one of the gateway's configured "
                    "`user_tokens` issuers) or, without it, from every issuer. Root, an "
                    "owner or admin of the org, or an API key with keys:manage in its own "
                    "org. Audited in the org as `user_token.revoke`; revoking again moves "
                    "the time forward.",
                    "requestBody": _body(
                        _input(
                            {
                                "subject": {"type": "string", "minLength": 1, "maxLength": 255},
                                "issuer": {"type": "string", "minLength": 1},
                            },
                            required=["subject"],
                        )
                    ),
                    "responses": {
                        "200": _changed(_ref("UserTokenRevocation"), "Revoked"),
                        **_errors(400, 401, 403, 404, 503),
                    },
                },
            },
            "/me": {
                "get": {
                    "operationId": "getMe",
                    "responses": {
                        "200": _json(_ref("Me"), "The acting principal"),
                        **_errors(401, 503),
                    },
                },
            },
            "/orgs/{org}/members": {
                "parameters": [_ORG_PARAM],
                "get": {
                    "operationId": "listMembers",
                    "description": "Root, or an owner or admin of the org.",
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["items"],
                                "properties": {"items": {"type": "array", "items": _ref("Member")}},
                            },
                            "Members, by email",
                        ),
                        **_errors(401, 403, 404, 503),
                    },
                },
                "post": {
                    "operationId": "inviteMember",
                    "description": "Root, or an owner of the org. Adds the person (a new "
                    "user when the email is new) with the role and returns a one-time "
                    "sign-in link. Inviting a member again with the same role makes a "
                    "fresh link; with another role it is 409 (change the role instead).",
                    "requestBody": _body(
                        _input(
                            {"email": _EMAIL, "role": _ROLE, "name": {"type": "string"}},
                            required=["email", "role"],
                        )
                    ),
                    "responses": {
                        "201": _json(_ref("Invited"), "Invited; the link is shown once"),
                        **_errors(400, 401, 403, 404, 409, 503),
                    },
                },
            },
            "/orgs/{org}/members/{email}": {
                "parameters": [_ORG_PARAM, _EMAIL_PARAM],
                "patch": {
                    "operationId": "changeMemberRole",
                    "description": "Root, or an owner of the org. The last owner cannot be "
                    "demoted (409).",
                    "requestBody": _body(_input({"role": _ROLE}, required=["role"])),
                    "responses": {
                        "200": _json(_ref("Member"), "The member with the new role"),
                        **_errors(400, 401, 403, 404, 409, 503),
                    },
                },
                "delete": {
                    "operationId": "removeMember",
                    "description": "Root, or an owner of the org. The last owner cannot be "
                    "removed (409).",
                    "responses": {
                        "204": {"description": "Removed"},
                        **_errors(400, 401, 403, 404, 409, 503),
                    },
                },
            },
            "/orgs/{org}/audit": {
                "parameters": [_ORG_PARAM],
                "get": {
                    "operationId": "listAudit",
                    "parameters": [
                        {"name": "key_id", "in": "query", "schema": {"type": "string"}},
                        {"name": "action", "in": "query", "schema": {"type": "string"}},
                        _LIMIT,
                        _CURSOR,
                    ],
                    "responses": {
                        "200": _json(_page("AuditEntry"), "Entries, newest first"),
                        **_errors(400, 401, 403, 404, 503),
                    },
                },
            },
        },
    }
