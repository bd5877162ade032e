"""Query read models: one row per payment and per withdrawal, so that lists filter and page on
indexed tables instead of replaying streams. The row keeps the same JSON view the API serves for
a single subject, built by the same function."""

from __future__ import annotations

from typing import Any

from adapters.storage.postgres_store import AnyConnection
from adapters.storage.read_models.base import SubjectProjection
from ledger.payment import Payment
from ledger.ports import RecordedEvent
from ledger.withdrawal import Withdrawal
from projections.subjects import is_subject_event
from projections.views import payment_view, withdrawal_view

_UPSERT_PAYMENT = """
INSERT INTO payments_view (payment_id, provider, provider_ref, order_id, customer_id, status,
    coverage, late, expected_currency, expected_amount, received, expires_at, created_at,
    updated_at, version, view)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
ON CONFLICT (payment_id) DO UPDATE SET provider_ref = excluded.provider_ref,
    status = excluded.status, coverage = excluded.coverage, late = excluded.late,
    received = excluded.received, updated_at = excluded.updated_at,
    version = excluded.version, view = excluded.view
"""

_UPSERT_WITHDRAWAL = """
INSERT INTO withdrawals_view (withdrawal_id, provider, provider_ref, request_id, customer_id,
    status, currency, requested, created_at, updated_at, version, view)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
ON CONFLICT (withdrawal_id) DO UPDATE SET provider_ref = excluded.provider_ref,
    status = excluded.status, updated_at = excluded.updated_at, version = excluded.version,
    view = excluded.view
"""


def _payment_row(payment: Payment) -> tuple[Any, ...]:
    return (
        payment.id,
        payment.provider,
        payment.provider_ref,
        payment.order_id,
        payment.customer_id,
        payment.status.value,
        payment.coverage.value,
        payment.late,
        payment.expected.currency,
        payment.expected.amount,
        payment.received.amount,
        payment.expires_at,
        payment.created_on,
        payment.modified_on,
        payment.version,
        payment_view(payment),
    )


def _withdrawal_row(withdrawal: Withdrawal) -> tuple[Any, ...]:
    return (
        withdrawal.id,
        withdrawal.provider,
        withdrawal.provider_ref,
        withdrawal.request_id,
        withdrawal.customer_id,
        withdrawal.status.value,
        withdrawal.requested.currency,
        withdrawal.requested.amount,
        withdrawal.created_on,
        withdrawal.modified_on,
        withdrawal.version,
        withdrawal_view(withdrawal),
    )


class SubjectsView(SubjectProjection):
    name: str = "subjects"
    tables: tuple[str, ...] = ("payments_view", "withdrawals_view")

    async def apply(self, connection: AnyConnection, events: list[RecordedEvent]) -> None:
        self._connection = connection
        latest: dict[str, Any] = {}
        for event in events:
            if is_subject_event(event):
                _, _, latest[event.stream_id] = await self._states.transition(event)
        payments = [_payment_row(a) for a in latest.values() if isinstance(a, Payment)]
        withdrawals = [_withdrawal_row(a) for a in latest.values() if isinstance(a, Withdrawal)]
        if payments:
            await connection.executemany(_UPSERT_PAYMENT, payments)
        if withdrawals:
            await connection.executemany(_UPSERT_WITHDRAWAL, withdrawals)
