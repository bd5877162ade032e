"""The CoinCoin client against the CoinCoin sandbox on loopback, and the sandbox's webhooks through
the adapter (and, for the money, through the ledger's Payment aggregate)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from adapters.providers.coincoin.client import CoinCoinClient, wall_clock_milliseconds
from adapters.providers.coincoin.protocol import payment_id_for_order
from adapters.providers.coincoin.webhooks import CoinCoinWebhooks
from adapters.providers.contract import (
    CreatedPayment,
    CreatePaymentRequest,
    CreateWithdrawalRequest,
    OperationNotSupported,
    ProviderCallFailed,
    ProviderExchange,
    WebhookDelivery,
)
from adapters.providers.http_client import ProviderHttp, RetryPolicy
from adapters.sandbox.coincoin import SandboxConfig, create_sandbox_app
from ledger.commands import PaymentUpdate, ProviderPaymentOutcome
from ledger.deliveries import VerificationOutcome
from ledger.money import Money
from ledger.payment import Payment

APP_ID = "app-7f3c"
SECRET_KEY = "secret-9d2e"
WEBHOOK_TOKEN = "portal-token-51c0aa"
FAST = RetryPolicy(attempts=4, base_delay_seconds=0.01, max_delay_seconds=0.02, timeout_seconds=2)


class Recorder:
    def __init__(self) -> None:
        self.exchanges: list[ProviderExchange] = []

    async def __call__(self, exchange: ProviderExchange) -> None:
        self.exchanges.append(exchange)


@dataclass
class Received:
    """What the ledger stand-in got: each body with the token from its URL path."""

    deliveries: list[tuple[str | None, bytes]] = field(default_factory=list)


@dataclass
class Harness:
    sandbox: TestServer
    receiver: TestServer
    received: Received
    session: aiohttp.ClientSession

    @property
    def base_url(self) -> str:
        # The document's "API path" carries /v1; the sandbox also serves the bare paths.
        return str(self.sandbox.make_url("/v1"))

    def client(self, secret_key: str = SECRET_KEY, clock_offset_ms: int = 0) -> CoinCoinClient:
        return CoinCoinClient(
            ProviderHttp("coincoin", self.base_url, FAST),
            APP_ID,
            secret_key,
            now_milliseconds=lambda: wall_clock_milliseconds() + clock_offset_ms,
        )

    async def control(self, path: str, body: object = None) -> tuple[int, dict[str, object]]:
        async with self.session.post(self.sandbox.make_url(path), json=body or {}) as response:
            return response.status, await response.json()

    async def sandbox_requests(self) -> list[dict[str, str]]:
        async with self.session.get(self.sandbox.make_url("/_sandbox/requests")) as response:
            payload = await response.json()
        requests: list[dict[str, str]] = payload["requests"]
        return requests


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    received = Received()

    async def webhook(request: web.Request) -> web.Response:
        received.deliveries.append((request.match_info.get("token"), await request.read()))
        return web.Response(status=200)

    receiver_app = web.Application()
    receiver_app.router.add_post("/v1/webhooks/coincoin/{token}", webhook)
    receiver_app.router.add_post("/v1/webhooks/coincoin", webhook)
    receiver = TestServer(receiver_app, host="127.0.0.1")
    await receiver.start_server()
    portal_url = str(receiver.make_url(f"/v1/webhooks/coincoin/{WEBHOOK_TOKEN}"))
    sandbox = TestServer(
        create_sandbox_app(SandboxConfig(APP_ID, SECRET_KEY, webhook_url=portal_url)),
        host="127.0.0.1",
    )
    await sandbox.start_server()
    session = aiohttp.ClientSession()
    try:
        yield Harness(sandbox, receiver, received, session)
    finally:
        await session.close()
        await sandbox.close()
        await receiver.close()


def request_for(
    order_id: str, amount: str = "100", expires_in_minutes: int | None = 90
) -> CreatePaymentRequest:
    return CreatePaymentRequest(
        order_id=order_id,
        amount=Decimal(amount),
        currency="USDT",
        callback_url="unused: CoinCoin takes its callback URL in its portal",
        expires_in_minutes=expires_in_minutes,
    )


async def create(harness: Harness, order_id: str, amount: str = "100") -> CreatedPayment:
    client = harness.client()
    try:
        return await client.create_payment(request_for(order_id, amount), Recorder())
    finally:
        await client.close()


# --- creating payments ---------------------------------------------------------------------------


async def test_create_payment_signs_and_maps_the_order(harness: Harness) -> None:
    recorder = Recorder()
    client = harness.client()
    before = datetime.now(UTC)
    try:
        created = await client.create_payment(request_for("order-2024-0001", "100.50"), recorder)
    finally:
        await client.close()
    assert created.provider_ref == payment_id_for_order("order-2024-0001")
    assert re.fullmatch(r"[A-Za-z0-9_]{8,32}", created.provider_ref)
    assert created.expected_amount == Decimal("100.50")
    assert created.expected_currency == "USDT"
    assert created.provider_status == "state=0"
    assert created.pay_address is not None
    assert created.pay_address.startswith("T")
    # 90 minutes round up to 2 whole hours.
    assert created.expires_at is not None
    assert before + timedelta(hours=2) - timedelta(seconds=5) <= created.expires_at
    assert created.expires_at <= datetime.now(UTC) + timedelta(hours=2)
    [exchange] = recorder.exchanges
    assert (exchange.operation, exchange.status, exchange.attempt) == ("create_payment", 200, 1)
    assert exchange.url.endswith("/v1/order/create")
    assert exchange.request_headers["CC-SIGN"] == "***"
    assert exchange.request_headers["CC-APP-ID"] == APP_ID
    assert re.fullmatch(r"\d{13}", exchange.request_headers["CC-TIMESPAN"])
    assert exchange.request_body is not None
    assert '"price": 100.50' in exchange.request_body
    assert '"expired": 2' in exchange.request_body


async def test_an_order_id_that_fits_is_the_provider_ref(harness: Harness) -> None:
    created = await create(harness, "order_12345678")
    assert created.provider_ref == "order_12345678"


async def test_creating_the_same_order_again_finds_the_same_provider_order(
    harness: Harness,
) -> None:
    first = await create(harness, "order:same")
    second = await create(harness, "order:same")
    assert (second.provider_ref, second.pay_address) == (first.provider_ref, first.pay_address)


async def test_no_expiry_asks_for_the_documented_maximum(harness: Harness) -> None:
    recorder = Recorder()
    client = harness.client()
    try:
        created = await client.create_payment(request_for("order_noexpiry", "10", None), recorder)
    finally:
        await client.close()
    assert recorder.exchanges[0].request_body is not None
    assert '"expired": 48' in recorder.exchanges[0].request_body
    assert created.expires_at is not None
    assert created.expires_at > datetime.now(UTC) + timedelta(hours=47)


# --- auth ----------------------------------------------------------------------------------------


async def test_a_wrong_secret_is_refused_without_retry(harness: Harness) -> None:
    recorder = Recorder()
    client = harness.client(secret_key="not-the-secret")
    try:
        with pytest.raises(ProviderCallFailed) as caught:
            await client.create_payment(request_for("order_wrongsecret"), recorder)
    finally:
        await client.close()
    assert caught.value.status == 401
    assert [e.status for e in recorder.exchanges] == [401]


async def test_a_clock_six_minutes_off_is_refused(harness: Harness) -> None:
    client = harness.client(clock_offset_ms=-6 * 60 * 1000)
    try:
        with pytest.raises(ProviderCallFailed) as caught:
            await client.create_payment(request_for("order_staleclock"), Recorder())
    finally:
        await client.close()
    assert caught.value.status == 401


async def test_a_clock_four_minutes_off_is_accepted(harness: Harness) -> None:
    client = harness.client(clock_offset_ms=4 * 60 * 1000)
    try:
        created = await client.create_payment(request_for("order_skewedclock"), Recorder())
    finally:
        await client.close()
    assert created.provider_ref == "order_skewedclock"


async def test_every_request_is_signed_afresh_so_expiring_tokens_changes_nothing(
    harness: Harness,
) -> None:
    """CoinCoin has no tokens to cache or refresh: after the sandbox's expire_tokens the next
    call still succeeds, with no login call in between."""
    client = harness.client()
    try:
        await client.create_payment(request_for("order_tokens_1"), Recorder())
        status, answer = await harness.control("/_sandbox/expire_tokens")
        assert (status, answer["expired"]) == (200, 0)
        await client.create_payment(request_for("order_tokens_2"), Recorder())
    finally:
        await client.close()
    paths = [request["path"] for request in await harness.sandbox_requests()]
    assert paths == ["/v1/order/create", "/v1/order/create"]


# --- retries -------------------------------------------------------------------------------------


async def test_503_is_retried_and_every_attempt_recorded(harness: Harness) -> None:
    status, _ = await harness.control(
        "/_sandbox/faults", {"operation": "create_payment", "statuses": [503, 503]}
    )
    assert status == 200
    recorder = Recorder()
    client = harness.client()
    try:
        created = await client.create_payment(request_for("order_retry"), recorder)
    finally:
        await client.close()
    assert created.provider_ref == "order_retry"
    assert [(e.attempt, e.status) for e in recorder.exchanges] == [(1, 503), (2, 503), (3, 200)]
    assert len(await harness.sandbox_requests()) == 3


async def test_503_until_the_last_attempt_fails_the_call(harness: Harness) -> None:
    await harness.control("/_sandbox/faults", {"operation": "/order/create", "statuses": [503] * 4})
    recorder = Recorder()
    client = harness.client()
    try:
        with pytest.raises(ProviderCallFailed) as caught:
            await client.create_payment(request_for("order_retry_out"), recorder)
    finally:
        await client.close()
    assert caught.value.status == 503
    assert [e.status for e in recorder.exchanges] == [503] * 4


async def test_400_is_not_retried(harness: Harness) -> None:
    recorder = Recorder()
    client = harness.client()
    try:
        with pytest.raises(ProviderCallFailed) as caught:
            # Below CoinCoin's minimum price of 10.
            await client.create_payment(request_for("order_tooCheap", "9.99"), recorder)
    finally:
        await client.close()
    assert caught.value.status == 400
    assert "at least 10" in caught.value.detail
    assert [e.status for e in recorder.exchanges] == [400]
    assert len(await harness.sandbox_requests()) == 1


async def test_undocumented_operations_are_not_supported(harness: Harness) -> None:
    client = harness.client()
    recorder = Recorder()
    withdrawal = CreateWithdrawalRequest("w1", Decimal(10), "USDT", "Taddress", "unused")
    try:
        with pytest.raises(OperationNotSupported):
            await client.query_payment("order_x", "order_x", recorder)
        with pytest.raises(OperationNotSupported):
            await client.create_withdrawal(withdrawal, recorder)
        with pytest.raises(OperationNotSupported):
            await client.fetch_balances(recorder)
    finally:
        await client.close()
    assert recorder.exchanges == []
    status, _ = await harness.control("/_sandbox/withdrawals/w1/scenario", {"scenario": "failed"})
    assert status == 404


# --- webhooks through the adapter ----------------------------------------------------------------


@dataclass
class Run:
    payment: CreatedPayment
    updates: list[PaymentUpdate]
    dedupe_keys: list[str]

    @property
    def totals(self) -> list[Decimal | None]:
        return [u.cumulative.total if u.cumulative else None for u in self.updates]

    @property
    def outcomes(self) -> list[ProviderPaymentOutcome | None]:
        return [u.status.outcome if u.status else None for u in self.updates]


async def run_scenario(harness: Harness, order_id: str, scenario: str, amount: str = "100") -> Run:
    created = await create(harness, order_id, amount)
    status, answer = await harness.control(
        f"/_sandbox/payments/{created.provider_ref}/scenario", {"scenario": scenario}
    )
    assert status == 200, answer
    deliveries = answer["deliveries"]
    assert isinstance(deliveries, list)
    assert [d["status"] for d in deliveries] == [200] * len(deliveries)
    assert [body.decode() for _, body in harness.received.deliveries] == [
        d["body"] for d in deliveries
    ]
    webhooks = CoinCoinWebhooks(WEBHOOK_TOKEN)
    updates, keys = [], []
    for token, body in harness.received.deliveries:
        delivery = WebhookDelivery("coincoin", body, {}, path_token=token)
        assert webhooks.authenticate(delivery).outcome is VerificationOutcome.VERIFIED
        translation = webhooks.translate(delivery)
        [update] = translation.facts
        assert isinstance(update, PaymentUpdate)
        assert update.reference.provider_ref == created.provider_ref
        assert update.reference.pay_address == created.pay_address
        updates.append(update)
        keys.append(translation.dedupe_key)
    return Run(created, updates, keys)


def ledger_payment(run: Run) -> Payment:
    """The ledger's own aggregate fed with the deliveries, one second apart."""
    created = run.payment
    payment = Payment.create(
        provider="coincoin",
        provider_ref=created.provider_ref,
        order_id=created.provider_ref,
        expected=Money.of(created.expected_amount, created.expected_currency),
        price=Money.of(created.expected_amount, created.expected_currency),
        expires_at=created.expires_at,
        pay_address=created.pay_address,
    )
    start = datetime.now(UTC)
    for index, update in enumerate(run.updates):
        payment.apply_update(update, received_at=start + timedelta(seconds=index), verified=True)
    return payment


