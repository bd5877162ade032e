"""A payment's row in `payments_view` must not depend on how the runner cut its batches.

Found by bench/sustained_load.py: under `ledger serve`, with the projection runner live, a
rebuild of the `subjects` projection differed from the live rows for Cryptofuse payments. The
intent (`Payment.Submitting`) is appended before the provider is called; when the runner
projects it alone, the row is inserted with what the intent knows (the price as the expected
amount, no deadline). The provider's answer then arrives, and the upsert's ON CONFLICT clause
updates status, amounts received, version and the JSON view, but not `expected_currency`,
`expected_amount` or `expires_at`: the row keeps the price and a NULL deadline while its own
JSON view says otherwise. A rebuild folds intent and answer into one batch and writes the right
columns. The sweeper finds payments to expire by `payments_view.expires_at`, so such a payment
is never expired by the ledger's clock while live.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from adapters.storage.read_models import all_projections
from adapters.storage.read_models.readers import payments_due_to_expire
from adapters.storage.read_models.runner import ProjectionRunner
from tests.e2e.webhook_kit import rig


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text.removesuffix("Z") + "+00:00")


async def test_a_payments_row_is_the_same_whether_its_intent_was_projected_alone_or_not(store):
    async with rig(store, ("cryptofuse",)) as bench:
        payment = await bench.create_payment("cryptofuse")
    payment_id = uuid.UUID(payment["payment_id"])
    # One event per batch: what the live runner does when it projects the intent before the
    # provider has answered (it is woken by the intent's NOTIFY).
    await ProjectionRunner(store.pool, all_projections(), batch_size=1).rebuild("subjects")
    row = await store.pool.fetchrow(
        "SELECT expected_currency, expected_amount, expires_at FROM payments_view"
        " WHERE payment_id = $1",
        payment_id,
    )
    deadline = instant(payment["expires_at"])
    expected = (
        payment["expected"]["currency"],
        Decimal(payment["expected"]["amount"]),
        deadline,
    )
    due = await payments_due_to_expire(store.pool, deadline + timedelta(minutes=1))
    assert (expected, [payment_id]) == (
        (row["expected_currency"], row["expected_amount"], row["expires_at"]),
        [r["payment_id"] for r in due],
    )


async def test_a_payments_row_folded_with_its_answer_has_the_answers_amount_and_deadline(store):
    """The same payment projected in one batch (as a rebuild does) is right: the control."""
    async with rig(store, ("cryptofuse",)) as bench:
        payment = await bench.create_payment("cryptofuse")
    await ProjectionRunner(store.pool, all_projections()).rebuild("subjects")
    row = await store.pool.fetchrow(
        "SELECT expected_currency, expected_amount, expires_at FROM payments_view"
        " WHERE payment_id = $1",
        uuid.UUID(payment["payment_id"]),
    )
    assert payment["expected"]["currency"] != payment["price"]["currency"]
    assert (
        payment["expected"]["currency"],
        Decimal(payment["expected"]["amount"]),
        instant(payment["expires_at"]),
    ) == (row["expected_currency"], row["expected_amount"], row["expires_at"].astimezone(UTC))
