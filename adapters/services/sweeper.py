"""The ledger's clock at work: expires payments past their deadline and notices withdrawals the
provider has gone quiet on, by appending events, so that projections (lists, reconciliation) see
what the clock says without anyone having to read the payment first."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from adapters.services.payments import PaymentService
from adapters.storage.postgres_store import PostgresEventStore
from adapters.storage.read_models.readers import payments_due_to_expire, withdrawals_gone_quiet
from adapters.storage.repository import AggregateRepository
from ledger.errors import ConcurrencyConflict
from ledger.withdrawal import Withdrawal

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SweepResult:
    payments_expired: int
    withdrawals_stuck: int


class ClockSweeper:
    def __init__(
        self,
        store: PostgresEventStore,
        payments: PaymentService,
        clock: Callable[[], datetime],
        stuck_after: timedelta,
    ) -> None:
        self.store = store
        self.payments = payments
        self.repository = AggregateRepository(store)
        self.clock = clock
        self.stuck_after = stuck_after

    async def sweep(self) -> SweepResult:
        """One pass over the read models' candidates; each is re-checked on its own stream."""
        now = self.clock()
        due = await payments_due_to_expire(self.store.pool, now)
        expired = 0
        for row in due:
            try:
                payment = await self.payments.load_payment(row["payment_id"])
            except ConcurrencyConflict:
                continue  # a concurrent writer got there first: the next sweep looks again
            expired += payment is not None and payment.expired_at is not None
        quiet = await withdrawals_gone_quiet(self.store.pool, now - self.stuck_after)
        stuck = 0
        for row in quiet:
            withdrawal = await self.repository.load(Withdrawal, row["withdrawal_id"])
            if withdrawal is None or withdrawal.modified_on > now - self.stuck_after:
                continue
            withdrawal.notice_stuck(now)
            try:
                stuck += bool(await self.repository.save(withdrawal))
            except ConcurrencyConflict:
                continue
        return SweepResult(expired, stuck)

    async def run_forever(
        self, interval_seconds: float, healthy: Callable[[], None] = lambda: None
    ) -> None:
        """Sweeps every interval until cancelled, calling `healthy` after each sweep. A sweep
        that fails raises: its supervisor (adapters/http/background.py) logs it and starts
        the loop again after a backoff."""
        while True:
            result = await self.sweep()
            healthy()
            if result.payments_expired or result.withdrawals_stuck:
                log.info("sweep: %s", result)
            await asyncio.sleep(interval_seconds)
