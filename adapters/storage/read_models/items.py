"""A reconciliation item as every reader sees it, and the one way its cells are written.

The API (JSON and CSV), `ledger reconcile report` and the finance console all render items
through `item_cells`, so they agree line for line: amounts at the currency's scale (the rule is
ledger/money.py's `quantize_exact`), times in ISO 8601 UTC ending in `Z`, absent values None
(null in JSON, an empty cell in CSV and tables).
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg

from ledger.errors import LedgerError
from ledger.money import quantize_exact

# The cells of an item, in the order every table and CSV file shows them.
ITEM_COLUMNS: tuple[str, ...] = (
    "subject_type",
    "subject_id",
    "order_id",
    "provider_ref",
    "provider",
    "reason",
    "state",
    "currency",
    "expected",
    "received",
    "provider_reported",
    "provider_status",
    "difference",
    "detected_at",
    "cleared_at",
)


@dataclass(frozen=True, slots=True)
class ReconciliationItem:
    """One row of `reconciliation_items`: a finding about one subject, open or cleared.

    `order_id` is the merchant's reference (a payment's order id, a withdrawal's request id);
    `provider_ref` the provider's. `provider_reported` is the amount the provider last stated
    (its paid amount, or its balance), `provider_status` the status word it last gave.
    """

    subject_type: str
    subject_id: str
    reason: str
    provider: str
    currency: str
    expected: Decimal | None
    received: Decimal | None
    provider_reported: Decimal | None
    provider_status: str | None
    difference: Decimal
    order_id: str | None
    provider_ref: str | None
    detected_at: datetime
    detected_position: int
    updated_position: int
    cleared_at: datetime | None
    cleared_position: int | None

    @classmethod
    def from_row(cls, row: asyncpg.Record | Mapping[str, Any]) -> ReconciliationItem:
        """From a `reconciliation_items` row (an asyncpg Record or any mapping of its columns)."""
        return cls(
            subject_type=row["subject_type"],
            subject_id=row["subject_id"],
            reason=row["reason"],
            provider=row["provider"],
            currency=row["currency"],
            expected=row["expected"],
            received=row["received"],
            provider_reported=row["provider_reported"],
            provider_status=row["provider_status"],
            difference=row["difference"],
            order_id=row["order_id"],
            provider_ref=row["provider_ref"],
            detected_at=row["detected_at"],
            detected_position=row["detected_position"],
            updated_position=row["updated_position"],
            cleared_at=row["cleared_at"],
            cleared_position=row["cleared_position"],
        )

    @property
    def is_open(self) -> bool:
        return self.cleared_at is None


def amount_cell(value: Decimal | None, currency: str) -> str | None:
    """An amount at its currency's scale. A figure finer than the scale (a provider's odd
    report) or in a currency the ledger does not know is shown whole, never rounded."""
    if value is None:
        return None
    # An unregistered currency or extra precision: the exact figure, as it is.
    with suppress(LedgerError):
        value = quantize_exact(value, currency)
    return format(value, "f")


def balance_cells(row: asyncpg.Record | Mapping[str, Any]) -> dict[str, str | None]:
    """One account balance (a `balance_rows` row), as the API and the console show it."""
    currency = str(row["currency"])
    return {
        "account": row["account"],
        "currency": currency,
        "pending": amount_cell(row["pending"], currency),
        "posted": amount_cell(row["posted"], currency),
        "available": amount_cell(row["available"], currency),
    }


def instant_cell(value: datetime | None) -> str | None:
    """An instant in ISO 8601, UTC, ending in `Z` (microseconds kept when there are any)."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def item_cells(item: ReconciliationItem) -> dict[str, str | None]:
    """The item's cells as strings, keyed and ordered by ITEM_COLUMNS."""
    return {
        "subject_type": item.subject_type,
        "subject_id": item.subject_id,
        "order_id": item.order_id,
        "provider_ref": item.provider_ref,
        "provider": item.provider,
        "reason": item.reason,
        "state": "open" if item.is_open else "cleared",
        "currency": item.currency,
        "expected": amount_cell(item.expected, item.currency),
        "received": amount_cell(item.received, item.currency),
        "provider_reported": amount_cell(item.provider_reported, item.currency),
        "provider_status": item.provider_status,
        "difference": amount_cell(item.difference, item.currency),
        "detected_at": instant_cell(item.detected_at),
        "cleared_at": instant_cell(item.cleared_at),
    }
