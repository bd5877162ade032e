"""Creating payments and withdrawals at a provider, and recording every exchange about them."""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol

from adapters.config import Settings
from adapters.providers.contract import (
    CreatePaymentRequest,
    CreateWithdrawalRequest,
    Operation,
    OperationNotSupported,
    ProviderAdapter,
    ProviderCallFailed,
    ProviderExchange,
    TokenScope,
)
from adapters.services.conflicts import retry_on_conflict
from adapters.services.ingestion import WebhookIngestion, token_hash
from adapters.services.records import append_record
from adapters.storage.postgres_store import PostgresEventStore
from adapters.storage.repository import AggregateRepository
from ledger.money import Money
from ledger.payment import Payment
from ledger.ports import Claim
from ledger.withdrawal import Withdrawal


class UnknownProvider(Exception):
    pass


class OrderAlreadyExists(Exception):
    def __init__(self, existing_stream: str) -> None:
        super().__init__(f"order already exists as {existing_stream}")
        self.existing_stream = existing_stream


# Reading a payment may record its expiry; a concurrent writer makes it read again.
EXPIRY_SAVE_ATTEMPTS = 5


class FundsGuard(Protocol):
    def reserving(
        self, provider: str, currency: str, amount: Decimal
    ) -> AbstractAsyncContextManager[None]:
        """Refuses (InsufficientFunds) unless `amount` is available; the block records the
        reservation while no other reservation of the same funds can be checked."""
        ...


class NoFundsCheck:
    """For tools that write history directly (tests of the domain, imports): no check."""

    @asynccontextmanager
    async def reserving(
        self,
        provider: str,  # noqa: ARG002 - the guard's signature; nothing is checked
        currency: str,  # noqa: ARG002
        amount: Decimal,  # noqa: ARG002
    ) -> AsyncIterator[None]:
        yield


def exchange_document(exchange: ProviderExchange) -> dict[str, Any]:
    return dataclasses.asdict(exchange)


