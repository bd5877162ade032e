"""The Cryptofuse client against the Cryptofuse sandbox on loopback, and the sandbox's webhooks
through the adapter's own authenticate/translate. No database needed."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from adapters.providers.contract import (
    CreatePaymentRequest,
    CreateWithdrawalRequest,
    OperationNotSupported,
    ProviderAdapter,
    ProviderCallFailed,
    ProviderExchange,
    WebhookDelivery,
)
from adapters.providers.cryptofuse import PROVIDER_ID, build_adapter
from adapters.providers.http_client import RetryPolicy
from adapters.sandbox.cryptofuse import SandboxConfig, create_sandbox_app
from ledger.commands import (
    DepositReport,
    PaymentUpdate,
    ProviderPaymentOutcome,
    ProviderWithdrawalOutcome,
    Translation,
    WithdrawalUpdate,
)
from ledger.deliveries import VerificationOutcome

CLIENT_ID = "client-123"
CLIENT_SECRET = "very-secret-client-secret"
WEBHOOK_SECRET = "very-secret-webhook-key"
FAST = RetryPolicy(attempts=4, base_delay_seconds=0.01, max_delay_seconds=0.02, timeout_seconds=5)


class Recorder:
    def __init__(self) -> None:
        self.exchanges: list[ProviderExchange] = []

    async def __call__(self, exchange: ProviderExchange) -> None:
        self.exchanges.append(exchange)

    def of(self, operation: str) -> list[ProviderExchange]:
        return [e for e in self.exchanges if e.operation == operation]


@dataclass
class Receiver:
    """Plays the ledger's webhook endpoint: 401 when the adapter rejects, else 200."""

    adapter: ProviderAdapter
    url: str = ""
    deliveries: list[WebhookDelivery] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        delivery = WebhookDelivery(
            provider=PROVIDER_ID,
            body=await request.read(),
            headers={k.lower(): v for k, v in request.headers.items()},
        )
        self.deliveries.append(delivery)
        self.arrived.set()
        verification = self.adapter.webhooks.authenticate(delivery)
        if verification.outcome is VerificationOutcome.REJECTED:
            return web.Response(status=401, text=verification.reason)
        return web.Response(text="ok")

    def translations(self) -> list[Translation]:
        return [self.adapter.webhooks.translate(d) for d in self.deliveries]

    async def wait_for(self, count: int) -> None:
        async with asyncio.timeout(2.0):
            while len(self.deliveries) < count:
                self.arrived.clear()
                await self.arrived.wait()


@pytest.fixture
async def sandbox() -> AsyncIterator[TestServer]:
    config = SandboxConfig(
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        webhook_secret=WEBHOOK_SECRET,
        testnet_start_delay_seconds=0.01,
        delayed_success_seconds=0.2,
    )
    server = TestServer(create_sandbox_app(config), host="127.0.0.1", port=0)
    await server.start_server()
    yield server
    await server.close()


def settings_for(server: TestServer, **overrides: str) -> dict[str, str]:
    return {
        "base_url": str(server.make_url("")).rstrip("/"),
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "webhook_secret": WEBHOOK_SECRET,
        **overrides,
    }


@pytest.fixture
async def adapter(sandbox: TestServer) -> AsyncIterator[ProviderAdapter]:
    built = build_adapter(settings_for(sandbox), policy=FAST)
    yield built
    await built.client.close()


@pytest.fixture
async def receiver(adapter: ProviderAdapter) -> AsyncIterator[Receiver]:
    receiver = Receiver(adapter)
    app = web.Application()
    app.router.add_post("/v1/webhooks/cryptofuse", receiver.handle)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    receiver.url = str(server.make_url("/v1/webhooks/cryptofuse"))
    yield receiver
    await server.close()


async def sandbox_call(server: TestServer, method: str, path: str, body: Any = None) -> Any:
    async with aiohttp.ClientSession() as session, session.request(
        method, str(server.make_url(path)), json=body
    ) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def sandbox_paths(server: TestServer) -> list[str]:
    answer = await sandbox_call(server, "GET", "/_sandbox/requests")
    return [r["path"] for r in answer["requests"]]


