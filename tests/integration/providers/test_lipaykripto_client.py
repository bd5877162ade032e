
"""The LiPayKripto client against the sandbox on loopback, and the sandbox's webhooks through the
adapter's own authenticate/translate. No database needed."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from adapters.providers.contract import (
    CreatePaymentRequest,
    CreateWithdrawalRequest,
    OperationNotSupported,
    ProviderCallFailed,
    ProviderExchange,
    WebhookDelivery,
)
from adapters.providers.http_client import RetryPolicy, dumps_exact
from adapters.providers.lipaykripto.client import LiPayKriptoClient, LiPayKriptoRequestError
from adapters.providers.lipaykripto.webhooks import LiPayKriptoWebhooks
from adapters.sandbox.lipaykripto import SandboxConfig, create_sandbox_app
from ledger.commands import (
    PaymentUpdate,
    ProviderPaymentOutcome,
    ProviderWithdrawalOutcome,
    Translation,
    WithdrawalUpdate,
)
from ledger.deliveries import VerificationOutcome
from ledger.money import loads_exact

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

CONFIG = SandboxConfig(client_id="test12345", client_secret="s3cret", hmac_secret="hm4c")
FAST = RetryPolicy(attempts=4, base_delay_seconds=0.01, max_delay_seconds=0.02, timeout_seconds=5)
WEBHOOK_PATH = "/v1/webhooks/lipaykripto"


class Recorder:
    def __init__(self) -> None:
        self.exchanges: list[ProviderExchange] = []

    async def __call__(self, exchange: ProviderExchange) -> None:
        self.exchanges.append(exchange)

    def of(self, operation: str) -> list[ProviderExchange]:
        return [e for e in self.exchanges if e.operation == operation]


@dataclass
class Receiver:
    """Stands in for the ledger's webhook endpoint: keeps each delivery, answers 200."""

    url: str
    deliveries: list[WebhookDelivery] = field(default_factory=list)


@pytest.fixture
async def sandbox() -> AsyncIterator[TestServer]:
    server = TestServer(create_sandbox_app(CONFIG), host="127.0.0.1", port=0)
    await server.start_server()
    yield server
    await server.close()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    app = web.Application()
    server = TestServer(app, host="127.0.0.1", port=0)
    holder: list[Receiver] = []

    async def take(request: web.Request) -> web.Response:
        holder[0].deliveries.append(
            WebhookDelivery(
                provider="lipaykripto",
                body=await request.read(),
                headers={k.lower(): v for k, v in request.headers.items()},
                path_token=request.match_info.get("token"),
            )
        )
        return web.Response(status=200)

    app.router.add_post(WEBHOOK_PATH, take)
    app.router.add_post(WEBHOOK_PATH + "/{token}", take)
    await server.start_server()
    holder.append(Receiver(url=str(server.make_url("")).rstrip("/")))
    yield holder[0]
    await server.close()


def make_client(sandbox: TestServer, **overrides: str) -> LiPayKriptoClient:
    settings = {
        "client_id": CONFIG.client_id,
        "client_secret": CONFIG.client_secret,
        "hmac_secret": CONFIG.hmac_secret,
        **overrides,
    }
    return LiPayKriptoClient(
        str(sandbox.make_url("")).rstrip("/"),
        settings["client_id"],
        settings["client_secret"],
        settings["hmac_secret"],
        policy=FAST,
    )


@pytest.fixture
async def client(sandbox: TestServer) -> AsyncIterator[LiPayKriptoClient]:
    made = make_client(sandbox)
    yield made
    await made.close()


async def control(sandbox: TestServer, path: str, body: Any = None) -> Any:
    async with aiohttp.ClientSession() as session:
        if body is None and path == "/_sandbox/requests":
            async with session.get(sandbox.make_url(path)) as response:
                return await response.json()
        async with session.post(
            sandbox.make_url(path),
            data=dumps_exact(body or {}),
            headers={"Content-Type": "application/json"},
        ) as response:
            assert response.status == 200, await response.text()
            return loads_exact(await response.read())


def payment_request(order_id: str = "ORDER_123", amount: str = "100.00",
                    callback_url: str = "https://ledger.example/v1/webhooks/lipaykripto/tok"
                    ) -> CreatePaymentRequest:
    return CreatePaymentRequest(
        order_id=order_id, amount=Decimal(amount), currency="TRY", callback_url=callback_url
    )


