"""Reading the log for an export: pages on one connection, inside one read-only snapshot.

The export never holds more than one page: the caller writes each page out before the next is
read. The snapshot (REPEATABLE READ) and the head read at its start fix where the export ends,
so an export is a consistent prefix of the log even while appends go on; appends are gap-free
(see postgres_store.py), so every position up to that head is in the snapshot.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass

from adapters.storage.postgres_store import AnyConnection, recorded_event
from ledger.ports import Head, RecordedEvent

PAGE_SIZE = 1000

_PAGE = (
    "SELECT partition, position, stream_id, version, type, payload, metadata, recorded_at,"
    " prev_hash, hash FROM events"
    " WHERE partition = $1 AND position > $2 AND position <= $3"
    " AND ($4::text IS NULL OR stream_id = $4) ORDER BY position LIMIT $5"
)


@dataclass(frozen=True, slots=True)
class ExportRange:
    """Positions after `after` and before `before` (both exclusive), of one stream if named."""

    after: int = 0
    before: int | None = None
    stream: str | None = None
    partition: int = 0


async def read_head(connection: AnyConnection, partition: int = 0) -> Head:
    row = await connection.fetchrow(
        "SELECT position, hash FROM log_heads WHERE partition = $1", partition
    )
    assert row is not None, f"partition {partition} has no head row: run migrations"
    return Head(partition, row["position"], bytes(row["hash"]))


async def export_pages(
    connection: AnyConnection, wanted: ExportRange, *, page_size: int = PAGE_SIZE
) -> AsyncGenerator[list[RecordedEvent], None]:
    """The events of `wanted`, a page at a time, from one snapshot taken on `connection`."""
    async with connection.transaction(isolation="repeatable_read", readonly=True):
        head = await read_head(connection, wanted.partition)
        end = head.position if wanted.before is None else min(head.position, wanted.before - 1)
        after = wanted.after
        while after < end:
            records = await connection.fetch(
                _PAGE, wanted.partition, after, end, wanted.stream, page_size
            )
            if not records:
                return
            yield [recorded_event(record) for record in records]
            after = records[-1]["position"]


async def count_rows(connection: AnyConnection, wanted: ExportRange) -> int:
    """How many rows an export of `wanted` will hold at most (for a progress bar)."""
    head = await read_head(connection, wanted.partition)
    end = head.position if wanted.before is None else min(head.position, wanted.before - 1)
    if wanted.stream is None:
        return max(0, end - wanted.after)
    count = await connection.fetchval(
        "SELECT count(*) FROM events WHERE partition = $1 AND position > $2 AND position <= $3"
        " AND stream_id = $4",
        wanted.partition,
        wanted.after,
        end,
        wanted.stream,
    )
    return int(count)
