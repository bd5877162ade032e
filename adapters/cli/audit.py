"""`ledger audit export|verify`: export the log from the database, verify an export offline
(no database at all), or verify the live log.

Every failure is one line and an exit status: an auditor reads verdicts, not tracebacks.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import click

from adapters.audit.export import ExportRange, count_rows, export_pages
from adapters.audit.offline import ExportBroken, verify_export
from adapters.audit.signing import KeyUnreadable, public_key_of_pem
from adapters.cli.errors import ExitCode
from adapters.cli.options import common_options, settings
from adapters.cli.progress import event_progress
from adapters.config import Settings
from ledger.audit_files import csv_lines, read_rows
from ledger.audit_rows import jsonl_line_of, row_of
from ledger.checkpoints import CheckpointUnreadable, read_checkpoints
from ledger.errors import HashChainBroken
from ledger.hashchain import GENESIS_HASH, verify_chain


@click.group("audit")
@common_options
def audit_group() -> None:
    """Audit trail: export the log, verify an export offline or the live log."""


@audit_group.command("export")
@click.option("--after", type=int, default=0, help="Positions after this one.")
@click.option("--before", type=int, help="Positions before this one.")
@click.option("--stream", help="Only this stream's events.")
@click.option("--format", "output_format", type=click.Choice(["jsonl", "csv"]), default="jsonl")
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="File to write (default: standard output).",
)
@common_options
def export_command(
    after: int, before: int | None, stream: str | None, output_format: str, output: Path | None
) -> int:
    """Export the event log (JSON Lines or CSV)."""
    wanted = ExportRange(after=after, before=before, stream=stream)
    return asyncio.run(run_export(settings(), wanted, output_format, output))


@audit_group.command("verify")
@click.argument("file", required=False)
@click.option(
    "--checkpoints",
    type=click.Path(path_type=Path),
    help="Signed checkpoints (JSON) to hold the export to.",
)
@click.option(
    "--public-key", type=click.Path(path_type=Path), help="The ledger's Ed25519 public key (PEM)."
)
@click.option(
    "--partial",
    is_flag=True,
    help="An export filtered by --stream: check each row's hash, not that rows follow.",
)
@common_options
def verify_command(
    file: str | None, checkpoints: Path | None, public_key: Path | None, partial: bool
) -> int:
    """Verify an export FILE offline (- reads stdin; no database), or without FILE the live
    log. Exit 1 when the chain does not hold."""
    if file is not None:
        return verify_file(file, checkpoints, public_key, partial=partial)
    return asyncio.run(verify_live(settings()))


async def run_export(
    settings: Settings, wanted: ExportRange, output_format: str, path: Path | None
) -> int:
    from adapters.cli.database import open_checked_pool  # noqa: PLC0415 - the export's alone

    with contextlib.ExitStack() as files:
        output: IO[str] = (
            files.enter_context(path.open("w", encoding="utf-8", newline=""))
            if path is not None
            else sys.stdout
        )
        async with open_checked_pool(settings) as pool, pool.acquire() as connection:
            total = await count_rows(connection, wanted)
            with event_progress("exported", total) as progress:
                if output_format == "csv":
                    output.write(csv_lines([], header=True))
                async with contextlib.aclosing(export_pages(connection, wanted)) as pages:
                    async for page in pages:
                        if output_format == "csv":
                            output.write(csv_lines([row_of(e) for e in page], header=False))
                        else:
                            output.writelines(jsonl_line_of(event) for event in page)
                        progress.advance(len(page))
    sys.stderr.write(f"exported {progress.done} events\n")
    return ExitCode.OK


def _lines(name: str, files: contextlib.ExitStack) -> Iterator[str]:
    # newline="": CSV cells keep their own line ends, and RFC 4180's CRLF reads as one.
    if name == "-":
        return io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", newline="")
    return files.enter_context(Path(name).open(encoding="utf-8", newline=""))


def verify_file(
    name: str, checkpoints_path: Path | None, public_key: Path | None, *, partial: bool
) -> int:
    """Offline: reads only the files named. Prints one line; 0 when all holds, else 1."""
    try:
        checkpoints = []
        key = None
        if public_key is not None:
            key = public_key_of_pem(public_key.read_bytes())
        if checkpoints_path is not None:
            checkpoints = read_checkpoints(checkpoints_path.read_text(encoding="utf-8"))
        with contextlib.ExitStack() as files:
            verified = verify_export(
                read_rows(_lines(name, files)),
                checkpoints=checkpoints,
                public_key=key,
                continuous=not partial,
            )
    except ExportBroken as broken:
        print(f"export NOT verified: {broken}")
        return ExitCode.CHECK_FAILED
    except (OSError, UnicodeDecodeError, KeyUnreadable, CheckpointUnreadable) as unreadable:
        print(f"export NOT verified: cannot read the input: {unreadable}")
        return ExitCode.CHECK_FAILED
    except Exception as error:  # noqa: BLE001 - a verdict, never a traceback, whatever the file holds
        print(f"export NOT verified: the input is not an export ({error!r})")
        return ExitCode.CHECK_FAILED
    if verified.rows == 0:
        print("export verified: 0 events (the file holds no rows)")
        return ExitCode.OK
    print(
        f"export verified: {verified.rows} events, positions {verified.first_position}"
        f"-{verified.last_position}, head {verified.head_hash},"
        f" {verified.checkpoints} of {len(checkpoints)} checkpoints matched"
    )
    return ExitCode.OK


async def verify_live(settings: Settings) -> int:
    from adapters.cli.database import open_checked_pool  # noqa: PLC0415 - this check's alone
    from adapters.storage.postgres_store import PostgresEventStore  # noqa: PLC0415

    async with open_checked_pool(settings) as pool:
        store = PostgresEventStore(pool)
        previous, checked = GENESIS_HASH, 0
        broken_at: HashChainBroken | None = None
        with event_progress("verified", (await store.head()).position) as progress:
            try:
                async for batch in store.read_log(0):
                    checked += verify_chain(batch, start_hash=previous)
                    previous = batch[-1].hash
                    progress.advance(len(batch))
            except HashChainBroken as broken:
                broken_at = broken
        if broken_at is not None:
            print(f"log NOT verified: {broken_at}")
            return ExitCode.CHECK_FAILED
        print(f"hash chain verified: {checked} events, head {previous.hex()}")
        return ExitCode.OK
