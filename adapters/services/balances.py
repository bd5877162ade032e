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
from adapters.storage.postgres_store import PostgresEventStore

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
            await append_record(
                self.store,
                f"provider-balances-{provider}",
                "ProviderBalance.Reported",
                {
                    "provider": provider,
                    "source": "poll",
                    "account": report.account,
                    "currency": report.currency,
                    "available": report.available,
                    "pending": report.pending,
                    "reported_at": report.reported_at or self.clock(),
                    # An answer to our own authenticated request: as trustworthy as it gets.
                    "verified": True,
                    "exchanges": [dataclasses.asdict(e) for e in exchanges],
                },
            )
        return len(reports)

    async def run_forever(self, interval_seconds: float) -> None:
        while True:
            for provider in self.adapters:
                try:
                    await self.poll(provider)
                except Exception:
                    log.exception("balance poll of %s failed; trying again next interval", provider)
            await asyncio.sleep(interval_seconds)
