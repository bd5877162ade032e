"""Numbered SQL migrations, applied in order by `ledger db migrate`, `ledger serve` and
`ledger demo`; every other command only asks which are pending (`pending_migrations`, read-only)
and refuses a database that is behind.

An advisory lock makes concurrent starters take turns; each migration commits with its row in
`schema_migrations`, so a failed one leaves nothing half-applied.
"""

from __future__ import annotations

import logging
from importlib import resources

from adapters.storage.postgres_store import AnyConnection

log = logging.getLogger(__name__)
_LOCK_KEY = 7_343_001  # any constant shared by every process of this service


def available_migrations() -> list[tuple[int, str, str]]:
    folder = resources.files("adapters.storage") / "migrations"
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            number = int(entry.name.split("_", 1)[0])
            found.append((number, entry.name, entry.read_text()))
    return sorted(found)


async def pending_migrations(connection: AnyConnection) -> list[str]:
    """The names of the migrations not applied yet, in order; every one of them on a database
    never migrated. Reads only: it creates nothing and takes no lock."""
    # to_regclass follows the connection's search_path, as the migrations themselves do.
    if await connection.fetchval("SELECT to_regclass('schema_migrations')") is None:
        return [name for _, name, _ in available_migrations()]
    done = {r["version"] for r in await connection.fetch("SELECT version FROM schema_migrations")}
    return [name for number, name, _ in available_migrations() if number not in done]


async def migrate(connection: AnyConnection) -> list[str]:
    """Applies what is missing; returns the names applied."""
    await connection.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        await connection.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {
            r["version"] for r in await connection.fetch("SELECT version FROM schema_migrations")
        }
        applied = []
        for number, name, sql in available_migrations():
            if number in done:
                continue
            async with connection.transaction():
                await connection.execute(sql)
                await connection.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", number, name
                )
            log.info("applied migration %s", name)
            applied.append(name)
        return applied
    finally:
        await connection.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