def withdrawal_request(request_id: str = "WITHDRAW_123", amount: str = "100.00",
                       callback_url: str = "https://ledger.example/v1/webhooks/lipaykripto/w",
                       pay_currency: str | None = "TRX", currency: str = "TRY"
                       ) -> CreateWithdrawalRequest:
    return CreateWithdrawalRequest(
        request_id=request_id, amount=Decimal(amount), currency=currency,
        address="TXBCD12345", callback_url=callback_url, pay_currency=pay_currency,
    )


# --- payments -----------------------------------------------------------------------------------


async def test_create_payment(client: LiPayKriptoClient, sandbox: TestServer) -> None:
    record = Recorder()
    created = await client.create_payment(payment_request(), record)
    assert created.provider_ref == "505"
    assert created.expected_amount == Decimal("100.00")
    assert created.expected_currency == "TRY"
    assert created.expires_at is None
    assert created.provider_status == "pending_coin_selection"
    assert created.payment_url is not None
    assert created.payment_url.startswith("http")
    assert [e.operation for e in record.exchanges] == ["login", "create_payment"]
    requests = (await control(sandbox, "/_sandbox/requests"))["requests"]
    assert {r["method"] for r in requests if r["path"].startswith("/api/")} == {"POST"}


async def test_secrets_stay_out_of_the_record(client: LiPayKriptoClient) -> None:
    record = Recorder()
    await client.create_payment(payment_request(), record)
    login, create = record.exchanges
    assert CONFIG.client_secret not in (login.request_body or "")
    assert "sandbox." not in (login.response_body or "")  # the issued token is blanked
    assert login.status == 200
    assert create.request_headers["Authorization"] == "***"
    sent = loads_exact(create.request_body or "")
    assert sent["paymentId"] == "ORDER_123"
    assert sent["webhookUrl"] == "https://ledger.example/v1/webhooks/lipaykripto/tok"


async def test_every_payment_gets_a_new_token(
    client: LiPayKriptoClient, sandbox: TestServer
) -> None:
    record = Recorder()
    first = await client.create_payment(payment_request("ORDER_1"), record)
    second = await client.create_payment(payment_request("ORDER_2"), record)
    assert (first.provider_ref, second.provider_ref) == ("505", "506")
    assert [e.operation for e in record.exchanges] == [
        "login", "create_payment", "login", "create_payment"
    ]
    assert all(e.status == 200 for e in record.exchanges)


async def test_sandbox_refuses_a_reused_token(sandbox: TestServer) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(
            sandbox.make_url("/api/auth/token"),
            json={"clientId": CONFIG.client_id, "clientSecret": CONFIG.client_secret},
        ) as response:
            token = (await response.json())["token"]
        statuses = []
        for order in ("A", "B"):
            async with session.post(
                sandbox.make_url("/api/external-payment-request"),
                json={"tryAmount": 1, "paymentId": order, "webhookUrl": "http://x/y"},
                headers={"Authorization": f"Bearer {token}"},
            ) as response:
                statuses.append((response.status, await response.json()))
    assert statuses[0][0] == 200
    assert statuses[1] == (401, {"error": "Invalid token"})


async def test_after_tokens_expire_the_next_payment_logs_in_again(
    client: LiPayKriptoClient, sandbox: TestServer
) -> None:
    record = Recorder()
    await client.create_payment(payment_request("ORDER_1"), record)
    await control(sandbox, "/_sandbox/expire_tokens")
    created = await client.create_payment(payment_request("ORDER_2"), record)
    assert created.provider_ref == "506"
    assert len(record.of("login")) == 2


async def test_token_refused_at_use_is_replaced_once(
    client: LiPayKriptoClient, sandbox: TestServer
) -> None:
    await control(sandbox, "/_sandbox/faults", {"operation": "create_payment", "statuses": [401]})
    record = Recorder()
    created = await client.create_payment(payment_request(), record)
    assert created.provider_ref == "505"
    assert [(e.operation, e.status) for e in record.exchanges] == [
        ("login", 200), ("create_payment", 401), ("login", 200), ("create_payment", 200)
    ]


async def test_token_refused_twice_fails(client: LiPayKriptoClient, sandbox: TestServer) -> None:
    faults = {"operation": "/api/external-payment-request", "statuses": [401, 401]}
    await control(sandbox, "/_sandbox/faults", faults)
    record = Recorder()
    with pytest.raises(ProviderCallFailed) as caught:
        await client.create_payment(payment_request(), record)
    assert caught.value.status == 401
    assert caught.value.detail == "Invalid token"
    assert len(record.of("create_payment")) == 2


