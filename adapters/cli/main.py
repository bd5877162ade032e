"""The `ledger` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path

from adapters.cli.database import open_pool
from adapters.config import Settings, load_settings
from adapters.storage.migrate import migrate
from adapters.storage.postgres_store import PostgresEventStore


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ledger", description="Event-sourced payment ledger")
    parser.add_argument("--config", type=Path, help="TOML configuration file")
    parser.add_argument("-v", "--verbose", action="store_true")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "demo", help="run the demo scenarios on the embedded (or configured) database"
    )
    database = commands.add_parser("db", help="database maintenance")
    database_commands = database.add_subparsers(dest="db_command", required=True)
    database_commands.add_parser("migrate", help="apply pending schema migrations")
    audit = commands.add_parser("audit", help="audit trail")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True)
    audit_commands.add_parser("verify", help="verify the hash chain over the whole log")
    return parser


async def _demo(settings: Settings) -> None:
    from adapters.cli.demo import run_demo  # noqa: PLC0415 - only the demo needs its scenarios

    async with open_pool(settings) as pool:
        await run_demo(PostgresEventStore(pool))


async def _migrate(settings: Settings) -> None:
    async with open_pool(settings) as pool, pool.acquire() as connection:
        applied = await migrate(connection)
        print("applied: " + (", ".join(applied) if applied else "nothing (up to date)"))


async def _verify(settings: Settings) -> None:
    from ledger.hashchain import GENESIS_HASH, verify_chain  # noqa: PLC0415

    async with open_pool(settings) as pool:
        store = PostgresEventStore(pool)
        previous, checked = GENESIS_HASH, 0
        async for batch in store.read_log(0):
            checked += verify_chain(batch, start_hash=previous)
            previous = batch[-1].hash
        print(f"hash chain verified: {checked} events, head {previous.hex()}")


def main(argv: list[str] | None = None) -> None:
    arguments = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if arguments.verbose else logging.WARNING)
    settings = load_settings(arguments.config)
    if arguments.command == "demo":
        asyncio.run(_demo(settings))
    elif arguments.command == "db":
        asyncio.run(_migrate(settings))
    elif arguments.command == "audit":
        asyncio.run(_verify(settings))


if __name__ == "__main__":
    main()
