"""The demo's own schema: each run of `ledger demo` writes to a new one.

The sandboxes start empty every run; a ledger that kept an earlier run's payments would show
balances the fresh sandboxes never held (and the demo would compare them). So each run creates
`ledger_demo_<UTC time>_<random>` in the configured (or embedded) database, migrates it, and
keeps it afterwards for a person to look at. Demo schemas older than a day are dropped at the
start of a run (no demo runs that long, so a concurrent run's schema is never touched).
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from adapters.cli.database import connect
from adapters.config import Settings, mask_url
from adapters.storage.database import database_url
from adapters.storage.migrate import migrate

PREFIX = "ledger_demo_"
_STAMP = "%Y%m%d%H%M%S"  # lower case: search_path folds unquoted names
KEPT_FOR = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class DemoDatabase:
    schema: str
    # The database URL naming the schema, password masked; None for the embedded database,
    # whose server (and port) lives only as long as the demo.
    shown_url: str | None
    dropped: tuple[str, ...]  # earlier demo schemas removed at the start of this run


def with_search_path(url: str, schema: str) -> str:
    """`url` with its search_path (if any) replaced by `schema`."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "search_path"]
    return urlunsplit(parts._replace(query=urlencode([*query, ("search_path", schema)])))


def _made_at(schema: str) -> datetime | None:
    try:
        stamp = schema.removeprefix(PREFIX).split("_", 1)[0]
        return datetime.strptime(stamp, _STAMP).replace(tzinfo=UTC)
    except ValueError:
        return None


async def _drop_old(pool: asyncpg.Pool, now: datetime) -> tuple[str, ...]:
    names = await pool.fetch(
        "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, $1)", PREFIX
    )
    old = []
    for row in names:
        made = _made_at(row["nspname"])
        if made is not None and made < now - KEPT_FOR:
            await pool.execute(f'DROP SCHEMA "{row["nspname"]}" CASCADE')
            old.append(row["nspname"])
    return tuple(old)


@asynccontextmanager
async def fresh_schema_pool(settings: Settings) -> AsyncIterator[tuple[asyncpg.Pool, DemoDatabase]]:
    """A migrated pool on a schema made for this run (see the module's doc)."""
    now = datetime.now(UTC)
    schema = f"{PREFIX}{now.strftime(_STAMP)}_{secrets.token_hex(3)}"
    async with database_url(settings) as url:
        admin = await connect(url)
        try:
            dropped = await _drop_old(admin, now)
            await admin.execute(f'CREATE SCHEMA "{schema}"')
        finally:
            await admin.close()
        pool = await connect(with_search_path(url, schema))
        try:
            async with pool.acquire() as connection:
                await migrate(connection)
            shown = mask_url(with_search_path(url, schema)) if settings.database_url else None
            yield pool, DemoDatabase(schema, shown, dropped)
        finally:
            await pool.close()
