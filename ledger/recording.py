"""Events that record what providers said, shared by payments and withdrawals.

Every outbound request/response and every webhook delivery naming a subject is kept in that
subject's own stream, so `/v1/payments/{id}/events` shows the whole story in commit order.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from eventsourcing.domain import Aggregate, event


class ProviderRecordedAggregate(Aggregate):
    """An aggregate whose stream also carries the raw provider traffic about it."""

    # No class-level annotations here: eventsourcing would turn them into creation fields.

    def _start_recording(self) -> None:
        self.delivery_keys: frozenset[str] = frozenset()
        # Keys of deliveries that were allowed to move money (see _moves_money): a key seen
        # only unverified may still arrive verified, and must then be applied.
        self.verified_delivery_keys: frozenset[str] = frozenset()
        self.deliveries_recorded = 0
        self.exchanges_recorded = 0
        # Provider words whose facts broke a rule (code by delivery): reconciliation shows them.
        self.refused_deliveries: dict[str, str] = {}

    def has_delivery(self, dedupe_key: str) -> bool:
        return dedupe_key in self.delivery_keys

    def has_verified_delivery(self, dedupe_key: str) -> bool:
        """Whether a delivery with this key was recorded as verified (it may have moved money)."""
        return dedupe_key in self.verified_delivery_keys

    def record_delivery(self, delivery: dict[str, Any]) -> None:
        """Keeps a webhook delivery (raw body, headers that matter, verification, dedupe key).

        A verified delivery whose key was seen only unverified before is not a duplicate."""
        key = str(delivery["dedupe_key"])
        seen = self.has_verified_delivery(key) if _moves_money(delivery) else self.has_delivery(key)
        self._delivery_recorded(dedupe_key=key, duplicate=seen, delivery=delivery)

    @event("DeliveryRecorded")
    def _delivery_recorded(
        self, dedupe_key: str, duplicate: bool, delivery: dict[str, Any]
    ) -> None:
        self.delivery_keys = self.delivery_keys | {dedupe_key}
        if _moves_money(delivery):
            self.verified_delivery_keys = self.verified_delivery_keys | {dedupe_key}
        self.deliveries_recorded += 1

    def record_exchange(self, exchange: dict[str, Any]) -> None:
        """Keeps one outbound HTTP attempt to the provider (secrets already redacted)."""
        self._exchange_recorded(exchange=exchange)

    @event("ProviderExchangeRecorded")
    def _exchange_recorded(self, exchange: dict[str, Any]) -> None:
        self.exchanges_recorded += 1

    def record_application_error(self, dedupe_key: str, code: str, detail: str) -> None:
        """Says that a delivery's facts broke a rule and so moved nothing (e.g. a late
        'processing' after 'completed'). The delivery itself is already recorded."""
        self._delivery_not_applied(dedupe_key=dedupe_key, code=code, detail=detail)

    @event("DeliveryNotApplied")
    def _delivery_not_applied(self, dedupe_key: str, code: str, detail: str) -> None:
        self.refused_deliveries = {**self.refused_deliveries, dedupe_key: code}


def _moves_money(delivery: dict[str, Any]) -> bool:
    """A recorded delivery that was allowed to move money: verified, or verified but refused by
    a rule (`not_applied` with `verified`; older records of that kind lack the flag)."""
    outcome = delivery.get("outcome")
    return outcome == "verified" or (outcome == "not_applied" and delivery.get("verified") is True)


def utc(value: datetime) -> datetime:
    """Refuses naive datetimes: every instant the ledger keeps is UTC-aware."""
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}; the ledger keeps aware UTC instants")
    return value
