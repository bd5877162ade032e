"""Fixtures shared by every tier: a real PostgreSQL (never a mock), one fresh schema per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from adapters.storage.migrate import migrate
from adapters.storage.postgres_store import PostgresEventStore, create_pool


@pytest.fixture(scope="session")
async def database_url() -> AsyncIterator[str]:
    """LEDGER_TEST_DATABASE_URL when set (CI points it at the machine's server), else an
    embedded PostgreSQL started for this test session."""
    configured = os.environ.get("LEDGER_TEST_DATABASE_URL")
    if configured:
        yield configured
        return
    from tests.db import open_test_server  # noqa: PLC0415 - only without a configured server

    dsn, stop = await open_test_server()
    try:
        yield dsn
    finally:
        await stop()


@pytest.fixture
async def schema(database_url: str) -> AsyncIterator[str]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute(f'CREATE SCHEMA "{name}"')
    finally:
        await connection.close()
    yield name
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute(f'DROP SCHEMA "{name}" CASCADE')
    finally:
        await connection.close()


@pytest.fixture
async def pool(database_url: str, schema: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database_url, schema=schema, min_size=1, max_size=20)
    async with pool.acquire() as connection:
        await migrate(connection)
    yield pool
    await pool.close()


@pytest.fixture
def store(pool: asyncpg.Pool) -> PostgresEventStore:
    return PostgresEventStore(pool)
