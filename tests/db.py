"""The test database: a real PostgreSQL, never a mock.

`LEDGER_TEST_DATABASE_URL` names a server to use (CI points it at the machine's PostgreSQL); when it
is unset, or set but not answering, an ephemeral embedded PostgreSQL runs for the test session.
Tests isolate themselves in fresh schemas (`fresh_schema` / `drop_schema`).
"""

from __future__ import annotations

import logging
import os
import re
import uuid
import warnings
from typing import TYPE_CHECKING

import asyncpg

from adapters.storage.embedded import EmbeddedPostgres

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

log = logging.getLogger(__name__)

ENV_VAR = "LEDGER_TEST_DATABASE_URL"
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


async def answers(dsn: str, *, within_seconds: float = 5.0) -> str | None:
    """None when `dsn` answers `SELECT 1`, else why not."""
    try:
        connection = await asyncpg.connect(dsn, timeout=within_seconds)
        try:
            await connection.fetchval("SELECT 1")
        finally:
            await connection.close()
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        return f"{type(error).__name__}: {error}"
    return None


async def _nothing_to_stop() -> None:
    return None


async def open_test_server() -> tuple[str, Callable[[], Awaitable[None]]]:
    """(dsn, stop): the configured server when it answers, else a new ephemeral embedded one."""
    configured = os.environ.get(ENV_VAR)
    if configured:
        problem = await answers(configured)
        if problem is None:
            log.info("tests use %s from %s", _without_password(configured), ENV_VAR)
            return configured, _nothing_to_stop
        warnings.warn(
            f"{ENV_VAR}={_without_password(configured)} does not answer ({problem}); "
            "using an embedded PostgreSQL instead",
            stacklevel=2,
        )
    server = EmbeddedPostgres(ephemeral=True)
    dsn = await server.start()
    return dsn, server.stop


async def test_database_url() -> AsyncIterator[str]:
    """Yields the test session's DSN and stops the embedded server (if one was started) after."""
    dsn, stop = await open_test_server()
    try:
        yield dsn
    finally:
        await stop()


test_database_url.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test


async def fresh_schema(dsn: str) -> str:
    """Creates a schema with a unique name (`t_<12 hex>`) and returns the name."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(f'CREATE SCHEMA "{name}"')
    finally:
        await connection.close()
    return name


async def drop_schema(dsn: str, name: str) -> None:
    """Drops a schema made by `fresh_schema`, with everything in it."""
    if not _SCHEMA_NAME.match(name):
        raise ValueError(f"not a schema name made by fresh_schema: {name!r}")
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    finally:
        await connection.close()


def _without_password(dsn: str) -> str:
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", dsn)
