"""Query read models: one row per payment and per withdrawal, so that lists filter and page on
indexed tables instead of replaying streams. The row keeps the same JSON view the API serves for
a single subject, built by the same function."""

from __future__ import annotations

import json
from typing import Any

from adapters.storage.postgres_store import AnyConnection
from adapters.storage.read_models.base import SubjectProjection
from ledger.payment import Payment
from ledger.ports import RecordedEvent
from ledger.withdrawal import Withdrawal
from projections.subjects import SUBJECT_TYPE_PREFIXES, is_subject_event
from projections.views import payment_view, withdrawal_view

# One statement per batch and table: the batch's rows as arrays, unnested and merged (a row per
# subject: the batch folded each subject to its latest state first).
_UPSERT_PAYMENTS = """
INSERT INTO payments_view (payment_id, provider, provider_ref, order_id, customer_id, status,
    coverage, late, expected_currency, expected_amount, received, expires_at, created_at,
    updated_at, version, view)
SELECT payment_id, provider, provider_ref, order_id, customer_id, status, coverage, late,
    expected_currency, expected_amount, received, expires_at, created_at, updated_at, version,
    view::jsonb
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
    $8::boolean[], $9::text[], $10::numeric[], $11::numeric[], $12::timestamptz[],
    $13::timestamptz[], $14::timestamptz[], $15::integer[], $16::text[])
    AS rows (payment_id, provider, provider_ref, order_id, customer_id, status, coverage, late,
    expected_currency, expected_amount, received, expires_at, created_at, updated_at, version,
    view)
ON CONFLICT (payment_id) DO UPDATE SET provider_ref = excluded.provider_ref,
    customer_id = excluded.customer_id, status = excluded.status, coverage = excluded.coverage,
    late = excluded.late, expected_currency = excluded.expected_currency,
    expected_amount = excluded.expected_amount, received = excluded.received,
    expires_at = excluded.expires_at, updated_at = excluded.updated_at,
    version = excluded.version, view = excluded.view
"""

_UPSERT_WITHDRAWALS = """
INSERT INTO withdrawals_view (withdrawal_id, provider, provider_ref, request_id, customer_id,
    status, currency, requested, created_at, updated_at, version, view)
SELECT withdrawal_id, provider, provider_ref, request_id, customer_id, status, currency,
    requested, created_at, updated_at, version, view::jsonb
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
    $8::numeric[], $9::timestamptz[], $10::timestamptz[], $11::integer[], $12::text[])
    AS rows (withdrawal_id, provider, provider_ref, request_id, customer_id, status, currency,
    requested, created_at, updated_at, version, view)
ON CONFLICT (withdrawal_id) DO UPDATE SET provider_ref = excluded.provider_ref,
    customer_id = excluded.customer_id, status = excluded.status, currency = excluded.currency,
    requested = excluded.requested, updated_at = excluded.updated_at,
    version = excluded.version, view = excluded.view
"""


def _columns(rows: list[tuple[Any, ...]]) -> list[list[Any]]:
    """Rows as one list per column, the last (the JSON view) as text."""
    columns = [list(column) for column in zip(*rows, strict=True)]
    columns[-1] = [json.dumps(view) for view in columns[-1]]
    return columns


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
    reads: tuple[str, ...] | None = SUBJECT_TYPE_PREFIXES

    async def apply(self, connection: AnyConnection, events: list[RecordedEvent]) -> None:
        self._connection = connection
        latest: dict[str, Any] = {}
        for event in events:
            if is_subject_event(event):
                _, _, latest[event.stream_id] = await self._states.transition(event)
        payments = [_payment_row(a) for a in latest.values() if isinstance(a, Payment)]
        withdrawals = [_withdrawal_row(a) for a in latest.values() if isinstance(a, Withdrawal)]
        if payments:
            await connection.execute(_UPSERT_PAYMENTS, *_columns(payments))
        if withdrawals:
            await connection.execute(_UPSERT_WITHDRAWALS, *_columns(withdrawals))
