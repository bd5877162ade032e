"""The console's own reads: what the shared readers (read_models/readers.py) do not offer.

Reconciliation items, balances and streams are read through the shared readers and the store;
here are only the filter choices, every filtered item for a CSV file, and the audit page's
recent checkpoints with the log's own hash at each one's position.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg

from adapters.http.query_params import MAX_LIMIT, ReconciliationItemsQuery
from adapters.storage.read_models.items import ReconciliationItem
from adapters.storage.read_models.readers import reconciliation_page
from ledger.checkpoints import CHECKPOINT_STREAM, Checkpoint, checkpoint_of


async def item_currencies(pool: asyncpg.Pool) -> list[str]:
    """Every currency an item was ever in, for the filter's choices."""
    rows = await pool.fetch(
        "SELECT DISTINCT currency FROM reconciliation_items ORDER BY currency"
    )
    return [row["currency"] for row in rows]


async def every_item(
    pool: asyncpg.Pool, query: ReconciliationItemsQuery
) -> AsyncIterator[list[ReconciliationItem]]:
    """Every item the query's filters select, page by page (keyset, as the list pages)."""
    page_query = query.model_copy(update={"cursor": None, "limit": MAX_LIMIT})
    while True:
        rows, more = await reconciliation_page(pool, page_query)
        yield [ReconciliationItem.from_row(row) for row in rows]
        if not more:
            return
        last = rows[-1]
        cursor = (
            last["detected_at"],
            last["detected_position"],
            last["subject_type"],
            last["subject_id"],
            last["reason"],
        )
        page_query = page_query.model_copy(update={"cursor": cursor})


@dataclass(frozen=True, slots=True)
class RecentCheckpoint:
    checkpoint: Checkpoint
    log_hash: str | None  # the log's hash at the checkpoint's position now


async def recent_checkpoints(pool: asyncpg.Pool, limit: int) -> list[RecentCheckpoint]:
    """The newest `limit` checkpoints, newest first, each beside the log's hash there."""
    rows = await pool.fetch(
        "SELECT payload FROM events WHERE stream_id = $1 ORDER BY version DESC LIMIT $2",
        CHECKPOINT_STREAM,
        limit,
    )
    checkpoints = [checkpoint_of(json.loads(bytes(row["payload"]))) for row in rows]
    hashes = await pool.fetch(
        "SELECT partition, position, hash FROM events"
        " WHERE (partition, position) IN (SELECT * FROM unnest($1::int[], $2::bigint[]))",
        [c.partition for c in checkpoints],
        [c.position for c in checkpoints],
    )
    found = {(h["partition"], h["position"]): bytes(h["hash"]).hex() for h in hashes}
    return [RecentCheckpoint(c, found.get((c.partition, c.position))) for c in checkpoints]