class PaymentService:
    def __init__(
        self,
        store: PostgresEventStore,
        adapters: Mapping[str, ProviderAdapter],
        settings: Settings,
        ingestion: WebhookIngestion,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        funds: FundsGuard | None = None,
    ) -> None:
        self.funds = funds or NoFundsCheck()
        self.store = store
        self.repository = AggregateRepository(store)
        self.adapters = adapters
        self.settings = settings
        self.ingestion = ingestion
        self.clock = clock

    def _adapter(self, provider: str) -> ProviderAdapter:
        if provider not in self.adapters:
            raise UnknownProvider(provider)
        return self.adapters[provider]

    def _callback(self, adapter: ProviderAdapter) -> tuple[str, str | None]:
        """The callback URL to hand out, and the per-subject token in it (if any)."""
        scope = adapter.webhooks.token_scope
        if scope is TokenScope.PER_SUBJECT:
            token = secrets.token_urlsafe(32)
            return self.settings.webhook_url(adapter.name, token), token
        if scope is TokenScope.PROVIDER:
            configured = str(adapter.settings.get("webhook_token", ""))
            return self.settings.webhook_url(adapter.name, configured or None), None
        return self.settings.webhook_url(adapter.name), None

    async def create_payment(
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
    ) -> Payment:
        adapter = self._adapter(provider)
        price = Money.of(amount, currency)
        existing = await self.store.find_claim("payment_order", f"{provider}:{order_id}")
        if existing is not None:
            raise OrderAlreadyExists(existing.stream_id)
        callback_url, token = self._callback(adapter)
        exchanges: list[ProviderExchange] = []

        async def record(exchange: ProviderExchange) -> None:
            exchanges.append(exchange)

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
        try:
            created = await adapter.client.create_payment(request, record)
        except ProviderCallFailed:
            await self._record_failed_call(provider, "create_payment", order_id, exchanges)
            raise
        except OperationNotSupported:
            # Refused before anything was written (the client says so before calling out);
            # an exchange made on the way is still kept.
            if exchanges:
                await self._record_failed_call(provider, "create_payment", order_id, exchanges)
            raise
        payment = Payment.create(
            provider=provider,
            provider_ref=created.provider_ref,
            order_id=order_id,
            expected=Money.of(created.expected_amount, created.expected_currency),
            price=price,
            expires_at=created.expires_at,
            customer_id=customer_id,
            pay_address=created.pay_address,
            provider_status=created.provider_status,
            metadata={**(metadata or {}), "payment_url": created.payment_url},
        )
        for exchange in exchanges:
            payment.record_exchange(exchange_document(exchange))
        stream = str(payment.id)
        claims = [
            Claim("payment_ref", f"{provider}:{created.provider_ref}", stream),
            Claim("payment_order", f"{provider}:{order_id}", stream),
        ]
        if token:
            claims.append(Claim("callback_token", token_hash(token), stream))
        await self.repository.save(payment, claims=claims)
        await self.ingestion.match_unmatched(provider, "payment", [created.provider_ref, order_id])
        return await self.load_payment(payment.id) or payment

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

    async def create_withdrawal(
        self,
        *,
        provider: str,
        request_id: str,
        amount: Decimal,
        currency: str,
        address: str,
        pay_currency: str | None = None,
        customer_id: str | None = None,
    ) -> Withdrawal:
        adapter = self._adapter(provider)
        if not adapter.supports(Operation.CREATE_WITHDRAWAL):
            # Refused up front: nothing recorded, nothing reserved.
            raise OperationNotSupported(f"{provider} offers no withdrawals")
        existing = await self.store.find_claim("withdrawal_request", f"{provider}:{request_id}")
        if existing is not None:
            raise OrderAlreadyExists(existing.stream_id)
        withdrawal = Withdrawal.request(
            provider=provider,
            request_id=request_id,
            amount=Money.of(amount, currency),
            address=address,
            pay_currency=pay_currency,
            customer_id=customer_id,
        )
        callback_url, token = self._callback(adapter)
        stream = str(withdrawal.id)
        claims = [Claim("withdrawal_request", f"{provider}:{request_id}", stream)]
        if token:
            claims.append(Claim("callback_token", token_hash(token), stream))
        # The request (and so the reservation of funds) is recorded before the provider is
        # asked, so that a crash between the two leaves a visible, reserved withdrawal.
        async with self.funds.reserving(provider, currency, withdrawal.requested.amount):
            await self.repository.save(withdrawal, claims=claims)
        exchanges: list[ProviderExchange] = []

        async def record(exchange: ProviderExchange) -> None:
            exchanges.append(exchange)

        request = CreateWithdrawalRequest(
            request_id=request_id,
            amount=withdrawal.requested.amount,
            currency=currency,
            address=address,
            callback_url=callback_url,
            pay_currency=pay_currency,
        )
        try:
            created = await adapter.client.create_withdrawal(request, record)
        except (ProviderCallFailed, OperationNotSupported) as failure:
            for exchange in exchanges:
                withdrawal.record_exchange(exchange_document(exchange))
            if isinstance(failure, OperationNotSupported):
                # The provider cannot take this request at all: release the reservation.
                withdrawal.cancel(f"not supported by {provider}: {failure}")
            elif failure.status is not None and 400 <= failure.status < 500:
                withdrawal.fail(f"provider refused: {failure.detail}")
            await self.repository.save(withdrawal)
            raise
        for exchange in exchanges:
            withdrawal.record_exchange(exchange_document(exchange))
        withdrawal.submit(
            created.provider_ref, created.provider_status, created.fee_platform, created.fee_network
        )
        await self.repository.save(
            withdrawal,
            claims=[Claim("withdrawal_ref", f"{provider}:{created.provider_ref}", stream)],
        )
        await self.ingestion.match_unmatched(
            provider, "withdrawal", [created.provider_ref, request_id]
        )
        return withdrawal

    async def _record_failed_call(
        self, provider: str, operation: str, reference: str, exchanges: list[ProviderExchange]
    ) -> None:
        await append_record(
            self.store,
            f"provider-calls-failed-{provider}",
            "ProviderCall.Failed",
            {
                "operation": operation,
                "reference": reference,
                "exchanges": [exchange_document(e) for e in exchanges],
            },
        )


def body_fingerprint(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()
