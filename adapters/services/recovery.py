"""Resolves creates whose answer never came: subjects recorded before their provider call that
are still waiting for the provider's word after a grace period (the request timed out, the
connection dropped, or the service died between the call and its answer).

Where the provider's document offers a lookup by our id (`find_payment`, `find_withdrawal`),
the ledger asks: found, the subject is submitted as the create's answer would have said; not
found, it is released (failed: the provider holds nothing). Where it offers none, the subject is
marked as of unknown outcome (reconciliation: `provider_outcome_unknown`) and a person decides;
a withdrawal's funds stay reserved meanwhile, since the provider may be paying it out.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol, TypeVar

from adapters.providers.contract import (
    CreatedPayment,
    CreatedWithdrawal,
    Operation,
    OperationNotSupported,
    ProviderAdapter,
    ProviderCallFailed,
)
from adapters.services.intents import ExchangeLog
from adapters.services.payments import PaymentService
from adapters.services.withdrawals import WithdrawalService
from adapters.storage.read_models.readers import (
    payments_awaiting_answer,
    withdrawals_awaiting_answer,
)
from adapters.storage.repository import AggregateRepository
from ledger.payment import Payment, Submission
from ledger.withdrawal import Withdrawal

log = logging.getLogger(__name__)

# Longer than any create call with its retries takes, so that a create still in flight is not
# taken for a lost one.
GRACE = timedelta(seconds=120)
_BATCH = 200
NO_LOOKUP = "the provider offers no lookup by our id: a person must ask it"


Found = TypeVar("Found", CreatedPayment, CreatedWithdrawal)
Answered_contra = TypeVar("Answered_contra", CreatedPayment, CreatedWithdrawal, contravariant=True)


class Resolver(Protocol[Answered_contra]):
    """What recovery asks of the payment and withdrawal services (see `intents`)."""

    async def accept(
        self, stream: str, created: Answered_contra, calls: ExchangeLog | None
    ) -> object: ...

    async def refuse(self, stream: str, reason: str, calls: ExchangeLog | None) -> object: ...

    async def note_unknown(self, stream: str, reason: str, calls: ExchangeLog | None) -> object: ...


@dataclass(frozen=True, slots=True)
class RecoveryResult:
    submitted: int = 0  # the provider holds it: now submitted
    released: int = 0  # the provider holds nothing: failed, funds released
    unknown: int = 0  # no lookup, or the lookup failed: left for a person or the next pass


class SubmissionRecovery:
    def __init__(
        self,
        adapters: Mapping[str, ProviderAdapter],
        payments: PaymentService,
        withdrawals: WithdrawalService,
    ) -> None:
        self.adapters = adapters
        self.payments = payments
        self.withdrawals = withdrawals
        self.store = payments.store
        self.repository = AggregateRepository(payments.store)

    async def run_forever(self, interval_seconds: float, healthy: Callable[[], None]) -> None:
        """A pass every interval; raising (the database is gone) ends it for the supervisor."""
        while True:
            await self.recover()
            healthy()
            await asyncio.sleep(interval_seconds)

    async def recover(self, *, older_than: timedelta = GRACE) -> RecoveryResult:
        """One pass over the subjects still waiting for their provider (by the read models,
        each then re-read from its own stream)."""
        since = datetime.now(UTC) - older_than
        payments = await payments_awaiting_answer(self.store.pool, since, _BATCH)
        withdrawals = await withdrawals_awaiting_answer(self.store.pool, since, _BATCH)
        outcomes = [await self._payment(str(row["payment_id"])) for row in payments]
        outcomes += [await self._withdrawal(str(row["withdrawal_id"])) for row in withdrawals]
        return RecoveryResult(
            submitted=outcomes.count("submitted"),
            released=outcomes.count("released"),
            unknown=outcomes.count("unknown"),
        )

    async def _payment(self, stream: str) -> str:
        payment = await self.repository.load(Payment, stream)
        if payment is None or payment.submission is not Submission.SUBMITTING:
            return "resolved"
        order_id = payment.order_id
        return await self._ask(
            stream,
            payment.provider,
            Operation.FIND_PAYMENT,
            lambda adapter, calls: adapter.client.find_payment(order_id, calls),
            self.payments,
        )

    async def _withdrawal(self, stream: str) -> str:
        withdrawal = await self.repository.load(Withdrawal, stream)
        if withdrawal is None or not withdrawal.awaits_provider_answer:
            return "resolved"
        request_id = withdrawal.request_id
        return await self._ask(
            stream,
            withdrawal.provider,
            Operation.FIND_WITHDRAWAL,
            lambda adapter, calls: adapter.client.find_withdrawal(request_id, calls),
            self.withdrawals,
        )

    @staticmethod
    async def _find(
        adapter: ProviderAdapter | None,
        lookup: Operation,
        find: Callable[[ProviderAdapter, ExchangeLog], Awaitable[Found | None]],
        calls: ExchangeLog,
    ) -> Found | None:
        if adapter is None or not adapter.supports(lookup):
            raise OperationNotSupported(lookup.value)
        return await find(adapter, calls)

    async def _ask(
        self,
        stream: str,
        provider: str,
        lookup: Operation,
        find: Callable[[ProviderAdapter, ExchangeLog], Awaitable[Found | None]],
        service: Resolver[Found],
    ) -> str:
        """Asks the provider by our id and records what it says: submitted, released, or
        unknown (no lookup, or it failed: the next pass asks again)."""
        adapter = self.adapters.get(provider)
        calls = ExchangeLog()
        try:
            found = await self._find(adapter, lookup, find, calls)
        except OperationNotSupported:
            await service.note_unknown(stream, NO_LOOKUP, calls)
            return "unknown"
        except ProviderCallFailed as failed:
            log.warning("recovery: %s of %s failed: %s", lookup.value, stream, failed)
            await service.note_unknown(stream, f"lookup failed: {failed}", calls)
            return "unknown"
        if found is None:
            await service.refuse(stream, "the provider holds nothing under our id", calls)
            return "released"
        await service.accept(stream, found, calls)
        return "submitted"