S = ProviderPaymentOutcome


async def test_full(harness: Harness) -> None:
    run = await run_scenario(harness, "order_full", "full")
    assert run.totals == [Decimal(100), Decimal(100)]
    assert run.outcomes == [S.SETTLING, S.SETTLING]
    payment = ledger_payment(run)
    assert (payment.status, payment.coverage) == ("completed", "exact")


async def test_partial_collects_half(harness: Harness) -> None:
    run = await run_scenario(harness, "order_partial", "partial", "100.000001")
    assert run.totals == [Decimal(50), Decimal(50)]
    assert run.outcomes == [S.CONFIRMING, S.SETTLING]
    payment = ledger_payment(run)
    assert payment.received == Money.of("50", "USDT")
    assert payment.coverage == "partial"
    assert payment.status != "completed"


async def test_over(harness: Harness) -> None:
    run = await run_scenario(harness, "order_over", "over", "20")
    assert run.totals == [Decimal(30)]
    payment = ledger_payment(run)
    assert (payment.status, payment.coverage) == ("completed", "over")
    assert payment.overpaid == Money.of(10, "USDT")


async def test_expire_no_funds(harness: Harness) -> None:
    run = await run_scenario(harness, "order_expire_empty", "expire_no_funds")
    assert run.totals == [Decimal(0)]
    assert run.outcomes == [S.EXPIRED]
    payment = ledger_payment(run)
    assert (payment.status, payment.coverage) == ("expired", "unpaid")


