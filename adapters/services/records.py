"""Events that belong to no aggregate: deliveries rejected, unreadable or unmatched, balances.

They go to one record stream per provider and kind, appended at the stream's next version; a
writer that loses the race for that version simply reads the new head and tries again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from adapters.services.conflicts import retry_on_conflict
from adapters.storage.postgres_store import PostgresEventStore
from ledger.codec import dumps_canonical
from ledger.ports import Claim, NewEvent, RecordedEvent

APPEND_ATTEMPTS = 50


async def append_record(
    store: PostgresEventStore,
    stream_id: str,
    event_type: str,
    document: dict[str, Any],
    claims: Sequence[Claim] = (),
) -> RecordedEvent:
    payload = dumps_canonical(document)

    async def append_at_next_version() -> RecordedEvent:
        version = await store.stream_version(stream_id)
        (recorded,) = await store.append(
            [NewEvent(stream_id, version + 1, event_type, payload, {"record": True})],
            expected_versions={stream_id: version},
            claims=claims,
        )
        return recorded

    return await retry_on_conflict(
        append_at_next_version, attempts=APPEND_ATTEMPTS, what=f"append to {stream_id}"
    )