def payment_request(callback_url: str = "http://127.0.0.1:9/none", **changes: Any) -> Any:
    values: dict[str, Any] = {
        "order_id": "order-1",
        "amount": Decimal("100.00"),
        "currency": "USD",
        "callback_url": callback_url,
        "description": "test order",
    }
    values.update(changes)
    return CreatePaymentRequest(**values)


# ---------------------------------------------------------------------------- payments and auth


async def test_create_payment(adapter: ProviderAdapter, sandbox: TestServer) -> None:
    recorder = Recorder()
    created = await adapter.client.create_payment(
        payment_request(expires_in_minutes=45), recorder
    )
    assert created.provider_status == "waiting"
    assert created.expected_amount == Decimal("100.00000000")
    assert str(created.expected_amount) == "100.00000000"  # kept as the provider wrote it
    assert created.expected_currency == "USDTTRC20"
    assert created.pay_address is not None
    assert created.pay_address.startswith("T")
    assert created.expires_at is not None
    assert created.expires_at.tzinfo is not None

    (create,) = recorder.of("create_payment")
    assert create.status == 201
    sent = json.loads(create.request_body or "", parse_float=Decimal)
    assert sent["amount"] == Decimal("100.00")
    assert sent["currency"] == "USDTTRC20"
    assert sent["price_currency"] == "USD"
    assert sent["expiry_minutes"] == 45
    assert sent["order_id"] == "order-1"
    assert create.request_headers["Authorization"] == "***"

    (login,) = recorder.of("login")
    assert "client_credentials" in (login.request_body or "")
    assert CLIENT_SECRET not in (login.request_body or "")
    assert "client_secret=***" in (login.request_body or "")
    assert json.loads(login.response_body or "")["access_token"] == "***"
    assert json.loads(login.response_body or "")["expires_in"] == 36000


async def test_pay_currency_is_the_crypto_and_currency_the_price(
    adapter: ProviderAdapter,
) -> None:
    recorder = Recorder()
    created = await adapter.client.create_payment(
        payment_request(amount=Decimal("0.01"), currency="BTC", pay_currency="BTC"), recorder
    )
    assert created.expected_currency == "BTC"
    assert created.expected_amount == Decimal("0.01")


async def test_token_is_cached(adapter: ProviderAdapter, sandbox: TestServer) -> None:
    recorder = Recorder()
    await adapter.client.create_payment(payment_request(order_id="a"), recorder)
    await adapter.client.create_payment(payment_request(order_id="b"), recorder)
    paths = await sandbox_paths(sandbox)
    assert paths.count("/o/token/") == 1
    assert paths.count("/payments/") == 2


async def test_expired_token_is_fetched_again_once(
    adapter: ProviderAdapter, sandbox: TestServer
) -> None:
    recorder = Recorder()
    await adapter.client.create_payment(payment_request(order_id="a"), recorder)
    await sandbox_call(sandbox, "POST", "/_sandbox/expire_tokens")
    created = await adapter.client.create_payment(payment_request(order_id="b"), recorder)
    assert created.provider_status == "waiting"
    assert [e.status for e in recorder.of("create_payment")] == [201, 401, 201]
    assert len(recorder.of("login")) == 2


async def test_token_expiry_in_seconds_is_respected() -> None:
    """A token whose expires_in is spent is refreshed before use, without a 401 first."""
    app_config = SandboxConfig(
        client_id=CLIENT_ID, client_secret=CLIENT_SECRET, webhook_secret=WEBHOOK_SECRET,
        token_lifetime_seconds=1,
    )
    server = TestServer(create_sandbox_app(app_config), host="127.0.0.1", port=0)
    await server.start_server()
    adapter = build_adapter(settings_for(server), policy=FAST)
    try:
        recorder = Recorder()
        await adapter.client.create_payment(payment_request(order_id="a"), recorder)
        await adapter.client.create_payment(payment_request(order_id="b"), recorder)
        # A one-second lifetime refreshed a tenth early still holds for an immediate second call.
        assert len(recorder.of("login")) == 1
        await asyncio.sleep(1.0)
        await adapter.client.create_payment(payment_request(order_id="c"), recorder)
        assert len(recorder.of("login")) == 2
        assert all(e.status == 201 for e in recorder.of("create_payment"))
    finally:
        await adapter.client.close()
        await server.close()


