"""The Payment Engine client against its sandbox on loopback, and the sandbox's webhooks read
back through the adapter's own authenticate and translate."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
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
    ProviderAdapter,
    ProviderCallFailed,
    ProviderExchange,
    WebhookDelivery,
)
from adapters.providers.http_client import ProviderHttp, RetryPolicy
from adapters.providers.payment_engine import PROVIDER_ID, build_adapter
from adapters.providers.payment_engine.auth import LoginAuthenticator
from adapters.providers.payment_engine.client import PaymentEngineClient
from adapters.sandbox.payment_engine import SandboxConfig, create_sandbox_app
from ledger.commands import (
    PaymentUpdate,
    ProviderBalanceReport,
    ProviderPaymentOutcome,
    ProviderWithdrawalOutcome,
    Translation,
    WithdrawalUpdate,
)
from ledger.deliveries import VerificationOutcome
from ledger.money import loads_exact

SECRET = "whsec_integration"
FAST = RetryPolicy(attempts=3, base_delay_seconds=0.01, max_delay_seconds=0.02, timeout_seconds=5)


@dataclass
class Recorder:
    exchanges: list[ProviderExchange] = field(default_factory=list)

    async def __call__(self, exchange: ProviderExchange) -> None:
        self.exchanges.append(exchange)

    def statuses(self, operation: str) -> list[int | None]:
        return [e.status for e in self.exchanges if e.operation == operation]


@dataclass
class Received:
    """What the test's webhook receiver saw, judged by the adapter itself."""

    verifications: list[VerificationOutcome] = field(default_factory=list)
    translations: list[Translation] = field(default_factory=list)


@dataclass
class Harness:
    sandbox: TestServer
    received: Received
    adapter: ProviderAdapter
    session: aiohttp.ClientSession

    async def control(self, path: str, body: Any = None) -> Any:
        url = self.sandbox.make_url(path)
        if body is None and path.endswith("requests"):
            async with self.session.get(url) as response:
                return loads_exact(await response.read())
        async with self.session.post(url, json=body or {}) as response:
            assert response.status == 200, await response.text()
            return loads_exact(await response.read())

    async def requests(self) -> list[tuple[str, str]]:
        answer = await self.control("/_sandbox/requests")
        return [(r["method"], r["path"]) for r in answer["requests"]]


def receiver_app(adapter_holder: list[ProviderAdapter], received: Received) -> web.Application:
    async def handle(request: web.Request) -> web.Response:
        adapter = adapter_holder[0]
        delivery = WebhookDelivery(
            provider=PROVIDER_ID,
            body=await request.read(),
            headers={k.lower(): v for k, v in request.headers.items()},
        )
        verification = adapter.webhooks.authenticate(delivery)
        received.verifications.append(verification.outcome)
        if verification.outcome is VerificationOutcome.REJECTED:
            return web.Response(status=401)
        received.translations.append(adapter.webhooks.translate(delivery))
        return web.Response(text="OK")

    app = web.Application()
    app.router.add_post("/v1/webhooks/payment_engine", handle)
    return app


@asynccontextmanager
async def start(**config: Any) -> AsyncIterator[Harness]:
    received = Received()
    holder: list[ProviderAdapter] = []
    receiver = TestServer(receiver_app(holder, received), host="127.0.0.1")
    await receiver.start_server()
    webhook_url = str(receiver.make_url("/v1/webhooks/payment_engine"))
    sandbox_config = SandboxConfig(
        **{"webhook_secret": SECRET, "webhook_url": webhook_url, **config}
    )
    sandbox = TestServer(create_sandbox_app(sandbox_config), host="127.0.0.1")
    await sandbox.start_server()
    settings: dict[str, Any] = {
        "base_url": str(sandbox.make_url("")),
        "webhook_secret": SECRET,
        "merchant_account_id": sandbox_config.merchant_account_id,
    }
    if sandbox_config.api_key:
        settings["api_key"] = sandbox_config.api_key
    else:
        settings |= {"username": sandbox_config.username, "password": sandbox_config.password}
    holder.append(build_adapter(settings, policy=FAST))
    session = aiohttp.ClientSession()
    try:
        yield Harness(sandbox, received, holder[0], session)
    finally:
        await session.close()
        await holder[0].client.close()
        await sandbox.close()
        await receiver.close()


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    async with start() as value:
        yield value


def payment_request(amount: str = "100.00", order_id: str = "ORDER-1") -> CreatePaymentRequest:
    return CreatePaymentRequest(
        order_id=order_id,
        amount=Decimal(amount),
        currency="USD",
        callback_url="https://ledger.example/v1/webhooks/payment_engine",
        expires_in_minutes=30,
    )


