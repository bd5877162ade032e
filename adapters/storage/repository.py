"""Loads aggregates by replaying their streams and saves their new events with expected versions."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import TypeVar

from eventsourcing.domain import Aggregate

from ledger.codec import encode_pending, rebuild
from ledger.payment import Payment
from ledger.ports import Claim, EventStore, NewEvent, RecordedEvent
from ledger.withdrawal import Withdrawal

AggregateT = TypeVar("AggregateT", bound=Aggregate)

_NAMES: dict[type[Aggregate], str] = {Payment: "Payment", Withdrawal: "Withdrawal"}


class AggregateRepository:
    def __init__(self, store: EventStore) -> None:
        self.store = store

    async def load(
        self, aggregate_type: type[AggregateT], aggregate_id: uuid.UUID | str
    ) -> AggregateT | None:
        events = await self.store.read_stream(str(aggregate_id))
        if not events:
            return None
        aggregate = rebuild(events)
        if not isinstance(aggregate, aggregate_type):
            return None  # the id names another kind of aggregate
        return aggregate

    async def save(
        self, *aggregates: Aggregate, claims: Sequence[Claim] = (), extra: Sequence[NewEvent] = ()
    ) -> list[RecordedEvent]:
        """Appends every aggregate's pending events (and `extra` events) in one transaction."""
        new_events: list[NewEvent] = []
        expected: dict[str, int] = {}
        for aggregate in aggregates:
            pending = encode_pending(aggregate, _NAMES[type(aggregate)])
            if pending:
                expected[pending[0].stream_id] = pending[0].version - 1
                new_events.extend(pending)
        for event in extra:
            expected.setdefault(event.stream_id, event.version - 1)
            new_events.append(event)
        if not new_events and not claims:
            return []
        return await self.store.append(new_events, expected_versions=expected, claims=claims)
