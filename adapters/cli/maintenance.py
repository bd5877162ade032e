"""`ledger db migrate` and `ledger demo`: the two commands besides `serve` that change the
database's schema."""

from __future__ import annotations

import asyncio

import click

from adapters.cli.database import open_unchecked_pool
from adapters.cli.errors import ExitCode
from adapters.cli.options import common_options, settings
from adapters.config import Settings
from adapters.storage.migrate import migrate


@click.group("db")
@common_options
def database_group() -> None:
    """Database maintenance."""


async def _migrate(settings: Settings) -> list[str]:
    async with open_unchecked_pool(settings) as pool, pool.acquire() as connection:
        return await migrate(connection)


@database_group.command("migrate")
@common_options
def migrate_command() -> int:
    """Apply pending schema migrations and list them."""
    applied = asyncio.run(_migrate(settings()))
    if not applied:
        click.echo("applied: nothing (up to date)")
    for name in applied:
        click.echo(f"applied: {name}")
    return ExitCode.OK


@click.command("demo")
@click.option(
    "--serve",
    "keep_serving",
    is_flag=True,
    help="after the report, keep the ledger (API and finance console) serving the demo's data"
    " until Ctrl-C",
)
@common_options
def demo_command(*, keep_serving: bool) -> int:
    """Payments and withdrawals through the five provider sandboxes over HTTP (exit 1 if any
    step or webhook failed)."""
    from adapters.cli.demo import run_demo  # noqa: PLC0415 - the demo pulls in every provider

    succeeded = asyncio.run(run_demo(settings(), keep_serving=keep_serving))
    return ExitCode.OK if succeeded else ExitCode.CHECK_FAILED