def withdrawal_request(amount: str = "40.00") -> CreateWithdrawalRequest:
    return CreateWithdrawalRequest(
        request_id="REQ-1",
        amount=Decimal(amount),
        currency="USD",
        address="TXyz-address",
        callback_url="https://ledger.example/v1/webhooks/payment_engine",
    )


# ---------------------------------------------------------------- create and auth


async def test_create_payment_sends_the_amount_as_an_exact_json_number(harness: Harness) -> None:
    recorder = Recorder()
    created = await harness.adapter.client.create_payment(payment_request("100.10"), recorder)
    assert created.provider_ref.startswith("txn_")
    assert (Decimal("100.10"), "USD", "PENDING") == (
        created.expected_amount, created.expected_currency, created.provider_status
    )
    assert created.expires_at is not None  # the ledger's own deadline: the engine has none
    [create] = [e for e in recorder.exchanges if e.operation == "create_payment"]
    assert create.request_body is not None
    sent = loads_exact(create.request_body)
    assert sent["amount"] == Decimal("100.10")
    assert '"amount": 100.10' in create.request_body
    assert ("merchant", "ORDER-1") == (sent["toAccountId"], sent["externalReference"])
    assert create.request_headers["Authorization"] == "***"


async def test_the_login_token_is_cached(harness: Harness) -> None:
    recorder = Recorder()
    await harness.adapter.client.create_payment(payment_request(), recorder)
    await harness.adapter.client.create_payment(payment_request(order_id="ORDER-2"), recorder)
    requests = await harness.requests()
    assert [("POST", "/api/v1/auth/login")] == [r for r in requests if "/auth/" in r[1]]
    login = recorder.exchanges[0]
    assert login.operation == "login"
    assert login.request_body is not None
    assert "sandbox-password" not in login.request_body
    assert login.response_body is not None
    recorded = loads_exact(login.response_body)
    assert ("***", "***", 3600) == (
        recorded["access_token"], recorded["refresh_token"], recorded["expires_in"]
    )


async def test_after_tokens_expire_the_client_logs_in_again(harness: Harness) -> None:
    recorder = Recorder()
    await harness.adapter.client.create_payment(payment_request(), recorder)
    await harness.control("/_sandbox/expire_tokens")
    created = await harness.adapter.client.create_payment(payment_request("5.00"), recorder)
    assert created.expected_amount == Decimal("5.00")
    # 401 on the stale token, the refresh token refused too, then a fresh login.
    assert [201, 401, 201] == recorder.statuses("create_payment")
    assert [401] == recorder.statuses("login_refresh")
    assert [200, 200] == recorder.statuses("login")


async def test_an_expired_access_token_is_refreshed_without_logging_in(harness: Harness) -> None:
    recorder = Recorder()
    await harness.adapter.client.create_payment(payment_request(), recorder)
    await harness.control("/_sandbox/expire_tokens", {"keep_refresh_tokens": True})
    await harness.adapter.client.create_payment(payment_request(), recorder)
    assert [201, 401, 201] == recorder.statuses("create_payment")
    assert [200] == recorder.statuses("login_refresh")
    assert [200] == recorder.statuses("login")


async def test_a_token_is_renewed_before_its_expires_in_runs_out(harness: Harness) -> None:
    """The sandbox says expires_in 3600; an hour later (by the client's clock) the client
    refreshes before calling instead of waiting for a 401."""
    now = [1000.0]
    http = ProviderHttp(PROVIDER_ID, str(harness.sandbox.make_url("")), FAST)
    client = PaymentEngineClient(
        http,
        LoginAuthenticator(http, "sandbox-user", "sandbox-password", clock=lambda: now[0]),
        merchant_account_id="merchant",
        payment_type_id="crypto_deposit",
        withdrawal_payment_type_id="crypto_withdrawal",
        balance_account_ids=["merchant"],
    )
    recorder = Recorder()
    try:
        await client.create_payment(payment_request(), recorder)
        now[0] += 3500  # still more than the early-renewal margin (30 s) before expiry
        await client.create_payment(payment_request(), recorder)
        assert [] == recorder.statuses("login_refresh")
        now[0] += 80  # inside the margin
        await client.create_payment(payment_request(), recorder)
    finally:
        await client.close()
    assert [201, 201, 201] == recorder.statuses("create_payment")
    assert [200] == recorder.statuses("login_refresh")
    assert [200] == recorder.statuses("login")


