"""Verifying an export offline: no database, only the file, optionally checkpoints and a key.

What is checked, in file order: every row is readable; positions follow one another with no gap
(a deleted or moved row shows as the position that should have come next); each row's prev_hash
is the previous row's hash (the first row's prev_hash is the anchor: the hash at `after`); each
hash is recomputed from the row with ledger/hashchain.py. Then each checkpoint's signature must
hold under the public key, and the export's hash at the checkpoint's position must equal the
checkpoint's. The first failure is reported with the position it concerns; nothing else is.
"""

from __future__ import annotations

import itertools
import os
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from adapters.audit.signing import signature_holds
from ledger.audit_files import JsonlRows
from ledger.audit_json import canonical_plain
from ledger.audit_rows import (
    AuditRow,
    RowUnreadable,
    document_from_line,
    payload_bytes,
    recorded_of,
)
from ledger.checkpoints import Checkpoint
from ledger.hashchain import canonical_bytes, chain_hash


class ExportBroken(Exception):
    """The first thing wrong with an export. `position` is the log position concerned (None
    when the fault is the file's, e.g. an unreadable line, or a checkpoint's)."""

    def __init__(self, position: int | None, reason: str) -> None:
        where = f"position {position}" if position is not None else "export"
        super().__init__(f"{where}: {reason}")
        self.position = position
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ExportVerified:
    rows: int
    first_position: int | None
    last_position: int | None
    head_hash: str | None
    checkpoints: int


def _recomputed_hash(row: AuditRow) -> bytes:
    try:
        event = recorded_of(row)
    except ValueError as error:
        raise ExportBroken(row.position, f"row does not decode ({error})") from error
    canonical = canonical_bytes(
        partition=event.partition,
        position=event.position,
        stream_id=event.stream_id,
        version=event.version,
        event_type=event.type,
        payload=event.payload,
        metadata=event.metadata,
        recorded_at=event.recorded_at,
    )
    return chain_hash(event.prev_hash, canonical)


def verify_rows(
    rows: Iterable[AuditRow],
    *,
    continuous: bool = True,
    keep_positions: frozenset[int] = frozenset(),
) -> tuple[ExportVerified, dict[int, str]]:
    """Checks rows as they stream by (memory stays flat); returns the counts and the hashes
    at `keep_positions` (the checkpoints' positions). `continuous=False` is for an export
    filtered by stream: each row's hash is still recomputed, but rows need not follow."""
    previous: AuditRow | None = None
    first: int | None = None
    count = 0
    kept: dict[int, str] = {}
    try:
        for row in rows:
            if previous is not None and continuous:
                if row.partition != previous.partition:
                    raise ExportBroken(row.position, "row from another partition")
                if row.position != previous.position + 1:
                    expected = previous.position + 1
                    raise ExportBroken(
                        expected, f"row missing or out of order (found {row.position} next)"
                    )
                if row.prev_hash != previous.hash:
                    raise ExportBroken(row.position, "prev_hash is not the previous row's hash")
            if _recomputed_hash(row).hex() != row.hash:
                raise ExportBroken(row.position, "content does not match its hash")
            if row.position in keep_positions:
                kept[row.position] = row.hash
            first = row.position if first is None else first
            previous = row
            count += 1
    except RowUnreadable as error:
        raise ExportBroken(None, str(error)) from error
    last = previous.position if previous else None
    head = previous.hash if previous else None
    return ExportVerified(count, first, last, head, 0), kept


# JSON Lines are verified in chunks of lines, across processes when the file has more than one
# chunk: each chunk is checked on its own (every row but its first linked to the one before),
# then the chunks' boundaries are joined here in file order, so the first fault is still the
# one reported. At most _IN_FLIGHT chunks are read ahead: memory stays flat.
CHUNK_LINES = 20_000
_IN_FLIGHT = 4

# count, first (partition, position, prev_hash), last (partition, position, hash), kept hashes,
# first fault within the chunk (position or None, reason)
_Chunk = tuple[
    int,
    tuple[int, int, str] | None,
    tuple[int, int, str] | None,
    dict[int, str],
    tuple[int | None, str] | None,
]


def _row_hash(document: dict[str, Any], *, plain: bool) -> str:
    """The hash recomputed from a checked row document, as hex (what `_recomputed_hash` does)."""
    try:
        encoding = document["payload_encoding"]
        payload = (
            canonical_plain(document["payload"])
            if plain and encoding == "json"
            else payload_bytes(encoding, document["payload"])
        )
        recorded_at = datetime.fromisoformat(document["recorded_at"])
        prev_hash = bytes.fromhex(document["prev_hash"])
        bytes.fromhex(document["hash"])
    except ValueError as error:
        raise ExportBroken(document["position"], f"row does not decode ({error})") from error
    canonical = canonical_bytes(
        partition=document["partition"],
        position=document["position"],
        stream_id=document["stream_id"],
        version=document["version"],
        event_type=document["type"],
        payload=payload,
        metadata=document["metadata"],
        recorded_at=recorded_at,
        plain=plain,
    )
    return chain_hash(prev_hash, canonical).hex()


def _check_link(last: tuple[int, int, str], first: tuple[int, int, str]) -> None:
    """Raises what `verify_rows` raises when row `first` does not follow row `last`."""
    partition, position, prev_hash = first
    if partition != last[0]:
        raise ExportBroken(position, "row from another partition")
    if position != last[1] + 1:
        expected = last[1] + 1
        raise ExportBroken(expected, f"row missing or out of order (found {position} next)")
    if prev_hash != last[2]:
        raise ExportBroken(position, "prev_hash is not the previous row's hash")


