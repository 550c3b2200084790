"""The Postgres connection pool, and turning driver failures into one clear error."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import TypeAlias
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import asyncpg

from gateway.keys.errors import ServiceError, StoreUnavailable


class NotMigrated(ServiceError):
    code = "not_migrated"
    status = 503


Connection: TypeAlias = asyncpg.Connection
# Failures that mean "the database is not there right now" (as opposed to a bad query).
UNAVAILABLE = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.InvalidCatalogNameError,
    asyncpg.exceptions.InvalidAuthorizationSpecificationError,
    asyncpg.exceptions.InvalidPasswordError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
)


def redact_url(url: str) -> str:
    """The URL with any password replaced by `***`, for messages and logs."""
    if _password(url) is not None:
        scheme, _, rest = url.partition("://")
        userinfo, after = rest.rsplit("@", 1)
        url = f"{scheme}://{userinfo.partition(':')[0]}:***@{after}"
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.password is not None:
        host = parts.netloc.rsplit("@", 1)[-1]
        parts = parts._replace(netloc=f"{parts.username or ''}:***@{host}")
    if parts.query:
        # libpq and asyncpg also take the password as a query parameter.
        query = [
            (k, "***" if k.lower() in ("password", "sslpassword") else v)
            for k, v in parse_qsl(parts.query, keep_blank_values=True)
        ]
        parts = parts._replace(query=urlencode(query, safe="*", quote_via=quote))
    return urlunsplit(parts)


def invalid_url(what: str, url: str, exc: Exception) -> str:
    """`invalid <what> URL <redacted>: <why>`. A parser's message may quote a piece of a
    password (`invalid literal for int(): 'S3c'`), so with a password it is withheld."""
    if _password(url) is None:
        return f"invalid {what} URL {redact_url(url)}: {exc}"
    return (
        f"invalid {what} URL {redact_url(url)}: it does not parse (check the port, and "
        "percent-encode any '#', '/', '?' or '@' in the password)"
    )


def _password(url: str) -> str | None:
    """The password in `url`'s userinfo, read up to the last '@': an unencoded '#', '/'
    or '?' in a password ends urlsplit's authority early and leaves the rest in view."""
    _scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return None
    _user, colon, password = rest.rsplit("@", 1)[0].partition(":")
    return password if colon else None


async def _init_connection(conn: Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


class Database:
    """A lazily opened asyncpg pool with a timeout on every call."""

    def __init__(self, url: str, *, timeout: float = 5.0, max_size: int = 10) -> None:
        self.url = url
        self.timeout = timeout
        self._max_size = max_size
        self._pool: asyncpg.Pool | None = None
        self._lock = asyncio.Lock()

    def unavailable(self, exc: BaseException) -> StoreUnavailable:
        reason = str(exc).strip() or type(exc).__name__
        return StoreUnavailable(f"cannot reach the database at {redact_url(self.url)}: {reason}")

    async def pool(self) -> asyncpg.Pool:
        if self._pool is not None:
            return self._pool
        async with self._lock:
            if self._pool is None:
                try:
                    self._pool = await asyncpg.create_pool(
                        self.url,
                        min_size=1,
                        max_size=self._max_size,
                        timeout=self.timeout,
                        command_timeout=self.timeout,
                        statement_cache_size=0,  # PgBouncer-safe
                        init=_init_connection,
                    )
                except UNAVAILABLE as exc:
                    raise self.unavailable(exc) from None
                except ValueError as exc:  # malformed DSN
                    raise StoreUnavailable(invalid_url("database", self.url, exc)) from None
        return self._pool

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        pool = await self.pool()
        try:
            async with pool.acquire(timeout=self.timeout) as conn:
                yield conn
        except (asyncpg.exceptions.UndefinedTableError, asyncpg.exceptions.UndefinedColumnError):
            raise NotMigrated(
                f"the database at {redact_url(self.url)} has no Keygate schema:"
                " run `keygate migrate`"
            ) from None
        except UNAVAILABLE as exc:
            raise self.unavailable(exc) from None

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        async with self.connection() as conn:
            try:
                async with conn.transaction():
                    yield conn
            except UNAVAILABLE as exc:
                raise self.unavailable(exc) from None

    async def ping(self) -> bool:
        try:
            async with self.connection() as conn:
                await conn.fetchval("SELECT 1", timeout=self.timeout)
            return True
        except StoreUnavailable:
            return False

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                await asyncio.wait_for(pool.close(), self.timeout)
            except (TimeoutError, OSError):
                pool.terminate()
