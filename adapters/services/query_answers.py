"""A provider's answer to a status query, kept in the payment's stream and applied as verified.

The answer is the ledger's own authenticated call, so its facts count as verified by query. It is
recorded as a delivery of its own (`source: provider_query`, with the query's exchanges before
it and, in `covers_through`, the log position of the newest unverified delivery it answers), so
that both the unverified deliveries and the answer stay in the stream as evidence.

An unverified delivery whose every fact the payment now holds as verified (its deposits with the
same id and amount, its running total, its status word's outcome) is confirmed: recorded once
more as verified by query, so that a genuine copy arriving later is a plain duplicate instead of
a second report of the same deposit. A delivery the answer contradicts stays unverified, and its
funds stay in reconciliation as `unverified`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from adapters.providers.contract import (
    ProviderAdapter,
    ProviderExchange,
    WebhookBodyInvalid,
    WebhookDelivery,
)
from adapters.services.conflicts import retry_on_conflict
from adapters.storage.postgres_store import PostgresEventStore
from adapters.storage.repository import AggregateRepository
from ledger.codec import decode_document, rebuild
from ledger.commands import (
    DepositReport,
    PaymentReference,
    PaymentUpdate,
    ProviderPaymentOutcome,
    Translation,
)
from ledger.errors import LedgerError
from ledger.payment import Payment

log = logging.getLogger(__name__)

QUERY_SOURCE = "provider_query"
SAVE_ATTEMPTS = 30
_DELIVERY_RECORDED = "Payment.DeliveryRecorded"


@dataclass(frozen=True, slots=True)
class AnswerRecorded:
    applied: bool  # False when the answer's facts broke a rule (recorded as not applied)
    confirmed: tuple[str, ...]  # dedupe keys of the unverified deliveries it confirmed


async def record_answer(
    store: PostgresEventStore,
    adapter: ProviderAdapter,
    stream_id: str,
    answer: Translation,
    exchanges: Sequence[ProviderExchange],
    *,
    covers_through: int,
    received_at: datetime,
) -> AnswerRecorded:
    """Records the answer and its exchanges in the payment's stream and applies its facts, in
    one append; redone from a fresh read when another writer got to the stream first."""
    document = {
        "source": QUERY_SOURCE,
        "provider": adapter.name,
        "received_at": received_at,
        "dedupe_key": answer.dedupe_key,
        "event_type": answer.event_type,
        "verification": {"outcome": "verified", "scheme": QUERY_SOURCE, "reason": ""},
        "covers_through": covers_through,
        "translation": dataclasses.asdict(answer),
    }

    async def record_once() -> AnswerRecorded:
        events = await store.read_stream(stream_id)
        payment = _payment(rebuild(events), stream_id)
        _record_exchanges(payment, exchanges)
        facts = [f for f in answer.facts if isinstance(f, PaymentUpdate) and _names(payment, f)]
        payment.record_delivery({**document, "outcome": "verified"})
        try:
            for fact in facts:
                payment.apply_update(
                    _news_only(payment, fact), received_at=received_at, verified=True
                )
        except LedgerError as broken:
            log.warning(
                "query answer %s for %s not applied: %s", answer.dedupe_key, stream_id, broken
            )
            payment = _payment(rebuild(events), stream_id)
            _record_exchanges(payment, exchanges)
            payment.record_delivery({**document, "outcome": "not_applied", "verified": True})
            payment.record_application_error(answer.dedupe_key, broken.code, str(broken))
            await AggregateRepository(store).save(payment)
            return AnswerRecorded(applied=False, confirmed=())
        outcomes = {f.status.outcome for f in facts if f.status is not None}
        confirmed = tuple(
            key
            for key, updates in _unverified_deliveries(events, adapter, payment)
            if updates and all(_holds(payment, update, outcomes) for update in updates)
        )
        for key in confirmed:
            payment.record_delivery(
                {
                    "source": QUERY_SOURCE,
                    "provider": adapter.name,
                    "dedupe_key": key,
                    "outcome": "verified",
                    "confirmed_by": answer.dedupe_key,
                }
            )
        await AggregateRepository(store).save(payment)
        return AnswerRecorded(applied=True, confirmed=confirmed)

    return await retry_on_conflict(
        record_once, attempts=SAVE_ATTEMPTS, what=f"query answer for payment {stream_id}"
    )


async def record_exchanges(
    store: PostgresEventStore, stream_id: str, exchanges: Sequence[ProviderExchange]
) -> None:
    """Keeps the attempts of a query that brought no answer, as evidence that it was asked."""
    if not exchanges:
        return
    repository = AggregateRepository(store)

    async def record_once() -> None:
        payment = await repository.load(Payment, stream_id)
        if payment is not None:
            _record_exchanges(payment, exchanges)
            await repository.save(payment)

    await retry_on_conflict(
        record_once, attempts=SAVE_ATTEMPTS, what=f"query exchanges for payment {stream_id}"
    )


def _payment(aggregate: Any, stream_id: str) -> Payment:
    if not isinstance(aggregate, Payment):
        raise TypeError(f"{stream_id} is not a payment")
    return aggregate


def _record_exchanges(payment: Payment, exchanges: Sequence[ProviderExchange]) -> None:
    for exchange in exchanges:
        payment.record_exchange(dataclasses.asdict(exchange))


def _names(payment: Payment, update: PaymentUpdate) -> bool:
    """Whether the facts are about this payment (an answer naming another is kept, not applied)."""
    reference: PaymentReference = update.reference
    return bool(
        (reference.provider_ref and reference.provider_ref == payment.provider_ref)
        or (reference.order_id and reference.order_id == payment.order_id)
    )


def _news_only(payment: Payment, update: PaymentUpdate) -> PaymentUpdate:
    """The answer without the deposits the payment already holds as verified (and confirmed, if
    the answer says so): re-listing them would count as a duplicate report of each."""

    def is_news(deposit: DepositReport) -> bool:
        known = payment.deposits.get(deposit.deposit_id)
        return known is None or not known.verified or (deposit.confirmed and not known.confirmed)

    return dataclasses.replace(update, deposits=tuple(d for d in update.deposits if is_news(d)))


def _holds(payment: Payment, update: PaymentUpdate, outcomes: set[ProviderPaymentOutcome]) -> bool:
    """Whether the payment holds every fact of `update` as verified: the delivery's claims are
    then confirmed by what the provider answered."""
    currency = payment.expected.currency
    for deposit in update.deposits:
        known = payment.deposits.get(deposit.deposit_id)
        stated = deposit.currency if deposit.currency_stated else currency
        if (
            known is None
            or not known.verified
            or stated != currency
            or known.amount != deposit.amount
            or (deposit.confirmed and not known.confirmed)
        ):
            return False
    cumulative = update.cumulative
    if cumulative is not None and (
        cumulative.currency != currency or cumulative.total > payment.cumulative_total
    ):
        return False
    return update.status is None or update.status.outcome in outcomes


def _unverified_deliveries(
    events: Sequence[Any], adapter: ProviderAdapter, payment: Payment
) -> list[tuple[str, list[PaymentUpdate]]]:
    """The deliveries recorded only unverified in the stream, each read again from its raw body,
    with the facts it states about this payment."""
    found: dict[str, list[PaymentUpdate]] = {}
    for event in events:
        if event.type != _DELIVERY_RECORDED:
            continue
        delivery = decode_document(event.payload)["delivery"]
        key = str(delivery.get("dedupe_key"))
        if (
            delivery.get("outcome") != "unverified"
            or delivery.get("source") == QUERY_SOURCE
            or key in found
            or payment.has_verified_delivery(key)
        ):
            continue
        updates = _facts_of(delivery, adapter, payment)
        if updates is not None:
            found[key] = updates
    return list(found.items())


def _facts_of(
    delivery: dict[str, Any], adapter: ProviderAdapter, payment: Payment
) -> list[PaymentUpdate] | None:
    body = delivery.get("body")
    if not isinstance(body, str):
        return None  # kept as base64: it was not text, so no provider's shape
    try:
        translation = adapter.webhooks.translate(
            WebhookDelivery(
                provider=adapter.name,
                body=body.encode(),
                headers=delivery.get("headers", {}),
                received_at=datetime.fromisoformat(delivery["received_at"]),
            )
        )
    except (WebhookBodyInvalid, RecursionError, UnicodeEncodeError, KeyError, ValueError):
        return None
    return [f for f in translation.facts if isinstance(f, PaymentUpdate) and _names(payment, f)]
