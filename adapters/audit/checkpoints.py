"""Making, storing and listing signed checkpoints of the log head.

A checkpoint is itself an event (stream `audit-checkpoints`), so the log carries its own signed
statements and an export holds them too. It attests the head as it was just before it was
appended: its own event comes one position later.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass

from adapters.audit.signing import Signer
from adapters.services.records import append_record
from adapters.storage.postgres_store import PostgresEventStore
from ledger.checkpoints import CHECKPOINT_STREAM, CHECKPOINT_TYPE, Checkpoint, checkpoint_of

LIST_PAGE_SIZE = 100

_LIST = (
    "SELECT version, payload FROM events WHERE stream_id = $1 AND version > $2"
    " AND (convert_from(payload, 'UTF8')::jsonb ->> 'position')::bigint > $3"
    " ORDER BY version LIMIT $4"
)


@dataclass(frozen=True, slots=True)
class CheckpointPage:
    items: list[Checkpoint]
    next_cursor: int | None  # the last version listed, when more may follow


class Checkpointer:
    def __init__(self, store: PostgresEventStore, signer: Signer) -> None:
        self.store = store
        self.signer = signer

    async def make(self, partition: int = 0) -> Checkpoint:
        """Signs the head of `partition` now and appends the checkpoint to the log."""
        head = await self.store.head(partition)
        checkpoint = self.signer.sign(partition, head.position, head.hash.hex())
        await append_record(self.store, CHECKPOINT_STREAM, CHECKPOINT_TYPE, checkpoint.document())
        return checkpoint

    async def make_if_log_moved(self, partition: int = 0) -> Checkpoint | None:
        """A checkpoint unless nothing but the last checkpoint was appended since it: a quiet
        log would otherwise grow by one checkpoint per interval, each attesting the last."""
        last_own_position = await self.store.pool.fetchval(
            "SELECT position FROM events WHERE stream_id = $1 AND partition = $2"
            " ORDER BY version DESC LIMIT 1",
            CHECKPOINT_STREAM,
            partition,
        )
        head = await self.store.head(partition)
        if head.position in {0, last_own_position}:
            return None
        return await self.make(partition)

    async def run_forever(self, interval_seconds: float, healthy: Callable[[], None]) -> None:
        # The first checkpoint comes one interval after start, not at start: a service that
        # restarts often (or a test) does not sign a checkpoint per start.
        while True:
            await asyncio.sleep(interval_seconds)
            await self.make_if_log_moved()
            healthy()

    async def page(
        self, *, after: int = 0, cursor: int = 0, limit: int = LIST_PAGE_SIZE
    ) -> CheckpointPage:
        """Checkpoints of positions above `after`, in the order they were made, after `cursor`."""
        rows = await self.store.pool.fetch(_LIST, CHECKPOINT_STREAM, cursor, after, limit)
        items = [checkpoint_of(json.loads(bytes(row["payload"]))) for row in rows]
        next_cursor = rows[-1]["version"] if len(rows) == limit else None
        return CheckpointPage(items, next_cursor)
