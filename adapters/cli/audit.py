"""`ledger audit export|verify`: export the log from the database, verify an export offline
(no database at all), or verify the live log.

Every failure is one line and an exit status: an auditor reads verdicts, not tracebacks.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from adapters.audit.export import ExportRange, count_rows, export_pages
from adapters.audit.offline import ExportBroken, verify_export
from adapters.audit.signing import KeyUnreadable, public_key_of_pem
from adapters.config import Settings
from ledger.audit_files import csv_lines, read_rows
from ledger.audit_rows import jsonl_line_of, row_of
from ledger.checkpoints import CheckpointUnreadable, read_checkpoints
from ledger.errors import HashChainBroken
from ledger.hashchain import GENESIS_HASH, verify_chain


def add_commands(commands: argparse._SubParsersAction, config: argparse.ArgumentParser) -> None:  # type: ignore[type-arg]
    audit = commands.add_parser("audit", parents=[config], help="audit trail")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True)
    export = audit_commands.add_parser(
        "export", parents=[config], help="export the event log (JSON Lines or CSV)"
    )
    export.add_argument("--after", type=int, default=0, help="positions after this one")
    export.add_argument("--before", type=int, help="positions before this one")
    export.add_argument("--stream", help="only this stream's events")
    export.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    export.add_argument("--output", type=Path, help="file to write (default: standard output)")
    verify = audit_commands.add_parser(
        "verify",
        parents=[config],
        help="verify an export FILE offline, or without FILE the live log",
    )
    verify.add_argument("file", nargs="?", help="an export (JSON Lines or CSV); - reads stdin")
    verify.add_argument("--checkpoints", type=Path, help="signed checkpoints (JSON) to hold it to")
    verify.add_argument("--public-key", type=Path, help="the ledger's Ed25519 public key (PEM)")
    verify.add_argument(
        "--partial",
        action="store_true",
        help="an export filtered by --stream: check each row's hash, not that rows follow",
    )


class Progress:
    """A counter on stderr, redrawn in place on a terminal and every 10% elsewhere (a log)."""

    def __init__(self, what: str, total: int | None) -> None:
        self.what = what
        self.total = total
        self.done = 0
        self._tty = sys.stderr.isatty()
        self._last_tenth = 0

    def advance(self, count: int) -> None:
        self.done += count
        of = f"/{self.total}" if self.total else ""
        if self._tty:
            sys.stderr.write(f"\r{self.what} {self.done}{of} events")
            sys.stderr.flush()
        elif self.total:
            tenth = self.done * 10 // self.total
            if tenth > self._last_tenth:
                self._last_tenth = tenth
                sys.stderr.write(f"{self.what} {self.done}{of} events\n")

    def finish(self) -> None:
        if self._tty:
            sys.stderr.write("\n")


async def run_export(arguments: argparse.Namespace, settings: Settings) -> int:
    from adapters.cli.database import open_pool  # noqa: PLC0415 - only the export needs a database

    wanted = ExportRange(after=arguments.after, before=arguments.before, stream=arguments.stream)
    with contextlib.ExitStack() as files:
        output: IO[str] = (
            files.enter_context(arguments.output.open("w", encoding="utf-8", newline=""))
            if arguments.output
            else sys.stdout
        )
        async with open_pool(settings) as pool, pool.acquire() as connection:
            progress = Progress("exported", await count_rows(connection, wanted))
            if arguments.format == "csv":
                output.write(csv_lines([], header=True))
            async with contextlib.aclosing(export_pages(connection, wanted)) as pages:
                async for page in pages:
                    if arguments.format == "csv":
                        output.write(csv_lines([row_of(event) for event in page], header=False))
                    else:
                        output.writelines(jsonl_line_of(event) for event in page)
                    progress.advance(len(page))
        progress.finish()
    sys.stderr.write(f"exported {progress.done} events\n")
    return 0


def _lines(name: str, files: contextlib.ExitStack) -> Iterator[str]:
    # newline="": CSV cells keep their own line ends, and RFC 4180's CRLF reads as one.
    if name == "-":
        return io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", newline="")
    return files.enter_context(Path(name).open(encoding="utf-8", newline=""))


def verify_file(arguments: argparse.Namespace) -> int:
    """Offline: reads only the files named. Prints one line; 0 when all holds, else 1."""
    try:
        checkpoints = []
        key = None
        if arguments.public_key is not None:
            key = public_key_of_pem(arguments.public_key.read_bytes())
        if arguments.checkpoints is not None:
            checkpoints = read_checkpoints(arguments.checkpoints.read_text(encoding="utf-8"))
        with contextlib.ExitStack() as files:
            verified = verify_export(
                read_rows(_lines(arguments.file, files)),
                checkpoints=checkpoints,
                public_key=key,
                continuous=not arguments.partial,
            )
    except ExportBroken as broken:
        print(f"export NOT verified: {broken}")
        return 1
    except (OSError, UnicodeDecodeError, KeyUnreadable, CheckpointUnreadable) as unreadable:
        print(f"export NOT verified: cannot read the input: {unreadable}")
        return 1
    except Exception as error:  # noqa: BLE001 - a verdict, never a traceback, whatever the file holds
        print(f"export NOT verified: the input is not an export ({error!r})")
        return 1
    if verified.rows == 0:
        print("export verified: 0 events (the file holds no rows)")
        return 0
    print(
        f"export verified: {verified.rows} events, positions {verified.first_position}"
        f"-{verified.last_position}, head {verified.head_hash},"
        f" {verified.checkpoints} of {len(checkpoints)} checkpoints matched"
    )
    return 0


async def verify_live(settings: Settings) -> int:
    from adapters.cli.database import open_pool  # noqa: PLC0415 - only this check needs a database
    from adapters.storage.postgres_store import PostgresEventStore  # noqa: PLC0415

    async with open_pool(settings) as pool:
        store = PostgresEventStore(pool)
        progress = Progress("verified", (await store.head()).position)
        previous, checked = GENESIS_HASH, 0
        try:
            async for batch in store.read_log(0):
                checked += verify_chain(batch, start_hash=previous)
                previous = batch[-1].hash
                progress.advance(len(batch))
        except HashChainBroken as broken:
            progress.finish()
            print(f"log NOT verified: {broken}")
            return 1
        progress.finish()
        print(f"hash chain verified: {checked} events, head {previous.hex()}")
        return 0


def run_audit(arguments: argparse.Namespace, settings: Settings) -> int:
    if arguments.audit_command == "export":
        return asyncio.run(run_export(arguments, settings))
    if arguments.file is not None:
        return verify_file(arguments)
    return asyncio.run(verify_live(settings))