async def test_expire_with_funds(harness: Harness) -> None:
    run = await run_scenario(harness, "order_expire_funds", "expire_with_funds")
    assert run.totals == [Decimal(50), Decimal(50)]
    assert run.outcomes == [S.CONFIRMING, S.SETTLING]
    assert [u.status.status_word for u in run.updates if u.status] == ["state=0", "state=2"]
    assert ledger_payment(run).received == Money.of(50, "USDT")


async def test_late_funds_after_invalid_are_kept_and_late(harness: Harness) -> None:
    run = await run_scenario(harness, "order_late", "late")
    assert run.totals == [Decimal(0), Decimal(100)]
    assert run.outcomes == [S.EXPIRED, S.SETTLING]
    payment = ledger_payment(run)
    assert payment.status == "expired"
    assert payment.late is True
    assert payment.received == Money.of(100, "USDT")


async def test_fail_is_invalid_with_a_deposit_below_the_network_fee(harness: Harness) -> None:
    run = await run_scenario(harness, "order_fail", "fail")
    assert run.totals == [Decimal("0.5")]
    assert run.outcomes == [S.EXPIRED]


async def test_multiple_deposits_are_running_totals(harness: Harness) -> None:
    run = await run_scenario(harness, "order_multiple", "multiple_deposits")
    assert run.totals == [Decimal(30), Decimal(60), Decimal(100)]
    assert run.outcomes == [S.CONFIRMING, S.CONFIRMING, S.SETTLING]
    payment = ledger_payment(run)
    assert payment.received == Money.of(100, "USDT")
    assert (payment.status, payment.coverage) == ("completed", "exact")


