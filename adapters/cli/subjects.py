"""`ledger payments show` and `ledger withdrawals show`: one subject's timeline, found by its id
or by the merchant's (or provider's) reference, as a table or as JSON."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import click

from adapters.cli.database import open_checked_pool
from adapters.cli.errors import CliError, ExitCode
from adapters.cli.options import common_options, settings
from adapters.cli.tables import format_table
from adapters.config import Settings
from adapters.storage.read_models.items import instant_cell
from adapters.storage.read_models.timelines import Timeline, find_subjects, timeline

SHORT_HASH = 12  # hex digits of a hash in the table; --json has all 64
_REFERENCES = {"payment": "order id", "withdrawal": "request id"}


async def _timeline(settings: Settings, subject_type: str, key: str) -> Timeline:
    async with open_checked_pool(settings) as pool, pool.acquire() as connection:
        found = await find_subjects(connection, subject_type, key)
        if not found:
            raise CliError(f"no {subject_type} with id or {_REFERENCES[subject_type]} {key!r}")
        if len(found) > 1:
            raise CliError(
                f"{_REFERENCES[subject_type]} {key!r} names {len(found)} {subject_type}s"
                f" ({', '.join(found)}); give the id or PROVIDER:{key}"
            )
        return await timeline(connection, subject_type, found[0])


def timeline_document(found: Timeline) -> dict[str, Any]:
    return {
        "subject_type": found.subject_type,
        "id": found.subject_id,
        "provider": found.provider,
        _REFERENCES[found.subject_type].replace(" ", "_"): found.reference,
        "events": [
            {
                "position": entry.position,
                "version": entry.version,
                "type": entry.type,
                "recorded_at": instant_cell(entry.recorded_at),
                "verification": entry.verification,
                "amounts": entry.amounts,
                "hash": entry.hash.hex(),
            }
            for entry in found.entries
        ],
    }


def timeline_lines(found: Timeline) -> list[str]:
    title = (
        f"{found.subject_type} {found.subject_id} at {found.provider},"
        f" {_REFERENCES[found.subject_type]} {found.reference}: {len(found.entries)} events"
    )
    rows = [
        [
            str(entry.version),
            instant_cell(entry.recorded_at) or "",
            entry.type,
            entry.verification or "",
            ", ".join(f"{name} {amount}" for name, amount in entry.amounts.items()),
            entry.hash.hex()[:SHORT_HASH],
        ]
        for entry in found.entries
    ]
    headers = ["#", "time", "type", "verification", "amounts", "hash"]
    return [title, "", *format_table(headers, rows, frozenset({"#"}))]


def _show(subject_type: str, key: str, as_json: bool) -> int:
    found = asyncio.run(_timeline(settings(), subject_type, key))
    if as_json:
        click.echo(json.dumps(timeline_document(found), indent=2))
    else:
        click.echo("\n".join(timeline_lines(found)))
    return ExitCode.OK


@click.group("payments")
@common_options
def payments_group() -> None:
    """Payments."""


@payments_group.command("show")
@click.argument("key", metavar="ID|ORDER_ID")
@click.option("--json", "as_json", is_flag=True, help="JSON, with full hashes.")
@common_options
def show_payment(key: str, as_json: bool) -> int:
    """A payment's timeline: each event's time, type, verification (deliveries), amounts and
    hash. Exit 1 when no payment has that id or order id."""
    return _show("payment", key, as_json)


@click.group("withdrawals")
@common_options
def withdrawals_group() -> None:
    """Withdrawals."""


@withdrawals_group.command("show")
@click.argument("key", metavar="ID|REQUEST_ID")
@click.option("--json", "as_json", is_flag=True, help="JSON, with full hashes.")
@common_options
def show_withdrawal(key: str, as_json: bool) -> int:
    """A withdrawal's timeline: each event's time, type, verification (deliveries), amounts and
    hash. Exit 1 when no withdrawal has that id or request id."""
    return _show("withdrawal", key, as_json)
