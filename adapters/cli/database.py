"""The CLI's way to the database: the configured (or embedded) one, checked before any command
uses it.

Only `db migrate`, `serve` and `demo` migrate. Every other command opens the database as it is
and refuses one that is behind the code (a fresh database, or one partly migrated), with a hint,
instead of changing a schema nobody asked it to change. Failing to connect is one line too.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import asyncpg

from adapters.cli.errors import DatabaseUnavailable
from adapters.config import Settings, mask_url
from adapters.storage.database import database_url
from adapters.storage.migrate import migrate, pending_migrations
from adapters.storage.postgres_store import create_pool

# Errors that mean "this database cannot be reached or used", not a fault of the command.
CONNECT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # refused, unreachable, unknown host (socket.gaierror)
    TimeoutError,
    asyncpg.InvalidCatalogNameError,  # the database does not exist
    asyncpg.InvalidAuthorizationSpecificationError,  # role or password refused
    asyncpg.CannotConnectNowError,  # starting up or shutting down
    asyncpg.TooManyConnectionsError,
    asyncpg.InterfaceError,
)

# Those a pool opened by the service itself (serve, demo) may raise: narrower, since a command's
# own file errors (OSError) must not read as a database fault.
SERVICE_CONNECT_ERRORS: tuple[type[BaseException], ...] = (
    ConnectionRefusedError,
    socket.gaierror,
    *CONNECT_ERRORS[2:],
)


def unavailable(url: str, error: BaseException) -> DatabaseUnavailable:
    """The one line for a database we could not connect to."""
    where = mask_url(url)
    if isinstance(error, asyncpg.InvalidCatalogNameError):
        return DatabaseUnavailable(f"database does not exist: {where} ({error})")
    if isinstance(error, socket.gaierror | ConnectionRefusedError | TimeoutError):
        return DatabaseUnavailable(f"database unreachable: {where} ({error or 'timed out'})")
    return DatabaseUnavailable(f"database unavailable: {where} ({type(error).__name__}: {error})")


def not_migrated(pending: list[str]) -> DatabaseUnavailable:
    shown = ", ".join(pending[:3]) + (f" and {len(pending) - 3} more" if len(pending) > 3 else "")
    return DatabaseUnavailable(
        f"database is not migrated ({len(pending)} pending: {shown}); run `ledger db migrate`"
    )


async def connect(url: str) -> asyncpg.Pool:
    try:
        return await create_pool(url)
    except CONNECT_ERRORS as error:
        raise unavailable(url, error) from error


@asynccontextmanager
async def _pool(
    settings: Settings, *, migrating: bool, checking: bool
) -> AsyncIterator[asyncpg.Pool]:
    async with database_url(settings) as url:
        pool = await connect(url)
        try:
            async with pool.acquire() as connection:
                if migrating:
                    await migrate(connection)
                elif checking:
                    pending = await pending_migrations(connection)
                    if pending:
                        raise not_migrated(pending)
            yield pool
        finally:
            await pool.close()


def open_pool(settings: Settings) -> AbstractAsyncContextManager[asyncpg.Pool]:
    """A migrated pool on the configured (or embedded) database, for the commands that migrate
    (`serve`, `demo`); closed, and the embedded server stopped, on exit."""
    return _pool(settings, migrating=True, checking=False)


def open_checked_pool(settings: Settings) -> AbstractAsyncContextManager[asyncpg.Pool]:
    """A pool for every other command: a database with pending migrations is refused."""
    return _pool(settings, migrating=False, checking=True)


def open_unchecked_pool(settings: Settings) -> AbstractAsyncContextManager[asyncpg.Pool]:
    """A pool on the database as it is, for `db migrate` itself."""
    return _pool(settings, migrating=False, checking=False)


async def probe(settings: Settings) -> None:
    """Connects to the configured database and migrates it, so that `serve` and `demo` fail
    in one line before starting anything. Without a database URL (the embedded server) there is
    nothing to probe: the server is ours."""
    if settings.database_url:
        async with open_pool(settings):
            pass


__all__ = ["database_url", "open_checked_pool", "open_pool", "open_unchecked_pool", "probe"]
