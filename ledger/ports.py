"""The event store port. The asyncpg implementation lives in adapters/storage.

Positions are `(partition, position)` pairs so that splitting the log into partitions later is
configuration, not a rewrite (see DESIGN.md, "Growing past one server"). Today every stream routes
to partition 0.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

PARTITION_COUNT = 1


def partition_of(stream_id: str) -> int:
    """The one place that routes a stream to a log partition."""
    return 0 if PARTITION_COUNT == 1 else hash_stream(stream_id) % PARTITION_COUNT


def hash_stream(stream_id: str) -> int:
    import hashlib  # noqa: PLC0415 - only needed once partitions exist

    return int.from_bytes(hashlib.sha256(stream_id.encode()).digest()[:8], "big")


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event to append. `version` is its position in its stream, starting at 1."""

    stream_id: str
    version: int
    type: str
    payload: bytes  # canonical JSON (or, for eventsourcing's recorder, its opaque state)
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    partition: int
    position: int
    stream_id: str
    version: int
    type: str
    payload: bytes
    metadata: dict[str, Any]
    recorded_at: datetime
    prev_hash: bytes
    hash: bytes


@dataclass(frozen=True, slots=True)
class Claim:
    """A unique key reserved atomically with an append (dedupe keys, idempotency keys, refs).

    Appending with a claim whose (namespace, key) is taken raises ClaimTaken and writes nothing,
    unless `replaces` names the stream holding it: then the claim moves to `stream_id` (a new
    request for an order id whose earlier payment the provider never took).
    """

    namespace: str
    key: str
    stream_id: str
    value: str = ""
    replaces: str | None = None


class ClaimTaken(Exception):
    def __init__(self, claim: Claim, holder: str) -> None:
        super().__init__(f"{claim.namespace}:{claim.key} is held by {holder}")
        self.claim = claim
        self.holder = holder


@dataclass(frozen=True, slots=True)
class Head:
    partition: int
    position: int
    hash: bytes


class EventStore(Protocol):
    async def append(
        self,
        events: Sequence[NewEvent],
        *,
        expected_versions: dict[str, int],
        claims: Sequence[Claim] = (),
    ) -> list[RecordedEvent]:
        """Appends atomically to one or more streams.

        `expected_versions[stream]` is the stream's current version as the writer saw it (0 for
        a new stream). Any mismatch raises ConcurrencyConflict and nothing is written.
        """
        ...

    async def read_stream(
        self, stream_id: str, *, after_version: int = 0
    ) -> list[RecordedEvent]: ...

    def read_log(
        self, partition: int, *, after: int = 0, batch_size: int = 500
    ) -> AsyncIterator[list[RecordedEvent]]:
        """The global log of one partition, in order, from `after` (exclusive), in batches,
        ending at the head as it was when reading started."""
        ...

    async def head(self, partition: int = 0) -> Head: ...

    async def find_claim(self, namespace: str, key: str) -> Claim | None: ...