async def test_retries_on_503_and_records_every_attempt(
    adapter: ProviderAdapter, sandbox: TestServer
) -> None:
    await sandbox_call(
        sandbox, "POST", "/_sandbox/faults", {"operation": "create_payment", "statuses": [503, 503]}
    )
    recorder = Recorder()
    created = await adapter.client.create_payment(payment_request(), recorder)
    assert created.provider_status == "waiting"
    attempts = recorder.of("create_payment")
    assert [e.status for e in attempts] == [503, 503, 201]
    assert [e.attempt for e in attempts] == [1, 2, 3]


async def test_token_endpoint_is_retried_too(adapter: ProviderAdapter, sandbox: TestServer) -> None:
    await sandbox_call(sandbox, "POST", "/_sandbox/faults", {"operation": "/o/token/",
                                                             "statuses": [502]})
    recorder = Recorder()
    await adapter.client.create_payment(payment_request(), recorder)
    assert [e.status for e in recorder.of("login")] == [502, 200]


async def test_400_is_not_retried(adapter: ProviderAdapter, sandbox: TestServer) -> None:
    recorder = Recorder()
    with pytest.raises(ProviderCallFailed) as raised:
        await adapter.client.create_payment(payment_request(pay_currency="DOGE"), recorder)
    assert raised.value.status == 400
    assert raised.value.operation == "create_payment"
    assert "invalid_currency" in raised.value.detail
    assert len(recorder.of("create_payment")) == 1


async def test_wrong_credentials_fail_at_login(sandbox: TestServer) -> None:
    adapter = build_adapter(settings_for(sandbox, client_secret="wrong"), policy=FAST)
    recorder = Recorder()
    try:
        with pytest.raises(ProviderCallFailed) as raised:
            await adapter.client.create_payment(payment_request(), recorder)
    finally:
        await adapter.client.close()
    assert raised.value.operation == "login"
    assert raised.value.status == 401
    assert recorder.of("create_payment") == []


async def test_sandbox_refuses_calls_without_a_token(sandbox: TestServer) -> None:
    async with aiohttp.ClientSession() as session:
        for method, path in [("POST", "/payments/"), ("GET", "/user/balances/"),
                             ("POST", "/withdrawal/"), ("POST", "/payments/status/")]:
            async with session.request(method, str(sandbox.make_url(path)), json={}) as response:
                assert response.status == 401
        async with session.post(
            str(sandbox.make_url("/payments/")), json={},
            headers={"Authorization": "Bearer made-up"},
        ) as response:
            assert response.status == 401


async def test_unreachable_provider_fails_after_recorded_attempts() -> None:
    adapter = build_adapter(
        {"base_url": "http://127.0.0.1:9", "client_id": "a", "client_secret": "b",
         "webhook_secret": "c"},
        policy=RetryPolicy(attempts=2, base_delay_seconds=0.01, timeout_seconds=1),
    )
    recorder = Recorder()
    try:
        with pytest.raises(ProviderCallFailed):
            await adapter.client.create_payment(payment_request(), recorder)
    finally:
        await adapter.client.close()
    assert [e.status for e in recorder.of("login")] == [None, None]
    assert all(e.error for e in recorder.of("login"))


# ---------------------------------------------------------------------------- status, balances


async def test_query_payment_translates_the_status_answer(
    adapter: ProviderAdapter, sandbox: TestServer, receiver: Receiver
) -> None:
    recorder = Recorder()
    created = await adapter.client.create_payment(payment_request(receiver.url), recorder)
    before = await adapter.client.query_payment(created.provider_ref, "order-1", recorder)
    (update,) = before.facts
    assert isinstance(update, PaymentUpdate)
    assert update.status is not None
    assert update.status.outcome is ProviderPaymentOutcome.PENDING
    assert update.deposits == ()

    await sandbox_call(
        sandbox, "POST", f"/_sandbox/payments/{created.provider_ref}/scenario",
        {"scenario": "full"},
    )
    after = await adapter.client.query_payment(created.provider_ref, "order-1", recorder)
    (update,) = after.facts
    assert isinstance(update, PaymentUpdate)
    assert update.reference.provider_ref == created.provider_ref
    assert update.status is not None
    assert update.status.outcome is ProviderPaymentOutcome.PAID
    assert sum(d.amount for d in update.deposits if d.confirmed) == created.expected_amount
    assert after.dedupe_key != before.dedupe_key
    assert len(recorder.of("query_payment")) == 2


