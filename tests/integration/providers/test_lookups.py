"""Lookups by our own ids (`find_payment`, `find_withdrawal`): how the ledger resolves a create
whose answer was lost. Each provider's client against its sandbox, over real HTTP on loopback.

CoinPay finds payments by our order id (its `listTransactions` filters) but has no payout
lookup; Payment Engine finds both by `externalReference`; Cryptofuse, CoinCoin and LiPayKripto
document no lookup by our ids at all.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

import aiohttp
import pytest

from adapters.providers import coinpay, payment_engine
from adapters.providers.contract import (
    CreatePaymentRequest,
    CreateWithdrawalRequest,
    Operation,
    OperationNotSupported,
    ProviderAdapter,
    ProviderCallFailed,
    ProviderExchange,
)
from adapters.providers.http_client import ProviderHttp, RetryPolicy
from adapters.providers.registry import build_adapters
from adapters.sandbox.fleet import SandboxFleet, sandbox_fleet

# One attempt: a create whose connection dropped is not sent again, whatever the retry rules.
ONE_ATTEMPT = RetryPolicy(attempts=1, timeout_seconds=5)
CALLBACK = "http://127.0.0.1:9/unused"


@dataclass
class Recorder:
    exchanges: list[ProviderExchange] = field(default_factory=list)

    async def __call__(self, exchange: ProviderExchange) -> None:
        self.exchanges.append(exchange)

    def operations(self) -> list[str]:
        return [exchange.operation for exchange in self.exchanges]


@dataclass
class Provider:
    fleet: SandboxFleet
    name: str
    adapter: ProviderAdapter

    async def control(self, path: str, body: Any = None) -> Any:
        url = self.fleet.sandboxes[self.name].url + path
        async with aiohttp.ClientSession() as http:
            method = "GET" if body is None else "POST"
            async with http.request(method, url, json=body) as reply:
                assert 200 == reply.status, await reply.text()
                return await reply.json()

    async def count(self, operation: str) -> int:
        answer = await self.control(f"/_sandbox/requests?operation={operation}")
        return int(answer["count"])


def payment(order_id: str, amount: str = "100.00", currency: str = "USDC") -> CreatePaymentRequest:
    return CreatePaymentRequest(
        order_id=order_id, amount=Decimal(amount), currency=currency, callback_url=CALLBACK
    )


def withdrawal(request_id: str) -> CreateWithdrawalRequest:
    return CreateWithdrawalRequest(
        request_id=request_id,
        amount=Decimal("40.00"),
        currency="USD",
        address="acct_customer_1",
        callback_url=CALLBACK,
    )


@pytest.fixture
async def coinpay_sandbox() -> AsyncIterator[Provider]:
    async with sandbox_fleet(["coinpay"]) as fleet:
        table = fleet.provider_tables()["coinpay"]
        http = ProviderHttp(coinpay.PROVIDER_ID, table["base_url"], ONE_ATTEMPT)
        adapter = coinpay.build_adapter(table, http)
        yield Provider(fleet, "coinpay", adapter)
        await adapter.client.close()


@pytest.fixture
async def payment_engine_sandbox() -> AsyncIterator[Provider]:
    async with sandbox_fleet(["payment_engine"]) as fleet:
        adapter = payment_engine.build_adapter(
            fleet.provider_tables()["payment_engine"], policy=ONE_ATTEMPT
        )
        provider = Provider(fleet, "payment_engine", adapter)
        balance = {"accountId": "merchant", "currencyCode": "USD", "availableBalance": "500"}
        await provider.control("/_sandbox/balances", {"balances": [balance]})
        yield provider
        await adapter.client.close()


# --- CoinPay: payments by our order id, no payout lookup ---------------------------------------


async def test_coinpay_finds_a_payment_by_our_order_id_as_its_create_said_it(
    coinpay_sandbox: Provider,
) -> None:
    client = coinpay_sandbox.adapter.client
    await client.create_payment(payment("ORDER-other"), Recorder())
    created = await client.create_payment(payment("ORDER-1"), Recorder())
    record = Recorder()
    found = await client.find_payment("ORDER-1", record)
    assert replace(created, expires_at=None) == found
    assert ["find_payment"] == record.operations()  # the creates' token still serves
    assert record.exchanges[-1].url.endswith("/api/transactions?orderId=ORDER-1")


async def test_coinpay_finds_nothing_for_an_order_it_never_saw(coinpay_sandbox: Provider) -> None:
    await coinpay_sandbox.adapter.client.create_payment(payment("ORDER-1"), Recorder())
    assert await coinpay_sandbox.adapter.client.find_payment("ORDER-2", Recorder()) is None


async def test_coinpay_offers_no_withdrawal_lookup(coinpay_sandbox: Provider) -> None:
    assert coinpay_sandbox.adapter.supports(Operation.FIND_PAYMENT)
    assert not coinpay_sandbox.adapter.supports(Operation.FIND_WITHDRAWAL)
    record = Recorder()
    with pytest.raises(OperationNotSupported):
        await coinpay_sandbox.adapter.client.find_withdrawal("WD-1", record)
    assert [] == record.exchanges


async def test_coinpay_payment_created_but_unanswered_is_found_by_the_lookup(
    coinpay_sandbox: Provider,
) -> None:
    fault = {"operation": "create_payment", "kind": "drop_after"}
    await coinpay_sandbox.control("/_sandbox/faults", fault)
    with pytest.raises(ProviderCallFailed) as lost:
        await coinpay_sandbox.adapter.client.create_payment(payment("ORDER-lost"), Recorder())
    assert lost.value.status is None  # no answer at all
    found = await coinpay_sandbox.adapter.client.find_payment("ORDER-lost", Recorder())
    assert found is not None
    assert (Decimal("100.00"), "USDC", "Pending") == (
        found.expected_amount, found.expected_currency, found.provider_status
    )
    assert 1 == await coinpay_sandbox.count("create_payment")


async def test_coinpay_lookup_that_fails_is_an_error_not_a_none(coinpay_sandbox: Provider) -> None:
    """"Not found" releases the subject, so a failed lookup must never read as one."""
    await coinpay_sandbox.control("/_sandbox/faults", {"operation": "find_payment",
                                                       "statuses": [503]})
    with pytest.raises(ProviderCallFailed) as failed:
        await coinpay_sandbox.adapter.client.find_payment("ORDER-1", Recorder())
    assert 503 == failed.value.status


# --- Payment Engine: both by externalReference -------------------------------------------------


async def test_payment_engine_finds_a_payment_by_our_order_id(
    payment_engine_sandbox: Provider,
) -> None:
    client = payment_engine_sandbox.adapter.client
    created = await client.create_payment(payment("ORDER-1", currency="USD"), Recorder())
    record = Recorder()
    found = await client.find_payment("ORDER-1", record)
    assert replace(created, expires_at=None) == found
    query = "externalReference=ORDER-1&toAccountId=merchant"
    assert record.exchanges[-1].url.endswith(f"/api/v1/transactions?{query}")


async def test_payment_engine_finds_a_withdrawal_by_our_request_id(
    payment_engine_sandbox: Provider,
) -> None:
    client = payment_engine_sandbox.adapter.client
    created = await client.create_withdrawal(withdrawal("WD-1"), Recorder())
    found = await client.find_withdrawal("WD-1", Recorder())
    assert created == found
    assert 1 == await payment_engine_sandbox.count("find_withdrawal")


async def test_payment_engine_tells_a_payment_from_a_withdrawal_with_the_same_reference(
    payment_engine_sandbox: Provider,
) -> None:
    client = payment_engine_sandbox.adapter.client
    await client.create_withdrawal(withdrawal("SAME-1"), Recorder())
    assert await client.find_payment("SAME-1", Recorder()) is None
    created = await client.create_payment(payment("SAME-1", currency="USD"), Recorder())
    found = await client.find_payment("SAME-1", Recorder())
    assert found is not None
    assert created.provider_ref == found.provider_ref


async def test_payment_engine_finds_nothing_for_ids_it_never_saw(
    payment_engine_sandbox: Provider,
) -> None:
    client = payment_engine_sandbox.adapter.client
    assert await client.find_payment("ORDER-none", Recorder()) is None
    assert await client.find_withdrawal("WD-none", Recorder()) is None


async def test_payment_engine_finds_the_payment_not_its_further_deposits(
    payment_engine_sandbox: Provider,
) -> None:
    """Further deposits for an order are transfers with the same reference, made later."""
    client = payment_engine_sandbox.adapter.client
    await payment_engine_sandbox.control("/_sandbox/webhook_url", {"webhook_url": CALLBACK})
    created = await client.create_payment(payment("ORDER-split", currency="USD"), Recorder())
    scenario = f"/_sandbox/payments/{created.provider_ref}/scenario"
    await payment_engine_sandbox.control(scenario, {"scenario": "multiple_deposits"})
    found = await client.find_payment("ORDER-split", Recorder())
    assert found is not None
    assert created.provider_ref == found.provider_ref


@pytest.mark.parametrize(
    ("operation", "create"),
    [
        ("create_payment", lambda client: client.create_payment(
            payment("ORDER-lost", currency="USD"), Recorder())),
        ("create_withdrawal", lambda client: client.create_withdrawal(
            withdrawal("ORDER-lost"), Recorder())),
    ],
)
async def test_payment_engine_create_unanswered_is_found_by_the_lookup(
    payment_engine_sandbox: Provider, operation: str, create: Any
) -> None:
    client = payment_engine_sandbox.adapter.client
    await payment_engine_sandbox.control(
        "/_sandbox/faults", {"operation": operation, "kind": "drop_after"}
    )
    with pytest.raises(ProviderCallFailed):
        await create(client)
    find = client.find_payment if operation == "create_payment" else client.find_withdrawal
    found = await find("ORDER-lost", Recorder())
    assert found is not None
    assert "PENDING" == found.provider_status
    assert 1 == await payment_engine_sandbox.count(operation)


# --- the providers whose documents offer no lookup by our ids ----------------------------------


@pytest.mark.parametrize("provider", ["cryptofuse", "coincoin", "lipaykripto"])
async def test_a_provider_without_a_lookup_says_so_and_asks_nothing(provider: str) -> None:
    async with sandbox_fleet([provider]) as fleet:
        adapter = build_adapters(fleet.provider_tables())[provider]
        record = Recorder()
        try:
            assert not adapter.supports(Operation.FIND_PAYMENT)
            assert not adapter.supports(Operation.FIND_WITHDRAWAL)
            with pytest.raises(OperationNotSupported):
                await adapter.client.find_payment("ORDER-1", record)
            with pytest.raises(OperationNotSupported):
                await adapter.client.find_withdrawal("WD-1", record)
        finally:
            await adapter.client.close()
        async with aiohttp.ClientSession() as http:
            url = fleet.sandboxes[provider].url + "/_sandbox/requests"
            async with http.get(url) as reply:
                assert 0 == (await reply.json())["count"]
    assert [] == record.exchanges
