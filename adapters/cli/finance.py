"""`ledger projections rebuild|status` and `ledger reconcile report`: finance's and operators'
commands over the read models."""

from __future__ import annotations

import asyncio
import csv
import io
import sys
from collections.abc import Sequence

import asyncpg
import click

from adapters.cli.database import open_checked_pool
from adapters.cli.errors import ExitCode, UsageError
from adapters.cli.options import common_options, settings
from adapters.cli.rebuild import rebuild as rebuild_in_workers
from adapters.cli.tables import format_table
from adapters.config import PROVIDER_IDS, Settings
from adapters.storage.read_models import all_projections
from adapters.storage.read_models.items import ITEM_COLUMNS, ReconciliationItem, item_cells
from adapters.storage.read_models.readers import reconciliation_items_all
from adapters.storage.read_models.rebuild import default_workers
from adapters.storage.read_models.runner import ProjectionRunner
from projections.findings import Reason

AMOUNT_COLUMNS = frozenset({"expected", "received", "provider_reported", "difference"})
REASONS = tuple(reason.value for reason in Reason)


@click.group("projections")
@common_options
def projections_group() -> None:
    """Read models: rebuild them from the log, see how far behind they are."""


@projections_group.command("rebuild")
@click.argument("name", required=False)
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    default=None,
    help="Worker processes (default: one per projection, at most one per CPU).",
)
@common_options
def rebuild_command(name: str | None, jobs: int | None) -> int:
    """Replay the log into one read model NAME (default: every one, in parallel)."""
    return asyncio.run(rebuild(settings(), name, jobs))


@projections_group.command("status")
@common_options
def status_command() -> int:
    """Each projection's position, the log's head and the lag."""
    return asyncio.run(status(settings()))


async def status(settings: Settings) -> int:
    async with open_checked_pool(settings) as pool:
        runner = ProjectionRunner(pool, all_projections(), batch_size=2000)
        print(f"{'projection':<15} {'position':>10} {'head':>10} {'lag':>8}  failure")
        for each in await runner.status():
            print(
                f"{each.name:<15} {each.position:>10} {each.head:>10}"
                f" {each.lag:>8}  {each.failure or ''}"
            )
    return ExitCode.OK


async def rebuild(settings: Settings, name: str | None, jobs: int | None = None) -> int:
    known = [projection.name for projection in all_projections()]
    if name is not None and name not in known:
        raise UsageError(f"unknown projection {name!r}; known: {', '.join(known)}")
    names = [name] if name else known
    return await rebuild_in_workers(settings, names, jobs or default_workers(len(names)))


@projections_group.command("run")
@common_options
def run_command() -> int:
    """Keep every projection caught up until SIGINT/SIGTERM: the runner `ledger serve` runs
    (by default in a child process), on its own, e.g. beside a service configured with
    projections_worker = "off"."""
    return asyncio.run(run_projections_until_stopped(settings()))


async def run_projections_until_stopped(settings: Settings) -> int:
    # Imported here: the other commands need neither the service's supervisor nor the child.
    from adapters.cli.service import stop_on_signals  # noqa: PLC0415
    from adapters.http.background import Backoff  # noqa: PLC0415
    from adapters.http.projection_child import run_projections  # noqa: PLC0415

    stop = asyncio.Event()
    backoff = Backoff(
        settings.background_restart_seconds_min, settings.background_restart_seconds_max
    )
    async with open_checked_pool(settings) as pool:

        async def opened() -> asyncpg.Pool:
            return pool

        with stop_on_signals(stop):
            print("projections running; SIGINT or SIGTERM stops them", flush=True)
            await run_projections(opened, backoff, stop)
    print("projections stopped", flush=True)
    return ExitCode.OK


@click.group("reconcile")
@common_options
def reconcile_group() -> None:
    """Reconciliation."""


@reconcile_group.command("report")
@click.option("--format", "output_format", type=click.Choice(["table", "csv"]), default="table")
@click.option("--reason", metavar="REASON", help="Only items of this reason.")
@click.option("--provider", metavar="PROVIDER", help="Only items at this provider.")
@click.option("--all", "include_cleared", is_flag=True, help="Cleared items too.")
@common_options
def report_command(
    output_format: str, reason: str | None, provider: str | None, include_cleared: bool
) -> int:
    """Reconciliation items, open ones unless --all (the projection is caught up first)."""
    if reason is not None and reason not in REASONS:
        raise UsageError(f"unknown reason {reason!r}; known: {', '.join(REASONS)}")
    if provider is not None and provider not in PROVIDER_IDS:
        raise UsageError(f"unknown provider {provider!r}; known: {', '.join(PROVIDER_IDS)}")
    return asyncio.run(report(settings(), output_format, reason, provider, include_cleared))


def render_items(rows: Sequence[asyncpg.Record], output_format: str) -> str:
    """The items as CSV or a plain table, cells as every reader renders them (`item_cells`)."""
    table = [
        [cell or "" for cell in item_cells(ReconciliationItem.from_row(row)).values()]
        for row in rows
    ]
    if output_format == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(ITEM_COLUMNS)
        writer.writerows(table)
        return buffer.getvalue()
    lines = format_table(ITEM_COLUMNS, table, AMOUNT_COLUMNS)
    return "\n".join(lines) + f"\n{len(table)} items\n"


async def report(
    settings: Settings,
    output_format: str,
    reason: str | None,
    provider: str | None,
    include_cleared: bool,
) -> int:
    async with open_checked_pool(settings) as pool:
        runner = ProjectionRunner(pool, all_projections(), batch_size=2000)
        await runner.catch_up(["reconciliation"])
        rows = await reconciliation_items_all(
            pool, reason=reason, provider=provider, include_cleared=include_cleared
        )
        sys.stdout.write(render_items(rows, output_format))
    return ExitCode.OK
