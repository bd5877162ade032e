"""Polls the providers that can say what they hold for us (Cryptofuse `/user/balances/`, CoinPay's
wallet) and records each answer as a provider-reported balance, the same record a Payment Engine
`account.balance.updated` webhook makes, so that reconciliation compares them all alike."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Mapping
from datetime import datetime

from adapters.providers.contract import (
    OperationNotSupported,
    ProviderAdapter,
    ProviderCallFailed,
    ProviderExchange,
)
from adapters.services.records import append_record
from adapters.storage.outages import DATABASE_OUTAGES
from adapters.storage.postgres_store import PostgresEventStore
from ledger.deliveries import ProviderBalanceReported

log = logging.getLogger(__name__)


class BalancePoller:
    def __init__(
        self,
        store: PostgresEventStore,
        adapters: Mapping[str, ProviderAdapter],
        clock: Callable[[], datetime],
    ) -> None:
        self.store = store
        self.adapters = adapters
        self.clock = clock

    async def poll(self, provider: str) -> int:
        """Records what `provider` reports; returns how many balances. 0 if it has no such call."""
        exchanges: list[ProviderExchange] = []

        async def record(exchange: ProviderExchange) -> None:
            exchanges.append(exchange)

        try:
            reports = await self.adapters[provider].client.fetch_balances(record)
        except OperationNotSupported:
            return 0
        except ProviderCallFailed as failure:
            await append_record(
                self.store,
                f"provider-calls-failed-{provider}",
                "ProviderCall.Failed",
                {
                    "operation": "fetch_balances",
                    "reference": failure.detail,
                    "exchanges": [dataclasses.asdict(e) for e in exchanges],
                },
            )
            raise
        for report in reports:
            reported = ProviderBalanceReported(
                account=report.account,
                currency=report.currency,
                available=report.available,
                pending=report.pending,
                reported_at=report.reported_at or self.clock(),
                # An answer to our own authenticated request: as trustworthy as it gets.
                verified=True,
                provider=provider,
                exchanges=tuple(dataclasses.asdict(e) for e in exchanges),
            )
            await append_record(
                self.store,
                f"provider-balances-{provider}",
                ProviderBalanceReported.event_type,
                reported.document(),
            )
        return len(reports)

    async def run_forever(
        self, interval_seconds: float, healthy: Callable[[], None] = lambda: None
    ) -> None:
        """Polls every provider each interval until cancelled, calling `healthy` after each
        round. A database outage raises, for the supervisor (adapters/http/background.py) to
        restart the loop after a backoff. A provider's own failure does not: it is that
        provider's (already recorded as an event where the call failed), it must not keep the
        providers after it in the round from being polled, and a provider that is down is asked
        again next interval, not at the pace of a restart."""
        while True:
            for provider in self.adapters:
                try:
                    await self.poll(provider)
                except DATABASE_OUTAGES:
                    raise
                except Exception:  # one provider's failure is its own; logged
                    log.exception("balance poll of %s failed; trying again next interval", provider)
            healthy()
            await asyncio.sleep(interval_seconds)
