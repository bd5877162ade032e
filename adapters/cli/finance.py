"""`ledger projections rebuild|status` and `ledger reconcile report`: finance's and operators'
commands over the read models."""

from __future__ import annotations

import argparse
import csv
import io
import sys
import time
from decimal import Decimal
from typing import Any

import asyncpg

from adapters.cli.database import open_pool
from adapters.cli.tables import format_table
from adapters.config import Settings
from adapters.storage.read_models import all_projections
from adapters.storage.read_models.readers import reconciliation_items_all
from adapters.storage.read_models.runner import ProjectionRunner

BAR_WIDTH = 30
AMOUNT_COLUMNS = frozenset({"expected", "received", "provider_reported", "difference"})
ITEM_COLUMNS = (
    "reason",
    "provider",
    "subject_type",
    "subject_id",
    "currency",
    "expected",
    "received",
    "provider_reported",
    "difference",
    "detected_at",
    "cleared_at",
)


def add_commands(commands: Any, config: argparse.ArgumentParser) -> None:
    projections = commands.add_parser("projections", parents=[config], help="read models")
    projection_commands = projections.add_subparsers(dest="projections_command", required=True)
    rebuild = projection_commands.add_parser("rebuild", help="replay the log into a read model")
    rebuild.add_argument("name", nargs="?", help="one projection (default: every one)")
    projection_commands.add_parser("status", help="each projection's position and lag")
    reconcile = commands.add_parser("reconcile", parents=[config], help="reconciliation")
    reconcile_commands = reconcile.add_subparsers(dest="reconcile_command", required=True)
    report = reconcile_commands.add_parser("report", help="reconciliation items")
    report.add_argument("--format", choices=["table", "csv"], default="table")
    report.add_argument("--reason")
    report.add_argument("--provider")
    report.add_argument("--all", action="store_true", help="cleared items too")


class ProgressBar:
    """A one-line bar on stderr, redrawn at most ten times a second."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.started = time.monotonic()
        self.drawn = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self.drawn < 0.1 and done < total:
            return
        self.drawn = now
        share = done / total if total else 1.0
        filled = int(BAR_WIDTH * min(share, 1.0))
        rate = done / max(now - self.started, 1e-9)
        bar = "#" * filled + "." * (BAR_WIDTH - filled)
        sys.stderr.write(
            f"\r{self.label:<15} [{bar}] {share:6.1%} {done:,}/{total:,} events {rate:,.0f}/s"
        )
        sys.stderr.flush()

    def finish(self) -> None:
        sys.stderr.write("\n")


async def run_projections(arguments: argparse.Namespace, settings: Settings) -> bool:
    async with open_pool(settings) as pool:
        runner = ProjectionRunner(pool, all_projections(), batch_size=2000)
        if arguments.projections_command == "status":
            print(f"{'projection':<15} {'position':>10} {'head':>10} {'lag':>8}  failure")
            for status in await runner.status():
                print(
                    f"{status.name:<15} {status.position:>10} {status.head:>10}"
                    f" {status.lag:>8}  {status.failure or ''}"
                )
            return True
        names = [arguments.name] if arguments.name else list(runner.projections)
        unknown = sorted(set(names) - set(runner.projections))
        if unknown:
            print(f"unknown projections {unknown}; known: {sorted(runner.projections)}")
            return False
        for name in names:
            bar = ProgressBar(name)
            done = await runner.rebuild(name, bar)
            bar(done, done)
            bar.finish()
        return True


def render_items(rows: list[asyncpg.Record], output_format: str) -> str:
    def cell(value: Any) -> str:
        if value is None:
            return ""
        if isinstance(value, Decimal):
            return format(value, "f")  # 0E-8 reads as 0.00000000, at the currency's scale
        return value.isoformat() if hasattr(value, "isoformat") else str(value)

    table = [[cell(row[c]) for c in ITEM_COLUMNS] for row in rows]
    if output_format == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(ITEM_COLUMNS)
        writer.writerows(table)
        return buffer.getvalue()
    lines = format_table(ITEM_COLUMNS, table, AMOUNT_COLUMNS)
    return "\n".join(lines) + f"\n{len(table)} items\n"


async def run_reconcile(arguments: argparse.Namespace, settings: Settings) -> bool:
    async with open_pool(settings) as pool:
        runner = ProjectionRunner(pool, all_projections(), batch_size=2000)
        await runner.catch_up(["reconciliation"])
        rows = await reconciliation_items_all(
            pool,
            reason=arguments.reason,
            provider=arguments.provider,
            include_cleared=arguments.all,
        )
        sys.stdout.write(render_items(rows, arguments.format))
    return True