async def test_query_needs_the_transaction_id(adapter: ProviderAdapter) -> None:
    with pytest.raises(OperationNotSupported):
        await adapter.client.query_payment("", "order-1", Recorder())


async def test_query_of_an_unknown_payment_fails(adapter: ProviderAdapter) -> None:
    with pytest.raises(ProviderCallFailed) as raised:
        await adapter.client.query_payment("no-such-id", "order-1", Recorder())
    assert raised.value.status == 404


async def test_fetch_balances(adapter: ProviderAdapter, sandbox: TestServer) -> None:
    await sandbox_call(
        sandbox, "POST", "/_sandbox/balances",
        {"balances": {"USDTTRC20": {"amount": "1000.00000000", "pending_amount": "12.5"},
                      "BTC": {"amount": "0.12345678"}}},
    )
    reports = await adapter.client.fetch_balances(Recorder())
    by_currency = {r.currency: r for r in reports}
    assert by_currency["USDTTRC20"].available == Decimal("1000.00000000")
    assert by_currency["USDTTRC20"].pending == Decimal("12.5")
    assert by_currency["BTC"].available == Decimal("0.12345678")
    assert {r.provider for r in reports} == {"cryptofuse"}
    assert {r.account for r in reports} == {"cryptofuse:main"}
    assert all(r.reported_at is not None for r in reports)


# ---------------------------------------------------------------------------- withdrawals


def withdrawal_request(callback_url: str, amount: str = "100.00") -> CreateWithdrawalRequest:
    return CreateWithdrawalRequest(
        request_id="w-1",
        amount=Decimal(amount),
        currency="USDTTRC20",
        address="TXYZabc1234567890",
        callback_url=callback_url,
    )


async def test_create_withdrawal_with_fee_split(
    adapter: ProviderAdapter, sandbox: TestServer
) -> None:
    recorder = Recorder()
    created = await adapter.client.create_withdrawal(
        withdrawal_request("http://127.0.0.1:9/none"), recorder
    )
    assert created.provider_status == "pending"
    assert created.amount_to_send == Decimal("98.50000000")
    assert created.fee_platform == Decimal("1.00000000")
    assert created.fee_network == Decimal("0.50000000")
    paths = await sandbox_paths(sandbox)
    assert paths.index("/withdrawal/estimate/") < paths.index("/withdrawal/")
    (create,) = recorder.of("create_withdrawal")
    assert json.loads(create.response_body or "")["fee"] == "1.50"  # USD, kept in the record


async def test_withdrawal_fee_without_estimate_is_all_platform(
    adapter: ProviderAdapter, sandbox: TestServer
) -> None:
    await sandbox_call(sandbox, "POST", "/_sandbox/faults",
                       {"operation": "estimate_withdrawal", "statuses": [400]})
    created = await adapter.client.create_withdrawal(
        withdrawal_request("http://127.0.0.1:9/none"), Recorder()
    )
    assert created.fee_platform == Decimal("1.50000000")
    assert created.fee_network is None


async def test_create_withdrawal_is_not_retried(
    adapter: ProviderAdapter, sandbox: TestServer
) -> None:
    await sandbox_call(sandbox, "POST", "/_sandbox/faults",
                       {"operation": "create_withdrawal", "statuses": [503]})
    recorder = Recorder()
    with pytest.raises(ProviderCallFailed) as raised:
        await adapter.client.create_withdrawal(withdrawal_request("http://x"), recorder)
    assert raised.value.status == 503
    assert len(recorder.of("create_withdrawal")) == 1


