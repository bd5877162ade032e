"""Metrics as wrappers around the store and the provider clients (formance's
controller_with_traces style): the services never see a metric."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from typing import Any

from adapters.observability.metrics import LedgerMetrics
from adapters.providers.contract import (
    CreatedPayment,
    CreatedWithdrawal,
    CreatePaymentRequest,
    CreateWithdrawalRequest,
    ExchangeRecorder,
    ProviderAdapter,
    ProviderExchange,
)
from adapters.storage.postgres_store import PostgresEventStore
from ledger.commands import ProviderBalanceReport, Translation
from ledger.ports import Claim, NewEvent, RecordedEvent


class MeteredEventStore(PostgresEventStore):
    """The store it is given, timing every append and counting its batch.

    The same store, not a second one over the same pool: its state (group commit's partition
    writers and their connections) must stay one, whoever appends through it or closes it. So
    the wrapper shares the store's attributes, and keeps its own registry in a slot, apart from
    them: two apps wrapping one store count each into its own."""

    __slots__ = ("_metrics",)

    def __init__(self, store: PostgresEventStore, metrics: LedgerMetrics) -> None:
        self.__dict__ = store.__dict__
        self._metrics = metrics

    async def append(
        self,
        events: Sequence[NewEvent],
        *,
        expected_versions: dict[str, int],
        claims: Sequence[Claim] = (),
    ) -> list[RecordedEvent]:
        started = time.perf_counter()
        try:
            return await super().append(
                events, expected_versions=expected_versions, claims=claims
            )
        finally:
            # Refused appends (conflicts, claims taken) cost the database as much: timed too.
            self._metrics.append_seconds.observe(time.perf_counter() - started)
            self._metrics.append_batch_events.observe(len(events))


class MeteredClient:
    """A provider client whose every recorded exchange is also counted and timed.

    The exchanges are the ones http_client.py records for each attempt (retries included), so
    the metric and the evidence in the log say the same thing."""

    def __init__(self, client: Any, metrics: LedgerMetrics) -> None:
        self._client = client
        self._metrics = metrics

    def __getattr__(self, name: str) -> Any:
        # Attributes outside the protocol (`unsupported_operations`, the transport tests tune).
        return getattr(self._client, name)

    def _observed(self, record: ExchangeRecorder) -> ExchangeRecorder:
        async def observe(exchange: ProviderExchange) -> None:
            self._metrics.provider_exchange(exchange)
            await record(exchange)

        return observe

    async def create_payment(
        self, request: CreatePaymentRequest, record: ExchangeRecorder
    ) -> CreatedPayment:
        created: CreatedPayment = await self._client.create_payment(
            request, self._observed(record)
        )
        return created

    async def create_withdrawal(
        self, request: CreateWithdrawalRequest, record: ExchangeRecorder
    ) -> CreatedWithdrawal:
        created: CreatedWithdrawal = await self._client.create_withdrawal(
            request, self._observed(record)
        )
        return created

    async def query_payment(
        self, provider_ref: str, order_id: str, record: ExchangeRecorder
    ) -> Translation:
        answer: Translation = await self._client.query_payment(
            provider_ref, order_id, self._observed(record)
        )
        return answer

    async def fetch_balances(self, record: ExchangeRecorder) -> list[ProviderBalanceReport]:
        reports: list[ProviderBalanceReport] = await self._client.fetch_balances(
            self._observed(record)
        )
        return reports

    async def find_payment(self, order_id: str, record: ExchangeRecorder) -> CreatedPayment | None:
        found: CreatedPayment | None = await self._client.find_payment(
            order_id, self._observed(record)
        )
        return found

    async def find_withdrawal(
        self, request_id: str, record: ExchangeRecorder
    ) -> CreatedWithdrawal | None:
        found: CreatedWithdrawal | None = await self._client.find_withdrawal(
            request_id, self._observed(record)
        )
        return found

    async def close(self) -> None:
        await self._client.close()


def metered_adapters(
    adapters: Mapping[str, ProviderAdapter], metrics: LedgerMetrics
) -> dict[str, ProviderAdapter]:
    return {
        name: dataclasses.replace(adapter, client=MeteredClient(adapter.client, metrics))
        for name, adapter in adapters.items()
    }