async def test_bad_credentials(sandbox: TestServer) -> None:
    wrong = make_client(sandbox, client_secret="nope")
    record = Recorder()
    try:
        with pytest.raises(ProviderCallFailed) as caught:
            await wrong.create_payment(payment_request(), record)
    finally:
        await wrong.close()
    assert caught.value.status == 401
    assert caught.value.detail == "Invalid credentials"
    assert caught.value.operation == "login"
    assert [e.operation for e in record.exchanges] == ["login"]  # a 401 is not retried


async def test_retries_503_then_succeeds(client: LiPayKriptoClient, sandbox: TestServer) -> None:
    faults = {"operation": "create_payment", "statuses": [503, 503]}
    await control(sandbox, "/_sandbox/faults", faults)
    record = Recorder()
    created = await client.create_payment(payment_request(), record)
    assert created.provider_ref == "505"
    attempts = record.of("create_payment")
    assert [(e.attempt, e.status) for e in attempts] == [(1, 503), (2, 503), (3, 200)]


async def test_login_is_retried_on_429(client: LiPayKriptoClient, sandbox: TestServer) -> None:
    await control(sandbox, "/_sandbox/faults", {"operation": "login", "statuses": [429]})
    record = Recorder()
    await client.create_payment(payment_request(), record)
    assert [e.status for e in record.of("login")] == [429, 200]


async def test_no_retry_on_400(client: LiPayKriptoClient) -> None:
    record = Recorder()
    await client.create_payment(payment_request("ORDER_1"), record)
    with pytest.raises(ProviderCallFailed) as caught:
        await client.create_payment(payment_request("ORDER_1"), record)  # paymentId reused
    assert caught.value.status == 400
    assert caught.value.detail == "Invalid paymentId"
    assert len(record.of("create_payment")) == 2  # one each: the 400 was not retried


async def test_gives_up_after_the_last_attempt(
    client: LiPayKriptoClient, sandbox: TestServer
) -> None:
    faults = {"operation": "create_payment", "statuses": [503, 503, 503, 503]}
    await control(sandbox, "/_sandbox/faults", faults)
    record = Recorder()
    with pytest.raises(ProviderCallFailed) as caught:
        await client.create_payment(payment_request(), record)
    assert caught.value.status == 503
    assert len(record.of("create_payment")) == FAST.attempts


async def test_a_create_answered_500_is_not_sent_again(
    client: LiPayKriptoClient, sandbox: TestServer
) -> None:
    """A 500 may come after the provider created the payment; it has no idempotency key, so a
    second create could make a second payment: the ledger asks it later instead."""
    await control(sandbox, "/_sandbox/faults", {"operation": "create_payment", "statuses": [500]})
    record = Recorder()
    with pytest.raises(ProviderCallFailed) as caught:
        await client.create_payment(payment_request(), record)
    assert caught.value.status == 500
    assert 1 == len(record.of("create_payment"))


@pytest.mark.parametrize(
    ("amount", "currency"), [("0", "TRY"), ("-1", "TRY"), ("100.00", "USD")]
)
async def test_payments_the_provider_cannot_take_are_not_sent(
    client: LiPayKriptoClient, amount: str, currency: str
) -> None:
    record = Recorder()
    request = CreatePaymentRequest(
        order_id="O", amount=Decimal(amount), currency=currency, callback_url="http://x"
    )
    with pytest.raises(LiPayKriptoRequestError):
        await client.create_payment(request, record)
    assert record.exchanges == []


async def test_only_post_is_served(sandbox: TestServer) -> None:
    async with aiohttp.ClientSession() as session:
        for path in ("/api/auth/token", "/api/external-payment-request", "/api/withdraw"):
            async with session.get(sandbox.make_url(path)) as response:
                assert response.status == 405


async def test_no_status_query_and_no_balances(client: LiPayKriptoClient) -> None:
    record = Recorder()
    with pytest.raises(OperationNotSupported):
        await client.query_payment("505", "ORDER_123", record)
    with pytest.raises(OperationNotSupported):
        await client.fetch_balances(record)
    assert record.exchanges == []


async def test_sandbox_balances_are_kept_not_reported(sandbox: TestServer) -> None:
    answer = await control(sandbox, "/_sandbox/balances", {"TRY": Decimal("1500.25")})
    assert answer == {"balances": {"TRY": Decimal("1500.25")}, "reported": False}


