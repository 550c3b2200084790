"""Errors of the key service. Each has a machine code, an HTTP status and a safe message."""

from __future__ import annotations


class ServiceError(Exception):
    code = "invalid_request"
    status = 400

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidInput(ServiceError):
    code = "invalid_request"
    status = 400


class NotFound(ServiceError):
    code = "not_found"
    status = 404


class Conflict(ServiceError):
    code = "conflict"
    status = 409


class Forbidden(ServiceError):
    code = "forbidden"
    status = 403


class ScopeNotHeld(Forbidden):
    code = "scope_not_held"


class StoreUnavailable(ServiceError):
    code = "store_unavailable"
    status = 503
