"""What the ledger recorded of deliveries outside any payment's stream, read by event type: each
receipt (`Delivery.Received`, `.Duplicate`, `.Rejected`, `.Invalid`) and each unmatched record is
an event in a stream of its own, so tests find them in the log rather than by stream name."""

from __future__ import annotations

from typing import Any

from adapters.storage.postgres_store import PostgresEventStore
from ledger.codec import decode_document
from ledger.deliveries import ReceiptKind

UNMATCHED = "Delivery.Unmatched"
BALANCE = "ProviderBalance.Reported"


async def documents_of_type(
    store: PostgresEventStore, event_type: str, provider: str | None = None
) -> list[dict[str, Any]]:
    """Payloads of every event of `event_type` in log order, of `provider`'s deliveries only
    when given."""
    rows = await store.pool.fetch(
        "SELECT payload FROM events WHERE type = $1 ORDER BY partition, position", event_type
    )
    documents = [decode_document(bytes(row["payload"])) for row in rows]
    return [d for d in documents if provider is None or _provider(d) == provider]


async def receipts(
    store: PostgresEventStore, kind: ReceiptKind, provider: str | None = None
) -> list[dict[str, Any]]:
    return await documents_of_type(store, kind.value, provider)


async def unmatched(store: PostgresEventStore, provider: str | None = None) -> list[dict[str, Any]]:
    return await documents_of_type(store, UNMATCHED, provider)


def _provider(document: dict[str, Any]) -> str | None:
    if "provider" in document:
        return str(document["provider"])
    delivery = document.get("delivery") or {}
    return delivery.get("provider")