async def test_out_of_order_totals_count_once(harness: Harness) -> None:
    run = await run_scenario(harness, "order_reversed", "out_of_order")
    assert run.totals == [Decimal(100), Decimal(60), Decimal(30)]
    payment = ledger_payment(run)
    assert payment.received == Money.of(100, "USDT")
    assert (payment.status, payment.coverage) == ("completed", "exact")


async def test_duplicate_has_one_dedupe_key(harness: Harness) -> None:
    run = await run_scenario(harness, "order_duplicate", "duplicate")
    assert len(run.updates) == 2
    assert run.dedupe_keys[0] == run.dedupe_keys[1]
    assert ledger_payment(run).received == Money.of(100, "USDT")


async def test_a_portal_url_with_another_token_is_unverified(harness: Harness) -> None:
    wrong_url = str(harness.receiver.make_url("/v1/webhooks/coincoin/not-the-token"))
    status, _ = await harness.control("/_sandbox/webhook_url", {"webhook_url": wrong_url})
    assert status == 200
    created = await create(harness, "order_wrong_token")
    await harness.control(
        f"/_sandbox/payments/{created.provider_ref}/scenario", {"scenario": "full"}
    )
    webhooks = CoinCoinWebhooks(WEBHOOK_TOKEN)
    for token, body in harness.received.deliveries:
        verification = webhooks.authenticate(WebhookDelivery("coincoin", body, {}, token))
        assert verification.outcome is VerificationOutcome.UNVERIFIED
        assert verification.reason == "token_mismatch"


async def test_scenario_controls_refuse_unknown_names_and_refs(harness: Harness) -> None:
    created = await create(harness, "order_controls")
    status, _ = await harness.control(
        f"/_sandbox/payments/{created.provider_ref}/scenario", {"scenario": "nonsense"}
    )
    assert status == 400
    status, _ = await harness.control("/_sandbox/payments/nope_nope/scenario", {"scenario": "full"})
    assert status == 404
    assert harness.received.deliveries == []
