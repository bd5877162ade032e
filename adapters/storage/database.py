"""Opening the database the configuration names, or the embedded one when it names none: for
the composition root (`init_app`) and the CLI commands that read or write it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from adapters.config import Settings
from adapters.storage.embedded import embedded_postgres
from adapters.storage.migrate import migrate
from adapters.storage.postgres_store import create_pool


@asynccontextmanager
async def database_url(settings: Settings) -> AsyncIterator[str]:
    if settings.database_url:
        yield settings.database_url
        return
    async with embedded_postgres(settings.data_dir) as url:
        yield url


@asynccontextmanager
async def open_pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    """A migrated pool on the configured (or embedded) database; closed and stopped on exit."""
    async with database_url(settings) as url:
        pool = await create_pool(url)
        try:
            async with pool.acquire() as connection:
                await migrate(connection)
            yield pool
        finally:
            await pool.close()