# --- withdrawals --------------------------------------------------------------------------------


async def test_create_withdrawal(client: LiPayKriptoClient, sandbox: TestServer) -> None:
    record = Recorder()
    created = await client.create_withdrawal(withdrawal_request(), record)
    assert created.provider_ref == "123"
    assert created.provider_status == "pending"
    (exchange,) = record.exchanges
    assert exchange.operation == "create_withdrawal"
    assert "Authorization" not in exchange.request_headers  # signed, not bearer-authenticated
    sent = loads_exact(exchange.request_body or "")
    assert sent["signature"] == "***"
    assert sent["clientId"] == CONFIG.client_id
    assert sent["coin_type"] == "TRX"
    assert sent["created_at"].endswith("Z")


@pytest.mark.parametrize("amount", ["100.5", "0.01", "250"])
async def test_withdrawal_signature_covers_two_decimal_amounts(
    client: LiPayKriptoClient, amount: str
) -> None:
    created = await client.create_withdrawal(withdrawal_request(amount=amount), Recorder())
    assert created.provider_status == "pending"


@pytest.mark.parametrize("coin", ["USDT", "ETH", "trx"])
async def test_withdrawal_coin_types(client: LiPayKriptoClient, coin: str) -> None:
    created = await client.create_withdrawal(withdrawal_request(pay_currency=coin), Recorder())
    assert created.provider_status == "pending"


async def test_withdrawal_with_wrong_hmac_secret_is_refused(sandbox: TestServer) -> None:
    wrong = make_client(sandbox, hmac_secret="not-it")
    record = Recorder()
    try:
        with pytest.raises(ProviderCallFailed) as caught:
            await wrong.create_withdrawal(withdrawal_request(), record)
    finally:
        await wrong.close()
    assert caught.value.status == 401
    assert caught.value.detail == "Invalid signature"
    assert len(record.exchanges) == 1


@pytest.mark.parametrize(
    "request_",
    [
        withdrawal_request(pay_currency=None),
        withdrawal_request(pay_currency="BTC"),
        withdrawal_request(currency="USD"),
        withdrawal_request(amount="1.005"),
    ],
)
async def test_withdrawals_the_provider_cannot_take_are_not_sent(
    client: LiPayKriptoClient, request_: CreateWithdrawalRequest
) -> None:
    record = Recorder()
    with pytest.raises(ValueError):  # two named errors, both ValueErrors
        await client.create_withdrawal(request_, record)
    assert record.exchanges == []


# --- scenarios through the adapter's own webhook handling ---------------------------------------


def translate_all(receiver: Receiver) -> list[Translation]:
    adapter = LiPayKriptoWebhooks(client_id=CONFIG.client_id)
    translations = []
    for delivery in receiver.deliveries:
        verification = adapter.authenticate(delivery)
        assert verification.outcome is VerificationOutcome.VERIFIED, verification
        translations.append(adapter.translate(delivery))
    return translations


def distinct_deposit_total(translations: list[Translation]) -> Decimal:
    seen: dict[str, Decimal] = {}
    for translation in translations:
        for fact in translation.facts:
            assert isinstance(fact, PaymentUpdate)
            assert fact.reference.order_id == "ORDER_123"
            for deposit in fact.deposits:
                assert deposit.currency == "TRY"
                seen.setdefault(deposit.deposit_id, deposit.amount)
    return sum(seen.values(), Decimal(0))


