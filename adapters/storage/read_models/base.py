"""What the projection runner asks of a projection that keeps its read model in PostgreSQL."""

from __future__ import annotations

from typing import Protocol

from adapters.storage.postgres_store import AnyConnection
from ledger.ports import RecordedEvent


class Projection(Protocol):
    name: str
    # Read-model tables this projection owns; a rebuild empties them (DELETE, not TRUNCATE, so
    # readers keep seeing the old rows until the rebuild commits).
    tables: tuple[str, ...]

    async def apply(self, connection: AnyConnection, events: list[RecordedEvent]) -> None:
        """Writes the read model's changes for `events` (in log order) on `connection`, inside
        the runner's transaction. Raising rolls the whole batch back."""
        ...

    def forget(self) -> None:
        """Drops in-memory caches, which a rolled-back batch may have left ahead of the table."""
        ...
