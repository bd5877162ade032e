"""Reading stored events fast: rows to RecordedEvents cheaply, and the log in pipelined pages.

A row costs little to turn into a RecordedEvent here: its metadata comes as jsonb text and is
parsed once per distinct text (a log has a handful: one topic per event class), and the frozen
dataclass is filled through its slots instead of its generated `__init__`.

The log is read in large pages, the next one already asked for on a second connection while the
caller works on the current one, so that PostgreSQL sends page n+1 while Python handles page n.
Positions of a partition are gap-free (adapters/storage/postgres_store.py), so page n+1 is the
range after page n's last position and can be asked for before page n arrives.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterable
from typing import Any

import asyncpg

from ledger.ports import RecordedEvent

# metadata as text: parsed here, once per distinct document, not once per row by the pool's codec.
SELECT_COLUMNS = (
    "partition, position, stream_id, version, type, payload, metadata::text AS metadata,"
    " recorded_at, prev_hash, hash"
)

PAGE_SIZE = 5_000
# The prefetch holds two pooled connections while the caller works; smaller pools read one page
# at a time instead.
_PIPELINE_POOL_MIN = 4

_METADATA_CACHE_MAX = 4_096
_metadata_documents: dict[str, dict[str, Any]] = {}

_new = object.__new__
(
    _set_partition,
    _set_position,
    _set_stream_id,
    _set_version,
    _set_type,
    _set_payload,
    _set_metadata,
    _set_recorded_at,
    _set_prev_hash,
    _set_hash,
) = (
    getattr(RecordedEvent, name).__set__
    for name in (
        "partition",
        "position",
        "stream_id",
        "version",
        "type",
        "payload",
        "metadata",
        "recorded_at",
        "prev_hash",
        "hash",
    )
)


def metadata_of(value: str | dict[str, Any]) -> dict[str, Any]:
    """A fresh dict of the metadata (callers may change theirs), parsed once per distinct text."""
    if isinstance(value, dict):
        return value
    document = _metadata_documents.get(value)
    if document is None:
        if len(_metadata_documents) >= _METADATA_CACHE_MAX:
            _metadata_documents.clear()  # metadata with ids in it: never let them pile up
        document = _metadata_documents[value] = json.loads(value)
    return dict(document)


def event_of_row(row: Iterable[Any]) -> RecordedEvent:
    """The RecordedEvent of a row selected with SELECT_COLUMNS (in that order)."""
    partition, position, stream_id, version, type_, payload, metadata, at, prev_hash, hash_ = row
    event = _new(RecordedEvent)
    _set_partition(event, partition)
    _set_position(event, position)
    _set_stream_id(event, stream_id)
    _set_version(event, version)
    _set_type(event, type_)
    _set_payload(event, payload)
    _set_metadata(event, metadata_of(metadata))
    _set_recorded_at(event, at)
    _set_prev_hash(event, prev_hash)
    _set_hash(event, hash_)
    return event


def events_of_rows(rows: Iterable[Any]) -> list[RecordedEvent]:
    return [event_of_row(row) for row in rows]


_PAGE = (
    f"SELECT {SELECT_COLUMNS} FROM events"  # noqa: S608 - constant columns
    " WHERE partition = $1 AND position > $2 AND position <= $3 ORDER BY position"
)


async def read_pages(
    pool: asyncpg.Pool, partition: int, *, after: int, until: int, page_size: int = PAGE_SIZE
) -> AsyncIterator[list[RecordedEvent]]:
    """The events of `partition` in (after, until], in order, in pages of up to `page_size`,
    each next page fetched while the caller handles the current one."""

    async def page(connection: Any, start: int) -> list[RecordedEvent]:
        rows = await connection.fetch(_PAGE, partition, start, min(start + page_size, until))
        return events_of_rows(rows)

    if after >= until:
        return
    if pool.get_max_size() < _PIPELINE_POOL_MIN:
        # A small pool is not worth starving for a prefetch: one connection, page by page.
        while after < until:
            async with pool.acquire() as connection:
                events = await page(connection, after)
            after = min(after + page_size, until)
            if events:
                yield events
        return
    async with pool.acquire() as first, pool.acquire() as second:
        connections = (first, second)
        turn = 0
        upcoming: asyncio.Future[list[RecordedEvent]] | None = asyncio.ensure_future(
            page(connections[turn], after)
        )
        try:
            while upcoming is not None:
                events = await upcoming
                after = min(after + page_size, until)
                upcoming = None
                if after < until:
                    turn ^= 1
                    upcoming = asyncio.ensure_future(page(connections[turn], after))
                if events:
                    yield events
        finally:
            if upcoming is not None and not upcoming.done():
                upcoming.cancel()
                # Waited for (its connection goes back to the pool next), never raised from.
                await asyncio.wait([upcoming])
