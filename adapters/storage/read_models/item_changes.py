"""Reconciliation item changes of one batch, folded in memory and written in three statements.

Writing each open/update/clear as it happens costs a round trip per change, which made the
reconciliation projection the slowest of all. Per item key (subject, reason) the batch keeps the
changes to the row that was open before the batch (its last amounts, its clearing) and the rows
the batch itself opened (each possibly cleared again within the batch), then writes: updates and
clears of the pre-existing rows, and inserts of the new ones. The result equals applying the
changes one by one, since rows of one key only ever change in log order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from adapters.storage.postgres_store import AnyConnection
from ledger.ports import RecordedEvent
from projections.findings import Finding, Reason

ItemKey = tuple[str, str, str]  # subject_type, subject_id, reason


@dataclass(frozen=True, slots=True)
class Subject:
    type: str
    id: str
    provider: str
    # The merchant's reference (order id, request id) and the provider's, as the subject has them
    # at this event: an item carries them so finance can find the payment at either end.
    order_id: str | None = None
    provider_ref: str | None = None


@dataclass(slots=True)
class NewRow:
    subject: Subject
    finding: Finding
    detected_position: int
    detected_at: datetime
    updated_position: int
    cleared: tuple[datetime, int] | None = None


@dataclass(slots=True)
class KeyChanges:
    existing_update: tuple[Subject, Finding, int] | None = None
    existing_cleared: tuple[datetime, int] | None = None
    new_rows: list[NewRow] = field(default_factory=list)

    def open_new_row(self) -> NewRow | None:
        last = self.new_rows[-1] if self.new_rows else None
        return last if last is not None and last.cleared is None else None


class ItemChanges:
    def __init__(self) -> None:
        self._keys: dict[ItemKey, KeyChanges] = {}

    def _of(self, subject: Subject, reason: Reason) -> KeyChanges:
        return self._keys.setdefault((subject.type, subject.id, reason.value), KeyChanges())

    def open(self, event: RecordedEvent, subject: Subject, finding: Finding) -> None:
        row = NewRow(subject, finding, event.position, event.recorded_at, event.position)
        self._of(subject, finding.reason).new_rows.append(row)

    def update(self, event: RecordedEvent, subject: Subject, finding: Finding) -> None:
        changes = self._of(subject, finding.reason)
        row = changes.open_new_row()
        if row is not None:
            row.subject, row.finding, row.updated_position = subject, finding, event.position
        else:
            changes.existing_update = (subject, finding, event.position)

    def clear(self, event: RecordedEvent, subject: Subject, reason: Reason) -> None:
        changes = self._of(subject, reason)
        row = changes.open_new_row()
        if row is not None:
            row.cleared, row.updated_position = (event.recorded_at, event.position), event.position
        elif not changes.new_rows and changes.existing_cleared is None:
            # The first clearing wins, as it would with one event per batch (a later one finds
            # no open row: an unmatched delivery applied twice clears its item twice).
            changes.existing_cleared = (event.recorded_at, event.position)

    def open_in_batch(self, subject: Subject, reason: Reason) -> bool | None:
        """Whether the item is open as this batch left it; None when the batch did not touch it."""
        changes = self._keys.get((subject.type, subject.id, reason.value))
        if changes is None:
            return None
        if changes.new_rows:
            return changes.open_new_row() is not None
        return changes.existing_cleared is None

    async def write(self, connection: AnyConnection) -> None:
        updates: list[tuple[Any, ...]] = []
        clears: list[tuple[Any, ...]] = []
        inserts: list[tuple[Any, ...]] = []
        for (subject_type, subject_id, reason), changes in self._keys.items():
            if changes.existing_update is not None:
                subject, finding, position = changes.existing_update
                refs = (subject.order_id, subject.provider_ref)
                updates.append(
                    (subject_type, subject_id, reason, *_amounts(finding), position, *refs)
                )
            if changes.existing_cleared is not None:
                at, position = changes.existing_cleared
                clears.append((subject_type, subject_id, reason, at, position))
            inserts.extend(
                _insert_row(subject_type, subject_id, reason, row) for row in changes.new_rows
            )
        # Clear and update the rows open before the batch first: a row the batch opens again
        # for the same key must not meet the old one still open (one open row per key).
        # One statement each, the batch's rows as arrays (a key appears once per batch).
        if updates:
            await connection.execute(_UPDATE_OPEN, *_columns(updates))
        if clears:
            await connection.execute(_CLEAR_OPEN, *_columns(clears))
        if inserts:
            await connection.copy_records_to_table(
                "reconciliation_items", records=inserts, columns=INSERT_COLUMNS
            )


_UPDATE_OPEN = """
UPDATE reconciliation_items AS i SET expected = u.expected, received = u.received,
    provider_reported = u.provider_reported, provider_status = u.provider_status,
    difference = u.difference, updated_position = u.position, order_id = u.order_id,
    provider_ref = u.provider_ref
FROM unnest($1::text[], $2::text[], $3::text[], $4::numeric[], $5::numeric[], $6::numeric[],
            $7::text[], $8::numeric[], $9::bigint[], $10::text[], $11::text[])
    AS u(subject_type, subject_id, reason, expected, received, provider_reported,
         provider_status, difference, position, order_id, provider_ref)
WHERE i.subject_type = u.subject_type AND i.subject_id = u.subject_id AND i.reason = u.reason
    AND i.cleared_at IS NULL
"""

_CLEAR_OPEN = """
UPDATE reconciliation_items AS i SET cleared_at = c.at, cleared_position = c.position,
    updated_position = c.position
FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::bigint[])
    AS c(subject_type, subject_id, reason, at, position)
WHERE i.subject_type = c.subject_type AND i.subject_id = c.subject_id AND i.reason = c.reason
    AND i.cleared_at IS NULL
"""


def _columns(rows: list[tuple[Any, ...]]) -> list[list[Any]]:
    return [list(column) for column in zip(*rows, strict=True)]


INSERT_COLUMNS = [
    "subject_type",
    "subject_id",
    "reason",
    "detected_position",
    "provider",
    "currency",
    "expected",
    "received",
    "provider_reported",
    "provider_status",
    "difference",
    "detected_at",
    "updated_position",
    "cleared_at",
    "cleared_position",
    "order_id",
    "provider_ref",
]


def _amounts(finding: Finding) -> tuple[Any, ...]:
    return (
        finding.expected,
        finding.received,
        finding.provider_reported,
        finding.provider_status,
        finding.difference,
    )


def _insert_row(subject_type: str, subject_id: str, reason: str, row: NewRow) -> tuple[Any, ...]:
    cleared_at, cleared_position = row.cleared or (None, None)
    return (
        subject_type,
        subject_id,
        reason,
        row.detected_position,
        row.subject.provider,
        row.finding.currency,
        *_amounts(row.finding),
        row.detected_at,
        row.updated_position,
        cleared_at,
        cleared_position,
        row.subject.order_id,
        row.subject.provider_ref,
    )