def check_chunk(
    lines: list[str], first_line: int, keep_positions: frozenset[int], *, continuous: bool
) -> _Chunk:
    """The checks of `verify_rows` on a run of JSON Lines, but for the first row's link to the
    row before the chunk (the caller's to check)."""
    count = 0
    first: tuple[int, int, str] | None = None
    previous: dict[str, Any] | None = None
    kept: dict[int, str] = {}
    fault: tuple[int | None, str] | None = None
    try:
        for number, text in enumerate(lines, start=first_line):
            if not text.strip():
                continue
            row, plain = document_from_line(text, number)
            position = row["position"]
            if previous is None:
                first = (row["partition"], position, row["prev_hash"])
            elif continuous:
                _check_link(
                    (previous["partition"], previous["position"], previous["hash"]),
                    (row["partition"], position, row["prev_hash"]),
                )
            if _row_hash(row, plain=plain) != row["hash"]:
                _broken(position, "content does not match its hash")
            if position in keep_positions:
                kept[position] = row["hash"]
            previous = row
            count += 1
    except RowUnreadable as error:
        fault = (None, str(error))
    except ExportBroken as error:
        fault = (error.position, error.reason)
    last = (previous["partition"], previous["position"], previous["hash"]) if previous else None
    return count, first, last, kept, fault


def _broken(position: int, reason: str) -> None:
    raise ExportBroken(position, reason)


def _chunks(lines: Iterator[str]) -> Iterator[tuple[list[str], int]]:
    number = 1
    while chunk := list(itertools.islice(lines, CHUNK_LINES)):
        yield chunk, number
        number += len(chunk)


def verify_jsonl(
    lines: Iterator[str],
    *,
    continuous: bool = True,
    keep_positions: frozenset[int] = frozenset(),
    processes: int | None = None,
) -> tuple[ExportVerified, dict[int, str]]:
    """`verify_rows(read_jsonl(lines))`, the same checks in the same order, over `processes`
    worker processes (default: the CPUs, at most 4) once the file has more than one chunk."""
    chunks = _chunks(lines)
    head = list(itertools.islice(chunks, 2))
    workers = processes if processes is not None else min(4, os.cpu_count() or 1)
    if len(head) < 2 or workers < 2:
        results: Iterator[_Chunk] = (
            check_chunk(chunk, number, keep_positions, continuous=continuous)
            for chunk, number in itertools.chain(head, chunks)
        )
        return _joined(results, continuous=continuous)
    with ProcessPoolExecutor(workers) as pool:
        pending: deque[Future[_Chunk]] = deque()

        def results_in_order() -> Iterator[_Chunk]:
            for chunk, number in itertools.chain(head, chunks):
                pending.append(
                    pool.submit(check_chunk, chunk, number, keep_positions, continuous=continuous)
                )
                if len(pending) >= _IN_FLIGHT:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()

        try:
            return _joined(results_in_order(), continuous=continuous)
        finally:
            for future in pending:
                future.cancel()


def _joined(
    results: Iterator[_Chunk], *, continuous: bool
) -> tuple[ExportVerified, dict[int, str]]:
    count = 0
    first_position: int | None = None
    last: tuple[int, int, str] | None = None
    kept: dict[int, str] = {}
    for rows, first, chunk_last, chunk_kept, fault in results:
        if first is not None and last is not None and continuous:
            _check_link(last, first)
        if fault is not None:
            raise ExportBroken(*fault)
        if first is not None and first_position is None:
            first_position = first[1]
        count += rows
        kept |= chunk_kept
        last = chunk_last or last
    return ExportVerified(
        count, first_position, last[1] if last else None, last[2] if last else None, 0
    ), kept


def verify_export(
    rows: Iterable[AuditRow],
    *,
    checkpoints: Sequence[Checkpoint] = (),
    public_key: Ed25519PublicKey | None = None,
    continuous: bool = True,
) -> ExportVerified:
    """Raises ExportBroken at the first fault; returns what was verified."""
    if checkpoints and public_key is None:
        raise ExportBroken(None, "checkpoints need the public key to be checked")
    for checkpoint in checkpoints:
        # The signature first: a forged checkpoint says nothing about the export.
        if public_key is not None and not signature_holds(checkpoint, public_key):
            raise ExportBroken(
                checkpoint.position, "checkpoint signature does not verify under the public key"
            )
    wanted = frozenset(c.position for c in checkpoints)
    if isinstance(rows, JsonlRows) and rows.untouched:
        verified, hashes = verify_jsonl(rows.lines, continuous=continuous, keep_positions=wanted)
    else:
        verified, hashes = verify_rows(rows, continuous=continuous, keep_positions=wanted)
    for checkpoint in sorted(checkpoints, key=lambda c: c.position):
        if checkpoint.position not in hashes:
            continue  # outside the exported range: it speaks of rows the file does not hold
        if hashes[checkpoint.position] != checkpoint.hash:
            raise ExportBroken(
                checkpoint.position, "the export's hash differs from the signed checkpoint's"
            )
    matched = sum(1 for c in checkpoints if c.position in hashes)
    return ExportVerified(
        verified.rows, verified.first_position, verified.last_position, verified.head_hash, matched
    )