async def test_wrong_credentials_fail_the_login() -> None:
    async with start() as harness:
        client = build_adapter(
            {"base_url": str(harness.sandbox.make_url("")), "username": "sandbox-user",
             "password": "wrong", "webhook_secret": SECRET},
            policy=FAST,
        ).client
        try:
            with pytest.raises(ProviderCallFailed) as raised:
                await client.create_payment(payment_request(), Recorder())
        finally:
            await client.close()
        assert ("login", 401) == (raised.value.operation, raised.value.status)
        assert raised.value.detail.startswith("UNAUTHORIZED")


async def test_an_api_key_is_sent_instead_of_logging_in() -> None:
    async with start(api_key="key-123") as harness:
        recorder = Recorder()
        await harness.adapter.client.create_payment(payment_request(), recorder)
        answer = await harness.control("/_sandbox/requests")
        assert [("POST", "/api/v1/transactions", "api_key")] == [
            (r["method"], r["path"], r["auth"]) for r in answer["requests"]
        ]
        assert recorder.exchanges[0].request_headers["X-API-Key"] == "***"


async def test_a_wrong_api_key_is_not_retried_and_fails() -> None:
    async with start(api_key="key-123") as harness:
        client = build_adapter(
            {"base_url": str(harness.sandbox.make_url("")), "api_key": "wrong",
             "webhook_secret": SECRET},
            policy=FAST,
        ).client
        recorder = Recorder()
        try:
            with pytest.raises(ProviderCallFailed) as raised:
                await client.create_payment(payment_request(), recorder)
        finally:
            await client.close()
        assert 401 == raised.value.status
        assert [401] == recorder.statuses("create_payment")


# ---------------------------------------------------------------- retries and errors


async def test_a_503_is_retried_and_every_attempt_recorded(harness: Harness) -> None:
    await harness.control(
        "/_sandbox/faults", {"operation": "/api/v1/transactions", "statuses": [503, 503]}
    )
    recorder = Recorder()
    created = await harness.adapter.client.create_payment(payment_request(), recorder)
    assert created.provider_status == "PENDING"
    assert [503, 503, 201] == recorder.statuses("create_payment")
    assert [1, 2, 3] == [e.attempt for e in recorder.exchanges if e.operation == "create_payment"]


async def test_a_400_is_not_retried(harness: Harness) -> None:
    await harness.control("/_sandbox/faults", {"operation": "create_payment", "statuses": [400]})
    recorder = Recorder()
    with pytest.raises(ProviderCallFailed) as raised:
        await harness.adapter.client.create_payment(payment_request(), recorder)
    assert (400, "create_payment") == (raised.value.status, raised.value.operation)
    assert raised.value.detail.startswith("INVALID_REQUEST")
    assert [400] == recorder.statuses("create_payment")


async def test_retries_give_up_after_the_last_attempt(harness: Harness) -> None:
    await harness.control("/_sandbox/faults", {"operation": "login", "statuses": [500, 500, 500]})
    recorder = Recorder()
    with pytest.raises(ProviderCallFailed) as raised:
        await harness.adapter.client.create_payment(payment_request(), recorder)
    assert (500, "login") == (raised.value.status, raised.value.operation)
    assert [500, 500, 500] == recorder.statuses("login")


# ---------------------------------------------------------------- withdrawals and balances


async def test_a_withdrawal_without_funds_is_refused_with_insufficient_funds(
    harness: Harness,
) -> None:
    with pytest.raises(ProviderCallFailed) as raised:
        await harness.adapter.client.create_withdrawal(withdrawal_request(), Recorder())
    assert 422 == raised.value.status
    assert raised.value.detail.startswith("INSUFFICIENT_FUNDS")


async def test_a_withdrawal_is_created_and_its_webhooks_translate(harness: Harness) -> None:
    await harness.control(
        "/_sandbox/balances",
        {"balances": [{"accountId": "merchant", "currencyCode": "USD", "availableBalance": 100}]},
    )
    created = await harness.adapter.client.create_withdrawal(withdrawal_request(), Recorder())
    assert ("PENDING", Decimal("40.00")) == (created.provider_status, created.amount_to_send)
    path = f"/_sandbox/withdrawals/{created.provider_ref}/scenario"
    await harness.control(path, {"scenario": "processing"})
    await harness.control(path, {"scenario": "completed"})
    facts = [t.facts[0] for t in harness.received.translations[1:]]  # [0] is the balance
    updates = [f for f in facts if isinstance(f, WithdrawalUpdate)]
    assert len(facts) == len(updates) == 2
    assert [
        (ProviderWithdrawalOutcome.PROCESSING, None),
        (ProviderWithdrawalOutcome.COMPLETED, Decimal("40.00")),
    ] == [(u.outcome, u.amount_sent) for u in updates]
    reference = updates[1].reference
    assert (created.provider_ref, "REQ-1") == (reference.provider_ref, reference.request_id)