async def test_insufficient_balance_is_refused(
    adapter: ProviderAdapter, sandbox: TestServer
) -> None:
    with pytest.raises(ProviderCallFailed) as raised:
        await adapter.client.create_withdrawal(
            withdrawal_request("http://x", amount="1000000"), Recorder()
        )
    assert raised.value.status == 400
    assert "insufficient_balance" in raised.value.detail


async def test_withdrawal_scenarios(
    adapter: ProviderAdapter, sandbox: TestServer, receiver: Receiver
) -> None:
    created = await adapter.client.create_withdrawal(withdrawal_request(receiver.url), Recorder())
    path = f"/_sandbox/withdrawals/{created.provider_ref}/scenario"
    answer = await sandbox_call(sandbox, "POST", path, {"scenario": "completed"})
    assert [d["status"] for d in answer["deliveries"]] == [200, 200]
    updates = [t.facts[0] for t in receiver.translations()]
    assert all(isinstance(u, WithdrawalUpdate) for u in updates)
    assert [u.outcome for u in updates if isinstance(u, WithdrawalUpdate)] == [
        ProviderWithdrawalOutcome.PROCESSING,
        ProviderWithdrawalOutcome.COMPLETED,
    ]
    processing, completed = updates
    assert isinstance(processing, WithdrawalUpdate)
    assert isinstance(completed, WithdrawalUpdate)
    assert processing.amount_sent == created.amount_to_send
    assert completed.tx_hash is not None
    assert completed.tx_hash.startswith("0x")
    assert completed.reference.provider_ref == created.provider_ref
    balances = {r.currency: r for r in await adapter.client.fetch_balances(Recorder())}
    assert balances["USDTTRC20"].available == Decimal(9900)
    assert balances["USDTTRC20"].pending == Decimal(0)


async def test_failed_withdrawal_returns_the_funds(
    adapter: ProviderAdapter, sandbox: TestServer, receiver: Receiver
) -> None:
    created = await adapter.client.create_withdrawal(withdrawal_request(receiver.url), Recorder())
    path = f"/_sandbox/withdrawals/{created.provider_ref}/scenario"
    await sandbox_call(sandbox, "POST", path, {"scenario": "failed"})
    (translation,) = receiver.translations()
    update = translation.facts[0]
    assert isinstance(update, WithdrawalUpdate)
    assert update.outcome is ProviderWithdrawalOutcome.FAILED
    balances = {r.currency: r for r in await adapter.client.fetch_balances(Recorder())}
    assert balances["USDTTRC20"].available == Decimal(10000)


async def test_manual_review_is_sent_as_processing(
    adapter: ProviderAdapter, sandbox: TestServer, receiver: Receiver
) -> None:
    created = await adapter.client.create_withdrawal(withdrawal_request(receiver.url), Recorder())
    path = f"/_sandbox/withdrawals/{created.provider_ref}/scenario"
    answer = await sandbox_call(sandbox, "POST", path, {"scenario": "manual_review"})
    assert "note" in answer
    (translation,) = receiver.translations()
    assert isinstance(translation.facts[0], WithdrawalUpdate)
    assert translation.facts[0].outcome is ProviderWithdrawalOutcome.PROCESSING


# ---------------------------------------------------------------------------- payment scenarios


def deposits_of(translations: list[Translation]) -> dict[str, DepositReport]:
    """What the ledger would hold: one entry per deposit id, confirmed once any report says so."""
    held: dict[str, DepositReport] = {}
    for translation in translations:
        for fact in translation.facts:
            assert isinstance(fact, PaymentUpdate)
            for deposit in fact.deposits:
                known = held.get(deposit.deposit_id)
                if known is None or (deposit.confirmed and not known.confirmed):
                    held[deposit.deposit_id] = deposit
    return held


def outcomes_of(translations: list[Translation]) -> list[ProviderPaymentOutcome]:
    outcomes = []
    for translation in translations:
        (fact,) = translation.facts
        assert isinstance(fact, PaymentUpdate)
        assert fact.status is not None
        outcomes.append(fact.status.outcome)
    return outcomes


