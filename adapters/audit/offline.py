"""Verifying an export offline: no database, only the file, optionally checkpoints and a key.

What is checked, in file order: every row is readable; positions follow one another with no gap
(a deleted or moved row shows as the position that should have come next); each row's prev_hash
is the previous row's hash (the first row's prev_hash is the anchor: the hash at `after`); each
hash is recomputed from the row with ledger/hashchain.py. Then each checkpoint's signature must
hold under the public key, and the export's hash at the checkpoint's position must equal the
checkpoint's. The first failure is reported with the position it concerns; nothing else is.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from adapters.audit.signing import signature_holds
from ledger.audit_rows import AuditRow, RowUnreadable, recorded_of
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
