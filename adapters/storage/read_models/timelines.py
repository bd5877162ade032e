"""A payment's or withdrawal's timeline: every event of its stream, in order, with what an
operator asks of each (when, what, which amounts, whether a delivery was authenticated, its hash).

A subject is found by its id, else by the merchant's reference (a payment's order id, a
withdrawal's request id) or the provider's, through the claims taken atomically with its events
(so a subject just created is found before any projection has run). Claims are keyed
`{provider}:{reference}`; a bare reference is looked up at every provider.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from adapters.config import PROVIDER_IDS
from adapters.storage.postgres_store import AnyConnection
from ledger.codec import loads_exact

# The claims' namespaces, as subject creation takes them (adapters/ingestion/subject_index.py).
_NAMESPACES = {
    "payment": ("payment_order", "payment_ref"),
    "withdrawal": ("withdrawal_request", "withdrawal_ref"),
}
_AGGREGATES = {"payment": "Payment", "withdrawal": "Withdrawal"}
_REFERENCE_FIELDS = {"payment": "order_id", "withdrawal": "request_id"}


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    position: int
    version: int
    type: str
    recorded_at: datetime
    verification: str | None  # a delivery's outcome (verified, unverified, rejected); else None
    amounts: dict[str, str]  # field name -> amount, as recorded
    hash: bytes


@dataclass(frozen=True, slots=True)
class Timeline:
    subject_type: str  # "payment" or "withdrawal"
    subject_id: str
    provider: str | None
    reference: str | None  # the order id or request id
    entries: list[TimelineEntry]


def _is_amount(name: str) -> bool:
    return (
        name in {"amount", "requested", "received"}
        or name.endswith("_amount")
        or name.startswith(("amount_", "fee_"))
    )


def amounts_of(document: Mapping[str, Any]) -> dict[str, str]:
    """The amounts an event states, by field name, digit for digit; nothing for absent ones.
    The CLI's and the console's timelines both show these."""
    return {
        name: format(value, "f") if isinstance(value, Decimal) else str(value)
        for name, value in document.items()
        if _is_amount(name) and value is not None and not isinstance(value, (bool, dict, list))
    }


def verification_of(document: Mapping[str, Any]) -> str | None:
    """A delivery's verification outcome: on the delivery itself or on the record of it (the
    record of a delivery not applied says only whether it was verified)."""
    delivery = document.get("delivery")
    delivery = delivery if isinstance(delivery, Mapping) else {}
    for holder in (document, delivery):
        verification = holder.get("verification")
        if isinstance(verification, Mapping) and verification.get("outcome"):
            return str(verification["outcome"])
    verified = delivery.get("verified")
    if isinstance(verified, bool):
        return "verified" if verified else "unverified"
    return None


async def find_subjects(connection: AnyConnection, subject_type: str, key: str) -> list[str]:
    """The ids of the subjects `key` names: its id, else its order/request id or provider
    reference (bare, or as PROVIDER:REFERENCE). Several when a bare reference is used at more
    than one provider."""
    aggregate = _AGGREGATES[subject_type]
    try:
        subject_id = str(uuid.UUID(key))
    except ValueError:
        subject_id = None
    if subject_id is not None:
        found = await connection.fetchval(
            "SELECT 1 FROM events WHERE stream_id = $1 AND version = 1"
            " AND split_part(type, '.', 1) = $2",
            subject_id,
            aggregate,
        )
        if found:
            return [subject_id]
    keys = [f"{provider}:{key}" for provider in PROVIDER_IDS]
    if key.split(":", 1)[0] in PROVIDER_IDS:
        keys.append(key)
    rows = await connection.fetch(
        "SELECT DISTINCT stream_id FROM claims WHERE namespace = any($1::text[])"
        " AND key = any($2::text[]) ORDER BY stream_id",
        list(_NAMESPACES[subject_type]),
        keys,
    )
    return [row["stream_id"] for row in rows]


async def timeline(connection: AnyConnection, subject_type: str, subject_id: str) -> Timeline:
    """Every event of the subject's stream, oldest first."""
    rows = await connection.fetch(
        "SELECT position, version, type, recorded_at, payload, hash FROM events"
        " WHERE stream_id = $1 ORDER BY version",
        subject_id,
    )
    entries = []
    first: Mapping[str, Any] = {}
    for row in rows:
        document = loads_exact(bytes(row["payload"]))
        document = document if isinstance(document, dict) else {}
        first = first or document
        entries.append(
            TimelineEntry(
                position=row["position"],
                version=row["version"],
                type=row["type"],
                recorded_at=row["recorded_at"],
                verification=verification_of(document),
                amounts=amounts_of(document),
                hash=bytes(row["hash"]),
            )
        )
    reference = first.get(_REFERENCE_FIELDS[subject_type])
    provider = first.get("provider")
    return Timeline(
        subject_type=subject_type,
        subject_id=subject_id,
        provider=str(provider) if provider is not None else None,
        reference=str(reference) if reference is not None else None,
        entries=entries,
    )
