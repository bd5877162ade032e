"""Payments: recorded before the provider is asked, then resolved by its answer; read as the
ledger's clock sees them; settled by finance."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from adapters.config import Settings
from adapters.ingestion.subject_index import PAYMENT_ORDER, PAYMENT_REF
from adapters.providers.contract import CreatedPayment, CreatePaymentRequest, ProviderAdapter
from adapters.services.conflicts import retry_on_conflict
from adapters.services.intents import (
    CallOutcome,
    ExchangeLog,
    IdempotencyClaim,
    SubmissionsInFlight,
    adapter_for,
    call_provider,
    callback_for,
    claim_conflict,
    identity_claim,
    intent_claims,
)
from adapters.storage.postgres_store import PostgresEventStore
from adapters.storage.repository import AggregateRepository
from ledger.money import Money
from ledger.payment import Payment, Submission
from ledger.ports import Claim, ClaimTaken

ORDER_CLAIM = PAYMENT_ORDER
REF_CLAIM = PAYMENT_REF
# Reading a payment may record its expiry; a concurrent writer makes it read again.
EXPIRY_SAVE_ATTEMPTS = 5


class PaymentService:
    def __init__(
        self,
        store: PostgresEventStore,
        adapters: Mapping[str, ProviderAdapter],
        settings: Settings,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.repository = AggregateRepository(store)
        self.adapters = adapters
        self.settings = settings
        self.clock = clock
        self.in_flight = SubmissionsInFlight()

    async def create_payment(  # noqa: PLR0913 - the fields of a payment request
        self,
        *,
        provider: str,
        order_id: str,
        amount: Decimal,
        currency: str,
        pay_currency: str | None = None,
        expires_in_minutes: int | None = None,
        customer_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        idempotency: IdempotencyClaim | None = None,
    ) -> Payment:
        """Records the payment, then asks the provider (see `intents`). Raises
        SubjectAlreadyExists, IdempotencyKeyTaken, or SubmissionFailed naming the payment."""
        adapter = adapter_for(self.adapters, provider)
        price = Money.of(amount, currency)
        # The ledger's own deadline, kept where the provider sets none (API.md "Expiry").
        deadline = (
            self.clock() + timedelta(minutes=expires_in_minutes) if expires_in_minutes else None
        )
        payment = Payment.intend(
            provider=provider,
            order_id=order_id,
            price=price,
            expires_at=deadline,
            customer_id=customer_id,
            metadata=metadata,
        )
        stream = str(payment.id)
        callback_url, token = callback_for(adapter, self.settings)
        identity = await self._order_claim(provider, order_id, stream)
        with self.in_flight.holding(stream):
            try:
                claims = intent_claims(stream, identity, token, idempotency)
                await self.repository.save(payment, claims=claims)
            except ClaimTaken as taken:
                raise claim_conflict(taken) from None
            request = CreatePaymentRequest(
                order_id=order_id,
                amount=price.amount,
                currency=currency,
                callback_url=callback_url,
                pay_currency=pay_currency,
                expires_in_minutes=expires_in_minutes,
                description=f"order {order_id}",
                customer_id=customer_id,
            )
            created, calls = await call_provider(
                stream,
                "create_payment",
                lambda calls: adapter.client.create_payment(request, calls),
                self._submission_failed,
            )
            return await self.accept(stream, created, calls)

    async def _order_claim(self, provider: str, order_id: str, stream: str) -> Claim:
        async def holds(holder: str) -> bool:
            existing = await self.repository.load(Payment, holder)
            return existing is not None and existing.holds_order_id

        return await identity_claim(
            self.store, ORDER_CLAIM, f"{provider}:{order_id}", stream, holds
        )

    async def accept(
        self, stream: str, created: CreatedPayment, calls: ExchangeLog | None = None
    ) -> Payment:
        """Records the provider's payment for a submitting one (its create answer, or what the
        recovery loop found). Deliveries that arrived before it was known are applied by the
        applier, which sees this acceptance in the log."""

        def accept_submission(payment: Payment) -> list[Claim]:
            payment.accept_submission(
                provider_ref=created.provider_ref,
                expected=Money.of(created.expected_amount, created.expected_currency),
                expires_at=created.expires_at,
                provider_status=created.provider_status,
                pay_address=created.pay_address,
                payment_url=created.payment_url,
            )
            return [Claim(REF_CLAIM, f"{payment.provider}:{created.provider_ref}", stream)]

        return await self._resolve(stream, calls, accept_submission)

    async def _submission_failed(
        self, stream: str, calls: ExchangeLog, outcome: CallOutcome, error: Exception
    ) -> Payment:
        if outcome is CallOutcome.REFUSED:
            return await self.refuse(stream, f"provider refused: {error}", calls)
        return await self.note_unknown(stream, f"no answer from the provider: {error}", calls)

    async def refuse(self, stream: str, reason: str, calls: ExchangeLog | None = None) -> Payment:
        """The provider holds nothing for this payment: it ends failed, its order id free."""

        def refuse_submission(payment: Payment) -> list[Claim]:
            payment.refuse_submission(reason)
            return []

        return await self._resolve(stream, calls, refuse_submission)

    async def note_unknown(
        self, stream: str, reason: str, calls: ExchangeLog | None = None
    ) -> Payment:
        def note(payment: Payment) -> list[Claim]:
            payment.note_outcome_unknown(reason)
            return []

        return await self._resolve(stream, calls, note)

    async def _resolve(
        self,
        stream: str,
        calls: ExchangeLog | None,
        decide: Callable[[Payment], list[Claim]],
    ) -> Payment:
        """Records a submission's outcome with the exchanges that led to it, once: a payment
        another writer resolved meanwhile (the recovery loop) is left as it is."""

        async def resolve_once() -> Payment:
            payment = await self.repository.load(Payment, stream)
            assert payment is not None, f"payment {stream} was recorded before its call"
            if payment.submission is not Submission.SUBMITTING:
                return payment
            for exchange in calls.documents() if calls else []:
                payment.record_exchange(exchange)
            claims = decide(payment)
            await self.repository.save(payment, claims=claims)
            return payment

        return await retry_on_conflict(
            resolve_once, attempts=EXPIRY_SAVE_ATTEMPTS, what=f"resolving payment {stream}"
        )

    async def load_payment(self, payment_id: Any) -> Payment | None:
        """The payment as the ledger's clock sees it now: expiry is applied when it is due."""

        async def load_and_expire() -> Payment | None:
            payment = await self.repository.load(Payment, str(payment_id))
            if payment is not None and payment.expires_at and payment.expired_at is None:
                payment.expire_if_due(self.clock())
                await self.repository.save(payment)
            return payment

        # A webhook or the clock sweep may write first: then read what is there now.
        return await retry_on_conflict(
            load_and_expire, attempts=EXPIRY_SAVE_ATTEMPTS, what=f"payment {payment_id}"
        )

    async def settle_payment(self, payment_id: Any) -> Payment | None:
        """Finance settles the payment as it is now (a delivery landing meanwhile is no reason
        to refuse); None when there is no such payment. Raises PaymentCannotBeSettled."""

        async def settle() -> Payment | None:
            payment = await self.load_payment(payment_id)
            if payment is not None:
                payment.settle()
                await self.repository.save(payment)
            return payment

        return await retry_on_conflict(
            settle, attempts=EXPIRY_SAVE_ATTEMPTS, what=f"settling payment {payment_id}"
        )