async def test_a_failed_withdrawal_releases_the_funds(harness: Harness) -> None:
    await harness.control(
        "/_sandbox/balances",
        {"balances": [{"accountId": "merchant", "currencyCode": "USD", "availableBalance": 40}]},
    )
    created = await harness.adapter.client.create_withdrawal(withdrawal_request(), Recorder())
    path = f"/_sandbox/withdrawals/{created.provider_ref}/scenario"
    await harness.control(path, {"scenario": "failed"})
    fact = harness.received.translations[-1].facts[0]
    assert isinstance(fact, WithdrawalUpdate)
    assert (ProviderWithdrawalOutcome.FAILED, "INVALID_ACCOUNT_STATUS") == (
        fact.outcome, fact.failure_reason
    )
    [balance] = await harness.adapter.client.fetch_balances(Recorder())
    assert Decimal("40.00") == balance.available


async def test_manual_review_is_reported_as_processing(harness: Harness) -> None:
    await harness.control(
        "/_sandbox/balances",
        {"balances": [{"accountId": "merchant", "currencyCode": "USD", "availableBalance": 40}]},
    )
    created = await harness.adapter.client.create_withdrawal(withdrawal_request(), Recorder())
    answer = await harness.control(
        f"/_sandbox/withdrawals/{created.provider_ref}/scenario", {"scenario": "manual_review"}
    )
    assert "manual-review" in answer["note"]
    fact = harness.received.translations[-1].facts[0]
    assert isinstance(fact, WithdrawalUpdate)
    assert fact.outcome is ProviderWithdrawalOutcome.PROCESSING


async def test_balances_are_fetched_and_reported_by_webhook(harness: Harness) -> None:
    answer = await harness.control(
        "/_sandbox/balances",
        {"balances": [{"accountId": "merchant", "currencyCode": "USD",
                       "availableBalance": "1234.56"}]},
    )
    assert 200 == answer["deliveries"][0]["status"]
    assert '"availableBalance": 1234.56' in answer["deliveries"][0]["body"]
    [reported] = harness.received.translations[0].facts
    assert isinstance(reported, ProviderBalanceReport)
    assert ("merchant", "USD", Decimal("1234.56")) == (
        reported.account, reported.currency, reported.available
    )
    [fetched] = await harness.adapter.client.fetch_balances(Recorder())
    assert ("merchant", "USD", Decimal("1234.56")) == (
        fetched.account, fetched.currency, fetched.available
    )


# ---------------------------------------------------------------- payment scenarios


async def run_payment(
    harness: Harness, scenario: str, amount: str = "100.00"
) -> tuple[str, list[PaymentUpdate]]:
    created = await harness.adapter.client.create_payment(payment_request(amount), Recorder())
    answer = await harness.control(
        f"/_sandbox/payments/{created.provider_ref}/scenario", {"scenario": scenario}
    )
    assert all(d["status"] == 200 for d in answer["deliveries"])
    assert all(v is VerificationOutcome.VERIFIED for v in harness.received.verifications)
    facts = [f for t in harness.received.translations for f in t.facts]
    updates = [f for f in facts if isinstance(f, PaymentUpdate)]
    assert len(updates) == len(facts)
    assert all(u.reference.order_id == "ORDER-1" for u in updates)
    return created.provider_ref, updates


def deposited(updates: list[PaymentUpdate]) -> Decimal:
    """Total of distinct deposits, as the ledger counts them (the same id counts once)."""
    return sum({d.deposit_id: d.amount for u in updates for d in u.deposits}.values(), Decimal(0))


def outcomes(updates: list[PaymentUpdate]) -> list[ProviderPaymentOutcome]:
    return [u.status.outcome for u in updates if u.status is not None]


