"""What the projection runner asks of a projection that keeps its read model in PostgreSQL."""

from __future__ import annotations

from typing import Any, Protocol

from adapters.storage.postgres_store import AnyConnection, fetch_stream_before
from adapters.storage.read_models.states import ProjectionStates
from ledger.ports import RecordedEvent


class Projection(Protocol):
    name: str
    # Read-model tables this projection owns; a rebuild empties them (DELETE, not TRUNCATE, so
    # readers keep seeing the old rows until the rebuild commits).
    tables: tuple[str, ...]
    # The event types it reads, as prefixes of their names (`Payment.`); None: every event. The
    # runner fetches only these (with the positions between them), so large events no
    # projection reads (a webhook's raw body) are never sent to it, nor decoded.
    reads: tuple[str, ...] | None

    async def apply(self, connection: AnyConnection, events: list[RecordedEvent]) -> None:
        """Writes the read model's changes for `events` (in log order) on `connection`, inside
        the runner's transaction. Raising rolls the whole batch back."""
        ...

    def forget(self) -> None:
        """Drops in-memory caches, which a rolled-back batch may have left ahead of the table."""
        ...


class SubjectProjection:
    """Shared by projections that derive rows from payment and withdrawal states: the states
    (read_models/states.py: the runner's fold of the batch when it made one, else the
    projection's own cache), fed from the runner's connection on a miss. A subclass says what it
    reads from a state by overriding `derive`."""

    name: str

    def __init__(self) -> None:
        self._connection: AnyConnection | None = None
        self._states: ProjectionStates[Any] = ProjectionStates(
            self.name, self._load_before, self.derive
        )

    def derive(self, aggregate: Any) -> Any:  # noqa: ARG002 - the default reads nothing
        return None

    async def _load_before(self, stream_id: str, version: int) -> list[RecordedEvent]:
        assert self._connection is not None, "apply() binds the connection first"
        return await fetch_stream_before(self._connection, stream_id, version)

    def forget(self) -> None:
        self._states.forget()