async def run_scenario(
    adapter: ProviderAdapter, sandbox: TestServer, receiver: Receiver, scenario: str
) -> tuple[Decimal, str, list[Translation]]:
    created = await adapter.client.create_payment(payment_request(receiver.url), Recorder())
    answer = await sandbox_call(
        sandbox, "POST", f"/_sandbox/payments/{created.provider_ref}/scenario",
        {"scenario": scenario},
    )
    assert [d["status"] for d in answer["deliveries"]] == [200] * len(receiver.deliveries)
    assert [d["body"].encode() for d in answer["deliveries"]] == [
        d.body for d in receiver.deliveries
    ]
    for delivery in receiver.deliveries:
        verification = adapter.webhooks.authenticate(delivery)
        assert verification.outcome is VerificationOutcome.VERIFIED
    translations = receiver.translations()
    for translation in translations:
        (fact,) = translation.facts
        assert isinstance(fact, PaymentUpdate)
        assert fact.reference.provider_ref == created.provider_ref
    return created.expected_amount, created.expected_currency, translations


@pytest.mark.parametrize(
    ("scenario", "share", "last_outcome"),
    [
        ("full", Decimal(1), ProviderPaymentOutcome.PAID),
        ("partial", Decimal("0.5"), ProviderPaymentOutcome.PARTIALLY_PAID),
        ("over", Decimal("1.5"), ProviderPaymentOutcome.OVERPAID),
        ("expire_no_funds", Decimal(0), ProviderPaymentOutcome.EXPIRED),
        ("expire_with_funds", Decimal("0.5"), ProviderPaymentOutcome.EXPIRED),
        ("fail", Decimal(0), ProviderPaymentOutcome.FAILED),
        ("multiple_deposits", Decimal(1), ProviderPaymentOutcome.PAID),
        ("duplicate", Decimal(1), ProviderPaymentOutcome.PAID),
        ("late", Decimal(1), ProviderPaymentOutcome.PAID),
    ],
)
async def test_payment_scenario_delivers_verified_webhooks_with_the_right_facts(
    adapter: ProviderAdapter,
    sandbox: TestServer,
    receiver: Receiver,
    scenario: str,
    share: Decimal,
    last_outcome: ProviderPaymentOutcome,
) -> None:
    expected, currency, translations = await run_scenario(adapter, sandbox, receiver, scenario)
    held = deposits_of(translations)
    assert sum(d.amount for d in held.values() if d.confirmed) == expected * share
    assert all(d.currency == currency for d in held.values())
    assert outcomes_of(translations)[-1] is last_outcome


async def test_multiple_deposits_are_distinct_and_confirm_at_the_end(
    adapter: ProviderAdapter, sandbox: TestServer, receiver: Receiver
) -> None:
    expected, _, translations = await run_scenario(
        adapter, sandbox, receiver, "multiple_deposits"
    )
    assert len(translations) == 4
    held = deposits_of(translations)
    assert len(held) == 3
    assert sum(d.amount for d in held.values()) == expected
    assert outcomes_of(translations) == [ProviderPaymentOutcome.CONFIRMING] * 3 + [
        ProviderPaymentOutcome.PAID
    ]
    first = translations[0].facts[0]
    assert isinstance(first, PaymentUpdate)
    assert [d.confirmed for d in first.deposits] == [False]


async def test_out_of_order_deliveries_give_the_same_deposits(
    adapter: ProviderAdapter, sandbox: TestServer, receiver: Receiver
) -> None:
    expected, _, translations = await run_scenario(adapter, sandbox, receiver, "out_of_order")
    assert outcomes_of(translations)[0] is ProviderPaymentOutcome.PAID
    assert outcomes_of(translations)[-1] is ProviderPaymentOutcome.CONFIRMING
    held = deposits_of(translations)
    assert len(held) == 3
    assert all(d.confirmed for d in held.values())
    assert sum(d.amount for d in held.values()) == expected


async def test_duplicate_delivery_has_the_same_dedupe_key(
    adapter: ProviderAdapter, sandbox: TestServer, receiver: Receiver
) -> None:
    _, _, translations = await run_scenario(adapter, sandbox, receiver, "duplicate")
    keys = [t.dedupe_key for t in translations]
    assert keys[-1] == keys[-2]
    assert len(set(keys)) == len(keys) - 1
    assert receiver.deliveries[-1].body == receiver.deliveries[-2].body