@pytest.mark.parametrize(
    ("scenario", "total", "words"),
    [
        ("full", "100.00", [ProviderPaymentOutcome.PAID]),
        ("partial", "50.00", [ProviderPaymentOutcome.PAID]),
        ("over", "150.00", [ProviderPaymentOutcome.PAID]),
        ("fail", "0", [ProviderPaymentOutcome.FAILED]),
        ("expire_no_funds", "0", [ProviderPaymentOutcome.EXPIRED]),
        ("expire_with_funds", "50.00",
         [ProviderPaymentOutcome.PAID, ProviderPaymentOutcome.EXPIRED]),
        ("late", "100.00", [ProviderPaymentOutcome.EXPIRED, ProviderPaymentOutcome.PAID]),
    ],
)
async def test_a_payment_scenario_delivers_verified_facts(
    harness: Harness, scenario: str, total: str, words: list[ProviderPaymentOutcome]
) -> None:
    _, updates = await run_payment(harness, scenario)
    assert Decimal(total) == deposited(updates)
    assert words == outcomes(updates)


async def test_late_funds_are_reported_after_the_expiry(harness: Harness) -> None:
    _, updates = await run_payment(harness, "late")
    expiry, deposit = updates
    assert expiry.status is not None
    expired_at, paid_at = expiry.status.reported_at, deposit.deposits[0].observed_at
    assert expired_at is not None
    assert paid_at is not None
    assert expired_at < paid_at


async def test_several_deposits_add_up_to_the_full_amount(harness: Harness) -> None:
    provider_ref, updates = await run_payment(harness, "multiple_deposits")
    ids = [d.deposit_id for u in updates for d in u.deposits]
    assert 3 == len(set(ids))
    assert provider_ref == ids[0]  # the payment's own transaction carries the first part
    assert [Decimal("33.33"), Decimal("33.33"), Decimal("33.34")] == [
        d.amount for u in updates for d in u.deposits
    ]
    assert Decimal("100.00") == deposited(updates)
    keys = [t.dedupe_key for t in harness.received.translations]
    assert len(set(keys)) == 3


async def test_out_of_order_deposits_arrive_reversed(harness: Harness) -> None:
    provider_ref, updates = await run_payment(harness, "out_of_order")
    ids = [d.deposit_id for u in updates for d in u.deposits]
    assert provider_ref == ids[-1]
    assert Decimal("100.00") == deposited(updates)
    stamps = [str(u.deposits[0].observed_at) for u in updates]
    assert stamps == sorted(stamps, reverse=True)
    assert "None" not in stamps


async def test_a_duplicate_delivery_has_the_same_dedupe_key(harness: Harness) -> None:
    _, updates = await run_payment(harness, "duplicate")
    first, second = harness.received.translations
    assert first == second
    assert Decimal("100.00") == deposited(updates)


async def test_the_status_query_agrees_with_the_webhook(harness: Harness) -> None:
    provider_ref, updates = await run_payment(harness, "partial")
    translation = await harness.adapter.client.query_payment(provider_ref, "ORDER-1", Recorder())
    [queried] = translation.facts
    assert isinstance(queried, PaymentUpdate)
    assert updates[0].deposits[0].deposit_id == queried.deposits[0].deposit_id
    assert Decimal("50.00") == queried.deposits[0].amount
    assert queried.status is not None
    assert ("COMPLETED", ProviderPaymentOutcome.PAID) == (
        queried.status.status_word, queried.status.outcome
    )
    assert ("GET", f"/api/v1/transactions/{provider_ref}") in await harness.requests()


async def test_a_pending_payment_queries_as_pending_with_no_deposit(harness: Harness) -> None:
    created = await harness.adapter.client.create_payment(payment_request(), Recorder())
    translation = await harness.adapter.client.query_payment(
        created.provider_ref, "ORDER-1", Recorder()
    )
    [queried] = translation.facts
    assert isinstance(queried, PaymentUpdate)
    assert queried.deposits == ()
    assert queried.status is not None
    assert queried.status.outcome is ProviderPaymentOutcome.PENDING
    assert translation.dedupe_key.startswith("payment_engine:query:")


async def test_querying_an_unknown_payment_fails_with_404(harness: Harness) -> None:
    with pytest.raises(ProviderCallFailed) as raised:
        await harness.adapter.client.query_payment("txn_missing", "ORDER-9", Recorder())
    assert (404, "query_payment") == (raised.value.status, raised.value.operation)


async def test_a_delivery_signed_with_another_secret_is_rejected_by_the_adapter() -> None:
    async with start(webhook_secret="not-the-ledgers") as harness:
        created = await harness.adapter.client.create_payment(payment_request(), Recorder())
        answer = await harness.control(
            f"/_sandbox/payments/{created.provider_ref}/scenario", {"scenario": "full"}
        )
        assert [401] == [d["status"] for d in answer["deliveries"]]
        assert [VerificationOutcome.REJECTED] == harness.received.verifications