@pytest.mark.parametrize(
    ("scenario", "deliveries", "total", "last_outcome"),
    [
        ("full", 1, "100.00", ProviderPaymentOutcome.PAID),
        ("partial", 1, "50.00", ProviderPaymentOutcome.PAID),
        ("over", 1, "150.00", ProviderPaymentOutcome.PAID),
        ("expire_no_funds", 0, "0", None),
        ("expire_with_funds", 1, "50.00", ProviderPaymentOutcome.PAID),
        ("late", 1, "100.00", ProviderPaymentOutcome.PAID),
        ("fail", 1, "0", ProviderPaymentOutcome.FAILED),
        ("duplicate", 2, "100.00", ProviderPaymentOutcome.PAID),
        ("multiple_deposits", 2, "100.00", ProviderPaymentOutcome.PAID),
        ("out_of_order", 2, "100.00", ProviderPaymentOutcome.PAID),
    ],
)
async def test_payment_scenarios(
    client: LiPayKriptoClient,
    sandbox: TestServer,
    receiver: Receiver,
    scenario: str,
    deliveries: int,
    total: str,
    last_outcome: ProviderPaymentOutcome | None,
) -> None:
    callback = f"{receiver.url}{WEBHOOK_PATH}/per-payment-token"
    created = await client.create_payment(payment_request(callback_url=callback), Recorder())
    answer = await control(
        sandbox, f"/_sandbox/payments/{created.provider_ref}/scenario", {"scenario": scenario}
    )
    assert [d["status"] for d in answer["deliveries"]] == [200] * deliveries
    assert [d["body"].encode() for d in answer["deliveries"]] == [
        d.body for d in receiver.deliveries
    ]
    assert all(d.path_token == "per-payment-token" for d in receiver.deliveries)
    translations = translate_all(receiver)
    assert distinct_deposit_total(translations) == Decimal(total)
    assert len({t.dedupe_key for t in translations}) == min(deliveries, 1)
    if last_outcome is not None:
        fact = translations[-1].facts[0]
        assert isinstance(fact, PaymentUpdate)
        assert fact.status is not None
        assert fact.status.outcome is last_outcome


async def test_webhook_amounts_are_written_as_the_document_shows(
    client: LiPayKriptoClient, sandbox: TestServer, receiver: Receiver
) -> None:
    callback = f"{receiver.url}{WEBHOOK_PATH}/t"
    created = await client.create_payment(
        payment_request(amount="100", callback_url=callback), Recorder()
    )
    await control(sandbox, f"/_sandbox/payments/{created.provider_ref}/scenario",
                  {"scenario": "full"})
    (delivery,) = receiver.deliveries
    assert b'"try_amount": 100.00,' in delivery.body
    assert b'"client_id": "test12345"' in delivery.body


async def test_delivery_without_url_token_is_unverified(
    client: LiPayKriptoClient, sandbox: TestServer, receiver: Receiver
) -> None:
    created = await client.create_payment(
        payment_request(callback_url=receiver.url + WEBHOOK_PATH), Recorder()
    )
    await control(sandbox, f"/_sandbox/payments/{created.provider_ref}/scenario",
                  {"scenario": "full"})
    (delivery,) = receiver.deliveries
    verification = LiPayKriptoWebhooks(client_id=CONFIG.client_id).authenticate(delivery)
    assert verification.outcome is VerificationOutcome.UNVERIFIED
    assert verification.reason == "token_missing"


async def test_unknown_scenario_and_payment(client: LiPayKriptoClient, sandbox: TestServer) -> None:
    created = await client.create_payment(payment_request(), Recorder())
    async with aiohttp.ClientSession() as session:
        async with session.post(
            sandbox.make_url(f"/_sandbox/payments/{created.provider_ref}/scenario"),
            json={"scenario": "teleport"},
        ) as response:
            assert response.status == 400
        async with session.post(
            sandbox.make_url("/_sandbox/payments/999/scenario"), json={"scenario": "full"}
        ) as response:
            assert response.status == 404


@pytest.mark.parametrize(
    ("scenario", "outcome", "sent"),
    [
        ("processing", None, None),
        ("completed", ProviderWithdrawalOutcome.COMPLETED, Decimal("100.00")),
        ("failed", ProviderWithdrawalOutcome.FAILED, None),
        ("manual_review", ProviderWithdrawalOutcome.MANUAL_REVIEW, None),
    ],
)
async def test_withdrawal_scenarios(
    client: LiPayKriptoClient,
    sandbox: TestServer,
    receiver: Receiver,
    scenario: str,
    outcome: ProviderWithdrawalOutcome | None,
    sent: Decimal | None,
) -> None:
    callback = f"{receiver.url}{WEBHOOK_PATH}/per-withdrawal-token"
    created = await client.create_withdrawal(withdrawal_request(callback_url=callback), Recorder())
    answer = await control(
        sandbox, f"/_sandbox/withdrawals/{created.provider_ref}/scenario", {"scenario": scenario}
    )
    translations = translate_all(receiver)
    if outcome is None:
        assert answer["deliveries"] == []
        assert translations == []
        return
    assert [d["status"] for d in answer["deliveries"]] == [200]
    (translation,) = translations
    (fact,) = translation.facts
    assert isinstance(fact, WithdrawalUpdate)
    assert fact.reference.request_id == "WITHDRAW_123"
    assert fact.outcome is outcome
    assert fact.amount_sent == sent
    assert fact.currency == "TRY"