async def test_late_funds_are_stamped_after_the_expiry(
    adapter: ProviderAdapter, sandbox: TestServer, receiver: Receiver
) -> None:
    _, _, translations = await run_scenario(adapter, sandbox, receiver, "late")
    expired = translations[0].facts[0]
    assert isinstance(expired, PaymentUpdate)
    assert expired.status is not None
    assert expired.status.outcome is ProviderPaymentOutcome.EXPIRED
    assert expired.status.reported_at is not None
    for deposit in deposits_of(translations[1:]).values():
        assert deposit.observed_at is not None
        assert deposit.observed_at > expired.status.reported_at


async def test_completed_webhook_names_no_currency_like_the_document(
    adapter: ProviderAdapter, sandbox: TestServer, receiver: Receiver
) -> None:
    await run_scenario(adapter, sandbox, receiver, "full")
    confirming, completed = (json.loads(d.body) for d in receiver.deliveries)
    assert confirming["data"]["currency"] == "USDTTRC20"
    assert "currency" not in completed["data"]
    assert completed["data"]["payment_type"] == "full"
    assert completed["data"]["payment_history"][0]["amount"] == "100.00000000"
    assert b'"final_usd_value": 100.00' in receiver.deliveries[1].body


async def test_webhooks_signed_with_another_secret_are_rejected(
    sandbox: TestServer, receiver: Receiver
) -> None:
    """The receiver checks with the adapter's secret; a sandbox with another secret is refused."""
    config = SandboxConfig(client_id=CLIENT_ID, client_secret=CLIENT_SECRET,
                           webhook_secret="not-the-shared-secret")
    other = TestServer(create_sandbox_app(config), host="127.0.0.1", port=0)
    await other.start_server()
    adapter = build_adapter(settings_for(other), policy=FAST)
    try:
        created = await adapter.client.create_payment(payment_request(receiver.url), Recorder())
        answer = await sandbox_call(
            other, "POST", f"/_sandbox/payments/{created.provider_ref}/scenario",
            {"scenario": "full"},
        )
    finally:
        await adapter.client.close()
        await other.close()
    assert [d["status"] for d in answer["deliveries"]] == [401, 401]


# ---------------------------------------------------------------------------- testnet amounts


@pytest.mark.parametrize(
    ("amount", "count", "share", "last_outcome"),
    [
        ("123.45", 2, Decimal(1), ProviderPaymentOutcome.PAID),
        ("234.56", 2, Decimal(1), ProviderPaymentOutcome.PAID),
        ("345.67", 2, Decimal("0.5"), ProviderPaymentOutcome.PARTIALLY_PAID),
        ("456.78", 2, Decimal("1.5"), ProviderPaymentOutcome.OVERPAID),
        ("567.89", 1, Decimal(0), ProviderPaymentOutcome.EXPIRED),
        ("678.90", 1, Decimal(0), ProviderPaymentOutcome.FAILED),
    ],
)
async def test_testnet_amounts_send_webhooks_by_themselves(
    adapter: ProviderAdapter,
    receiver: Receiver,
    amount: str,
    count: int,
    share: Decimal,
    last_outcome: ProviderPaymentOutcome,
) -> None:
    created = await adapter.client.create_payment(
        payment_request(receiver.url, amount=Decimal(amount)), Recorder()
    )
    assert receiver.deliveries == []  # nothing before the create answer
    await receiver.wait_for(count)
    await asyncio.sleep(0.05)  # nothing more arrives
    assert len(receiver.deliveries) == count
    translations = receiver.translations()
    held = deposits_of(translations)
    assert sum(d.amount for d in held.values() if d.confirmed) == created.expected_amount * share
    assert outcomes_of(translations)[-1] is last_outcome


async def test_delayed_testnet_success_waits(adapter: ProviderAdapter, receiver: Receiver) -> None:
    await adapter.client.create_payment(
        payment_request(receiver.url, amount=Decimal("234.56")), Recorder()
    )
    await asyncio.sleep(0.1)
    assert receiver.deliveries == []
    await receiver.wait_for(2)
