"""Withdrawals: funds reserved and the request recorded before the provider is asked; a refusal
releases the funds in the same transaction that records it (see `intents`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from decimal import Decimal
from typing import Protocol

from adapters.config import Settings
from adapters.ingestion.subject_index import WITHDRAWAL_REF, WITHDRAWAL_REQUEST
from adapters.providers.contract import (
    CreatedWithdrawal,
    CreateWithdrawalRequest,
    Operation,
    OperationNotSupported,
    ProviderAdapter,
)
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
from ledger.ports import Claim, ClaimTaken
from ledger.withdrawal import Withdrawal

REQUEST_CLAIM = WITHDRAWAL_REQUEST
REF_CLAIM = WITHDRAWAL_REF
RESOLVE_ATTEMPTS = 10


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


class WithdrawalService:
    def __init__(
        self,
        store: PostgresEventStore,
        adapters: Mapping[str, ProviderAdapter],
        settings: Settings,
        funds: FundsGuard | None = None,
    ) -> None:
        self.store = store
        self.repository = AggregateRepository(store)
        self.adapters = adapters
        self.settings = settings
        self.funds = funds or NoFundsCheck()
        self.in_flight = SubmissionsInFlight()

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
        idempotency: IdempotencyClaim | None = None,
    ) -> Withdrawal:
        """Reserves and records, then asks the provider. Raises InsufficientFunds,
        SubjectAlreadyExists, IdempotencyKeyTaken, or SubmissionFailed naming the withdrawal."""
        adapter = adapter_for(self.adapters, provider)
        if not adapter.supports(Operation.CREATE_WITHDRAWAL):
            # Refused up front: nothing recorded, nothing reserved.
            raise OperationNotSupported(f"{provider} offers no withdrawals")
        withdrawal = Withdrawal.request(
            provider=provider,
            request_id=request_id,
            amount=Money.of(amount, currency),
            address=address,
            pay_currency=pay_currency,
            customer_id=customer_id,
        )
        stream = str(withdrawal.id)
        callback_url, token = callback_for(adapter, self.settings)
        identity = await self._request_claim(provider, request_id, stream)
        with self.in_flight.holding(stream):
            async with self.funds.reserving(provider, currency, withdrawal.requested.amount):
                try:
                    claims = intent_claims(stream, identity, token, idempotency)
                    await self.repository.save(withdrawal, claims=claims)
                except ClaimTaken as taken:
                    raise claim_conflict(taken) from None
            return await self._submit(stream, adapter, withdrawal, callback_url)

    async def _submit(
        self,
        stream: str,
        adapter: ProviderAdapter,
        withdrawal: Withdrawal,
        callback_url: str,
    ) -> Withdrawal:
        """Sends the recorded withdrawal to its provider and records the outcome."""
        request = CreateWithdrawalRequest(
            request_id=withdrawal.request_id,
            amount=withdrawal.requested.amount,
            currency=withdrawal.requested.currency,
            address=withdrawal.address,
            callback_url=callback_url,
            pay_currency=withdrawal.pay_currency,
        )
        created, calls = await call_provider(
            stream,
            "create_withdrawal",
            lambda calls: adapter.client.create_withdrawal(request, calls),
            self._submission_failed,
        )
        return await self.accept(stream, created, calls)

    async def _request_claim(self, provider: str, request_id: str, stream: str) -> Claim:
        async def holds(holder: str) -> bool:
            existing = await self.repository.load(Withdrawal, holder)
            return existing is not None and existing.holds_request_id

        key = f"{provider}:{request_id}"
        return await identity_claim(self.store, REQUEST_CLAIM, key, stream, holds)

    async def accept(
        self, stream: str, created: CreatedWithdrawal, calls: ExchangeLog | None = None
    ) -> Withdrawal:
        """Records the provider's withdrawal (its create answer, or what recovery found).
        Deliveries that arrived before it was known are applied by the applier, which sees
        this acceptance in the log."""

        def submit(withdrawal: Withdrawal) -> None:
            withdrawal.submit(
                created.provider_ref,
                created.provider_status,
                created.fee_platform,
                created.fee_network,
            )

        provider = adapter_for(self.adapters, (await self._load(stream)).provider).name
        reference = Claim(REF_CLAIM, f"{provider}:{created.provider_ref}", stream)
        return await self._resolve(stream, calls, submit, reference)

    async def _submission_failed(
        self, stream: str, calls: ExchangeLog, outcome: CallOutcome, error: Exception
    ) -> Withdrawal:
        def record_failure(withdrawal: Withdrawal) -> None:
            if isinstance(error, OperationNotSupported):
                withdrawal.cancel(f"not supported by {withdrawal.provider}: {error}")
            elif outcome is CallOutcome.REFUSED:
                # Failing releases the reservation: the same event, the same transaction.
                withdrawal.fail(f"provider refused: {error}")
            else:
                withdrawal.note_outcome_unknown(f"no answer from the provider: {error}")

        return await self._resolve(stream, calls, record_failure)

    async def refuse(
        self, stream: str, reason: str, calls: ExchangeLog | None = None
    ) -> Withdrawal:
        """The provider holds no withdrawal for this request (recovery asked): release it."""
        return await self._resolve(stream, calls, lambda withdrawal: withdrawal.fail(reason))

    async def note_unknown(
        self, stream: str, reason: str, calls: ExchangeLog | None = None
    ) -> Withdrawal:
        return await self._resolve(
            stream, calls, lambda withdrawal: withdrawal.note_outcome_unknown(reason)
        )

    async def _load(self, stream: str) -> Withdrawal:
        withdrawal = await self.repository.load(Withdrawal, stream)
        assert withdrawal is not None, f"withdrawal {stream} was recorded before its call"
        return withdrawal

    async def _resolve(
        self,
        stream: str,
        calls: ExchangeLog | None,
        decide: Callable[[Withdrawal], None],
        reference: Claim | None = None,
    ) -> Withdrawal:
        """Records a submission's outcome with its exchanges, once: a withdrawal that a
        webhook or the recovery loop moved on meanwhile keeps its state (a webhook may overtake
        the create's answer), and still gets the provider's reference claimed."""

        async def resolve_once() -> Withdrawal:
            withdrawal = await self._load(stream)
            for exchange in calls.documents() if calls else []:
                withdrawal.record_exchange(exchange)
            if withdrawal.awaits_provider_answer:
                decide(withdrawal)
            claims = []
            if reference and not await self.store.find_claim(reference.namespace, reference.key):
                claims.append(reference)
            await self.repository.save(withdrawal, claims=claims)
            return withdrawal

        return await retry_on_conflict(
            resolve_once, attempts=RESOLVE_ATTEMPTS, what=f"resolving withdrawal {stream}"
        )
