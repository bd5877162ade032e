"""The CoinPay client against its sandbox on loopback, and the sandbox's webhooks through the
adapter's own authenticate/translate. No database needed."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from adapters.providers.coinpay import CoinPayClient, build_adapter
from adapters.providers.coinpay.webhooks import CoinPayWebhooks
from adapters.providers.contract import (
    CreatePaymentRequest,
    CreateWithdrawalRequest,
    OperationNotSupported,
    ProviderCallFailed,
    ProviderExchange,
    WebhookDelivery,
)
from adapters.providers.http_client import ProviderHttp, RetryPolicy
from adapters.sandbox.coinpay import SandboxConfig, create_sandbox_app
from ledger.commands import (
    PaymentUpdate,
    ProviderPaymentOutcome,
    ProviderWithdrawalOutcome,
    Translation,
    WithdrawalUpdate,
)
from ledger.deliveries import Verification, VerificationOutcome
from ledger.money import loads_exact

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

SECRET = "whsec_sandbox"
FAST = RetryPolicy(attempts=4, base_delay_seconds=0.01, max_delay_seconds=0.02, timeout_seconds=5)
WEBHOOK_PATH = "/v1/webhooks/coinpay"


class Recorder:
    def __init__(self) -> None:
        self.exchanges: list[ProviderExchange] = []

    async def __call__(self, exchange: ProviderExchange) -> None:
        self.exchanges.append(exchange)

    def of(self, operation: str) -> list[ProviderExchange]:
        return [e for e in self.exchanges if e.operation == operation]


@dataclass
class Receiver:
    """Stands in for the ledger's webhook endpoint: checks each delivery with the adapter and
    answers 401 when it is rejected, as the ledger would."""

    url: str
    adapter: CoinPayWebhooks
    deliveries: list[tuple[WebhookDelivery, Verification]] = field(default_factory=list)

    def translations(self) -> list[Translation]:
        return [self.adapter.translate(delivery) for delivery, _ in self.deliveries]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    app = web.Application()
    server = TestServer(app, host="127.0.0.1", port=0)
    holder: list[Receiver] = []

    async def take(request: web.Request) -> web.Response:
        delivery = WebhookDelivery(
            provider="coinpay",
            body=await request.read(),
            headers={key.lower(): value for key, value in request.headers.items()},
        )
        verification = holder[0].adapter.authenticate(delivery)
        holder[0].deliveries.append((delivery, verification))
        status = 401 if verification.outcome is VerificationOutcome.REJECTED else 200
        return web.json_response({"received": True}, status=status)

    app.router.add_post(WEBHOOK_PATH, take)
    await server.start_server()
    holder.append(Receiver(str(server.make_url(WEBHOOK_PATH)), CoinPayWebhooks(SECRET)))
    yield holder[0]
    await server.close()


@pytest.fixture
async def sandbox(receiver: Receiver) -> AsyncIterator[TestServer]:
    config = SandboxConfig(
        username="merchant", password="pa55word", webhook_secret=SECRET, webhook_url=receiver.url
    )
    server = TestServer(create_sandbox_app(config), host="127.0.0.1", port=0)
    await server.start_server()
    yield server
    await server.close()


@pytest.fixture
async def client(sandbox: TestServer) -> AsyncIterator[CoinPayClient]:
    http = ProviderHttp("coinpay", str(sandbox.make_url("")), FAST)
    built = CoinPayClient(http, "merchant", "pa55word")
    yield built
    await built.close()


async def control(sandbox: TestServer, path: str, body: Any = None) -> Any:
    async with aiohttp.ClientSession() as session:
        method = "GET" if body is None else "POST"
        async with session.request(method, str(sandbox.make_url(path)), json=body) as answer:
            assert answer.status == 200, await answer.text()
            return await answer.json()


def payment_request(amount: str = "100.50", **changes: Any) -> CreatePaymentRequest:
    values: dict[str, Any] = {
        "order_id": "order-1",
        "amount": Decimal(amount),
        "currency": "USDC",
        "callback_url": "http://unused.invalid/",
        "customer_id": "cust-1",
    }
    values.update(changes)
    return CreatePaymentRequest(**values)


async def run_scenario(sandbox: TestServer, ref: str, name: str) -> list[dict[str, Any]]:
    answer = await control(sandbox, f"/_sandbox/payments/{ref}/scenario", {"scenario": name})
    deliveries: list[dict[str, Any]] = answer["deliveries"]
    return deliveries


def totals(receiver: Receiver) -> list[Decimal]:
    found = []
    for translation in receiver.translations():
        for fact in translation.facts:
            assert isinstance(fact, PaymentUpdate)
            if fact.cumulative is not None:
                found.append(fact.cumulative.total)
    return found


# --- outbound calls -------------------------------------------------------------------------------


async def test_create_payment_logs_in_once_and_caches_the_token(
    client: CoinPayClient, sandbox: TestServer
) -> None:
    record = Recorder()
    first = await client.create_payment(payment_request(), record)
    second = await client.create_payment(payment_request(order_id="order-2"), record)
    assert first.provider_ref != second.provider_ref
    assert first.expected_amount == Decimal("100.50")
    assert first.expected_currency == "USDC"
    assert first.expires_at is None
    assert first.provider_status == "Pending"
    assert first.pay_address
    assert len(record.of("login")) == 1
    assert len(record.of("create_payment")) == 2
    login = record.of("login")[0]
    assert login.request_body is not None
    assert "pa55word" not in login.request_body
    sent = record.of("create_payment")[0]
    assert sent.request_headers["Authorization"] == "***"
    assert sent.request_body is not None
    sent_body = loads_exact(sent.request_body)
    assert sent_body["amount"] == Decimal("100.50")
    assert sent_body["type"] == "Payment"
    assert sent_body["metadata"] == {"orderId": "order-1", "customerId": "cust-1"}
    requests = (await control(sandbox, "/_sandbox/requests"))["requests"]
    assert [r["path"] for r in requests] == [
        "/api/auth/login", "/api/transactions", "/api/transactions"
    ]


async def test_expires_at_is_computed_only_when_asked(client: CoinPayClient) -> None:
    created = await client.create_payment(payment_request(expires_in_minutes=30), Recorder())
    assert created.expires_at is not None
    assert created.expires_at.tzinfo is not None


async def test_relogin_after_tokens_expire(client: CoinPayClient, sandbox: TestServer) -> None:
    record = Recorder()
    await client.create_payment(payment_request(), record)
    await control(sandbox, "/_sandbox/expire_tokens", {})
    created = await client.create_payment(payment_request(), record)
    assert created.provider_ref
    assert len(record.of("login")) == 2
    assert [e.status for e in record.of("create_payment")] == [201, 401, 201]


async def test_token_expiring_by_its_lifetime_is_refreshed_before_use(
    sandbox: TestServer,
) -> None:
    http = ProviderHttp("coinpay", str(sandbox.make_url("")), FAST)
    client = CoinPayClient(http, "merchant", "pa55word")
    record = Recorder()
    try:
        await client.create_payment(payment_request(), record)
        client._token_valid_until = 0.0  # the announced lifetime has run out
        await client.create_payment(payment_request(), record)
    finally:
        await client.close()
    assert len(record.of("login")) == 2
    assert [e.status for e in record.of("create_payment")] == [201, 201]


async def test_wrong_credentials_fail_at_login(sandbox: TestServer) -> None:
    http = ProviderHttp("coinpay", str(sandbox.make_url("")), FAST)
    client = CoinPayClient(http, "merchant", "wrong")
    try:
        with pytest.raises(ProviderCallFailed) as raised:
            await client.create_payment(payment_request(), Recorder())
    finally:
        await client.close()
    assert raised.value.operation == "login"
    assert raised.value.status == 401


async def test_retry_on_503_then_success_records_every_attempt(
    client: CoinPayClient, sandbox: TestServer
) -> None:
    fault = {"operation": "create_payment", "statuses": [503, 503]}
    await control(sandbox, "/_sandbox/faults", fault)
    record = Recorder()
    created = await client.create_payment(payment_request(), record)
    assert created.provider_ref
    assert [e.status for e in record.of("create_payment")] == [503, 503, 201]
    assert [e.attempt for e in record.of("create_payment")] == [1, 2, 3]


async def test_no_retry_on_400(client: CoinPayClient, sandbox: TestServer) -> None:
    fault = {"operation": "/api/transactions", "statuses": [400]}
    await control(sandbox, "/_sandbox/faults", fault)
    record = Recorder()
    with pytest.raises(ProviderCallFailed) as raised:
        await client.create_payment(payment_request(), record)
    assert raised.value.status == 400
    assert [e.status for e in record.of("create_payment")] == [400]


async def test_other_pay_currency_is_refused(client: CoinPayClient) -> None:
    with pytest.raises(OperationNotSupported):
        await client.create_payment(payment_request(pay_currency="BTC"), Recorder())


async def test_query_payment_reports_the_status(
    client: CoinPayClient, sandbox: TestServer
) -> None:
    record = Recorder()
    created = await client.create_payment(payment_request(), record)
    pending = await client.query_payment(created.provider_ref, "order-1", record)
    assert pending.dedupe_key.startswith("coinpay:query:")
    (fact,) = pending.facts
    assert isinstance(fact, PaymentUpdate)
    assert fact.reference.provider_ref == created.provider_ref
    assert fact.reference.order_id == "order-1"
    assert fact.status is not None
    assert fact.status.outcome is ProviderPaymentOutcome.PENDING
    assert fact.cumulative is None
    await run_scenario(sandbox, created.provider_ref, "full")
    completed = await client.query_payment(created.provider_ref, "order-1", record)
    (fact,) = completed.facts
    assert isinstance(fact, PaymentUpdate)
    assert fact.status is not None
    assert fact.status.outcome is ProviderPaymentOutcome.PAID
    assert completed.dedupe_key != pending.dedupe_key


async def test_query_unknown_payment_fails_with_404(client: CoinPayClient) -> None:
    with pytest.raises(ProviderCallFailed) as raised:
        await client.query_payment("no-such-id", "order-1", Recorder())
    assert raised.value.status == 404


async def test_create_withdrawal_sends_the_address_as_bank_account(
    client: CoinPayClient, sandbox: TestServer
) -> None:
    record = Recorder()
    request = CreateWithdrawalRequest(
        request_id="wd-1", amount=Decimal("25.5"), currency="USDC", address="bank-acc-77",
        callback_url="http://unused.invalid/",
    )
    created = await client.create_withdrawal(request, record)
    assert created.provider_ref.startswith("po_")
    assert created.provider_status == "Pending"
    (sent,) = record.of("create_withdrawal")
    assert sent.request_body is not None
    sent_body = loads_exact(sent.request_body)
    assert sent_body["bankAccountId"] == "bank-acc-77"
    assert sent_body["amount"] == Decimal("25.5")


async def test_fetch_balances(client: CoinPayClient, sandbox: TestServer) -> None:
    await control(sandbox, "/_sandbox/balances", {"balances": [
        {"currency": "USDC", "available": "1234.567891", "pending": "10"},
    ]})
    (balance,) = await client.fetch_balances(Recorder())
    assert balance.currency == "USDC"
    assert balance.available == Decimal("1234.567891")
    assert balance.pending == Decimal(10)


async def test_build_adapter_client_talks_to_the_sandbox(sandbox: TestServer) -> None:
    adapter = build_adapter({
        "base_url": str(sandbox.make_url("")), "username": "merchant", "password": "pa55word",
        "webhook_secret": SECRET,
    })
    try:
        created = await adapter.client.create_payment(payment_request(), Recorder())
    finally:
        await adapter.client.close()
    assert created.expected_amount == Decimal("100.50")


# --- webhooks from the sandbox, through the adapter ----------------------------------------------


async def create(client: CoinPayClient, amount: str = "100.50") -> str:
    return (await client.create_payment(payment_request(amount), Recorder())).provider_ref


async def test_full_payment_webhook_is_verified_and_translated(
    client: CoinPayClient, sandbox: TestServer, receiver: Receiver
) -> None:
    ref = await create(client)
    deliveries = await run_scenario(sandbox, ref, "full")
    assert [d["status"] for d in deliveries] == [200]
    # Node writes 100.50 as 100.5; the Decimal read from the body is still exact.
    assert '"amount":100.5,' in deliveries[0]["body"]
    ((delivery, verification),) = receiver.deliveries
    assert verification.outcome is VerificationOutcome.VERIFIED
    (translation,) = receiver.translations()
    (fact,) = translation.facts
    assert isinstance(fact, PaymentUpdate)
    assert fact.reference.provider_ref == ref
    assert fact.reference.order_id == "order-1"
    assert fact.status is not None
    assert fact.status.outcome is ProviderPaymentOutcome.PAID
    assert totals(receiver) == [Decimal("100.50")]
    assert delivery.body.decode() == deliveries[0]["body"]


@pytest.mark.parametrize(
    ("scenario", "expected_totals"),
    [
        ("partial", ["50.25"]),
        ("over", ["150.75"]),
        ("expire_no_funds", []),
        ("expire_with_funds", ["50.25"]),
        ("late", ["100.50"]),
        ("multiple_deposits", ["50.25", "100.50"]),
        ("out_of_order", ["100.50", "50.25"]),
    ],
)
async def test_money_scenarios_deliver_verified_totals(
    client: CoinPayClient,
    sandbox: TestServer,
    receiver: Receiver,
    scenario: str,
    expected_totals: list[str],
) -> None:
    ref = await create(client)
    deliveries = await run_scenario(sandbox, ref, scenario)
    assert [d["status"] for d in deliveries] == [200] * len(expected_totals)
    assert all(v.outcome is VerificationOutcome.VERIFIED for _, v in receiver.deliveries)
    assert totals(receiver) == [Decimal(total) for total in expected_totals]


async def test_duplicate_scenario_sends_the_same_delivery_twice(
    client: CoinPayClient, sandbox: TestServer, receiver: Receiver
) -> None:
    ref = await create(client)
    deliveries = await run_scenario(sandbox, ref, "duplicate")
    assert len(deliveries) == 2
    assert deliveries[0]["body"] == deliveries[1]["body"]
    first, second = receiver.translations()
    assert first.dedupe_key == second.dedupe_key


async def test_fail_scenario_translates_to_failed(
    client: CoinPayClient, sandbox: TestServer, receiver: Receiver
) -> None:
    ref = await create(client)
    await run_scenario(sandbox, ref, "fail")
    (translation,) = receiver.translations()
    (fact,) = translation.facts
    assert isinstance(fact, PaymentUpdate)
    assert fact.status is not None
    assert fact.status.outcome is ProviderPaymentOutcome.FAILED
    assert fact.cumulative is None


async def test_wrong_secret_at_the_receiver_is_rejected(
    client: CoinPayClient, sandbox: TestServer, receiver: Receiver
) -> None:
    receiver.adapter = CoinPayWebhooks("not-the-portal-secret")
    ref = await create(client)
    deliveries = await run_scenario(sandbox, ref, "full")
    assert [d["status"] for d in deliveries] == [401]
    assert receiver.deliveries[0][1].reason == "signature_mismatch"


@pytest.mark.parametrize(
    ("scenario", "outcome"),
    [
        ("completed", ProviderWithdrawalOutcome.COMPLETED),
        ("failed", ProviderWithdrawalOutcome.FAILED),
    ],
)
async def test_withdrawal_scenarios(
    client: CoinPayClient,
    sandbox: TestServer,
    receiver: Receiver,
    scenario: str,
    outcome: ProviderWithdrawalOutcome,
) -> None:
    request = CreateWithdrawalRequest(
        request_id="wd-2", amount=Decimal("40.10"), currency="USDC", address="bank-1",
        callback_url="http://unused.invalid/",
    )
    created = await client.create_withdrawal(request, Recorder())
    answer = await control(
        sandbox, f"/_sandbox/withdrawals/{created.provider_ref}/scenario", {"scenario": scenario}
    )
    assert [d["status"] for d in answer["deliveries"]] == [200]
    (translation,) = receiver.translations()
    (fact,) = translation.facts
    assert isinstance(fact, WithdrawalUpdate)
    assert fact.reference.provider_ref == created.provider_ref
    assert fact.outcome is outcome
    if outcome is ProviderWithdrawalOutcome.COMPLETED:
        assert fact.amount_sent == Decimal("40.1")


@pytest.mark.parametrize("scenario", ["processing", "manual_review"])
async def test_withdrawal_states_coinpay_cannot_express_send_nothing(
    client: CoinPayClient, sandbox: TestServer, receiver: Receiver, scenario: str
) -> None:
    request = CreateWithdrawalRequest(
        request_id="wd-3", amount=Decimal(5), currency="USDC", address="bank-1",
        callback_url="http://unused.invalid/",
    )
    created = await client.create_withdrawal(request, Recorder())
    answer = await control(
        sandbox, f"/_sandbox/withdrawals/{created.provider_ref}/scenario", {"scenario": scenario}
    )
    assert answer["deliveries"] == []
    assert receiver.deliveries == []
