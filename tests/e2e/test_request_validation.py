"""One validation layer at the internal API's edge, and problem+json for everything (issue 9).

Real HTTP on loopback: the ledger on a real PostgreSQL, in front of all five provider sandboxes.
Every refused request must leave no trace: no provider call (read from each sandbox's request
log) and no event (the log's head does not move). Every refusal is problem+json carrying the
request id, with the rule it broke as its `type`.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.http.cursors import encode_cursor
from adapters.http.keys import PAYMENTS
from adapters.http.problems import PROBLEM_BASE
from adapters.sandbox.fleet import SandboxFleet, sandbox_fleet
from ledger.errors import ConcurrencyConflict
from tests.e2e.harness import TOKEN, Ledger, ledger_with
from tests.e2e.webhook_kit import in_thread, run_examples

PAYMENTS_PATH = "/v1/payments"
WITHDRAWALS_PATH = "/v1/withdrawals"


@dataclass(frozen=True)
class Answer:
    status: int
    content_type: str
    request_id: str | None
    body: Any
    headers: dict[str, str]


@dataclass
class Bench:
    ledger: Ledger
    fleet: SandboxFleet

    async def send(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        params: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        sent = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
        async with self.ledger.http.request(
            method,
            self.ledger.url + path,
            data=body,
            params=params,
            headers=sent | (headers or {}),
        ) as reply:
            text = await reply.text()
            try:
                parsed = json.loads(text)
            except ValueError:
                parsed = text
            return Answer(
                reply.status,
                reply.headers.get("Content-Type", ""),
                reply.headers.get("X-Request-Id"),
                parsed,
                dict(reply.headers),
            )

    async def provider_calls(self) -> int:
        """Provider API calls every sandbox has logged (its own /_sandbox/ controls aside)."""
        total = 0
        for sandbox in self.fleet.sandboxes.values():
            async with self.ledger.http.get(sandbox.url + "/_sandbox/requests") as reply:
                logged = (await reply.json(content_type=None))["requests"]
            total += sum(1 for r in logged if not r["path"].startswith("/_sandbox/"))
        return total

    async def log_position(self) -> int:
        return (await self.ledger.store.head()).position


@asynccontextmanager
async def bench_for(store: Any) -> AsyncIterator[Bench]:
    async with sandbox_fleet() as fleet, ledger_with(store, fleet.provider_tables()) as ledger:
        yield Bench(ledger, fleet)


def assert_problem(answer: Answer, status: int, problem_type: str | None = None) -> None:
    """problem+json with the status, the rule (if given) and the request id of the header."""
    assert status == answer.status, answer.body
    assert answer.content_type.startswith("application/problem+json"), answer
    assert isinstance(answer.body, dict), answer.body
    assert status == answer.body["status"]
    if problem_type is not None:
        assert PROBLEM_BASE + problem_type == answer.body["type"], answer.body
    assert answer.request_id, answer.headers
    assert answer.request_id == answer.body["request_id"]
    text = json.dumps(answer.body)
    assert "pydantic" not in text, text
    assert len(text) < 4000, len(text)


def body(document: dict[str, Any]) -> bytes:
    return json.dumps(document).encode()


def payment(**changes: Any) -> dict[str, Any]:
    document = {
        "provider": "payment_engine",
        "order_id": f"V_{uuid.uuid4().hex[:16]}",
        "amount": "100.00",
        "currency": "USD",
    }
    document.update(changes)
    return {k: v for k, v in document.items() if v is not DROP}


def withdrawal(**changes: Any) -> dict[str, Any]:
    document = {
        "provider": "lipaykripto",
        "request_id": f"W_{uuid.uuid4().hex[:16]}",
        "amount": "10.00",
        "currency": "TRY",
        "address": "TValidationAddress000000000000001",
        "pay_currency": "USDT",
    }
    document.update(changes)
    return {k: v for k, v in document.items() if v is not DROP}


DROP = object()
DEEP = 50_000


def nested(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


def raw_payment(fields: str) -> bytes:
    return (
        '{"provider": "payment_engine", "order_id": "V_raw", "currency": "USD", ' + fields + "}"
    ).encode()


# (name, path, body, status, problem type)
BODY_RULES: list[tuple[str, str, bytes, int, str]] = [
    ("not JSON", PAYMENTS_PATH, b"amount=10", 400, "body-not-json"),
    ("not UTF-8", PAYMENTS_PATH, b'{"a": "\xff"}', 400, "body-not-json"),
    ("empty", PAYMENTS_PATH, b"", 400, "body-not-json"),
    ("NaN", PAYMENTS_PATH, raw_payment('"amount": NaN'), 400, "body-not-json"),
    ("an array", PAYMENTS_PATH, b"[]", 400, "body-must-be-an-object"),
    ("50,000 levels", PAYMENTS_PATH, nested(DEEP), 400, "body-nested-too-deep"),
    (
        "metadata 50,000 levels",
        PAYMENTS_PATH,
        raw_payment('"amount": "1.00", "metadata": ' + nested(DEEP).decode()),
        400,
        "body-nested-too-deep",
    ),
    (
        "duplicate amount",
        PAYMENTS_PATH,
        raw_payment('"amount": "1.00", "amount": "1000.00"'),
        400,
        "duplicate-key",
    ),
    (
        "duplicate key in metadata",
        PAYMENTS_PATH,
        raw_payment('"amount": "1.00", "metadata": {"k": 1, "k": 2}'),
        400,
        "duplicate-key",
    ),
    ("missing amount", PAYMENTS_PATH, body(payment(amount=DROP)), 400, "missing-field"),
    ("unknown field", PAYMENTS_PATH, body(payment(amout="1.00")), 400, "unknown-field"),
    ("amount a number", PAYMENTS_PATH, raw_payment('"amount": 10'), 422, "amount-must-be-a-string"),
    ("amount 1e400", PAYMENTS_PATH, raw_payment('"amount": 1e400'), 422, "amount-must-be-a-string"),
    (
        "amount 5000 digits",
        PAYMENTS_PATH,
        raw_payment('"amount": ' + "9" * 5000),
        422,
        "amount-must-be-a-string",
    ),
    ("amount true", PAYMENTS_PATH, body(payment(amount=True)), 422, "amount-must-be-a-string"),
    ("amount null", PAYMENTS_PATH, body(payment(amount=None)), 422, "amount-must-be-a-string"),
    ("amount {}", PAYMENTS_PATH, body(payment(amount={})), 422, "amount-must-be-a-string"),
    ("amount []", PAYMENTS_PATH, body(payment(amount=[])), 422, "amount-must-be-a-string"),
    ('amount "1e2"', PAYMENTS_PATH, body(payment(amount="1e2")), 422, "amount-not-a-plain-decimal"),
    (
        'amount "1e400"',
        PAYMENTS_PATH,
        body(payment(amount="1e400")),
        422,
        "amount-not-a-plain-decimal",
    ),
    (
        'amount " 10 "',
        PAYMENTS_PATH,
        body(payment(amount=" 10 ")),
        422,
        "amount-not-a-plain-decimal",
    ),
    ('amount "-5"', PAYMENTS_PATH, body(payment(amount="-5")), 422, "amount-not-a-plain-decimal"),
    (
        "amount Arabic-Indic",
        PAYMENTS_PATH,
        body(payment(amount="\u0661\u0660\u0660")),
        422,
        "amount-not-a-plain-decimal",
    ),
    (
        "amount 30 digits",
        PAYMENTS_PATH,
        body(payment(amount="1" * 30)),
        422,
        "amount-too-many-integer-digits",
    ),
    (
        "amount 1000 digits",
        PAYMENTS_PATH,
        body(payment(amount="1" * 1000)),
        422,
        "amount-too-many-integer-digits",
    ),
    (
        "amount past USD's scale",
        PAYMENTS_PATH,
        body(payment(amount="10.001")),
        422,
        "amount-too-many-fraction-digits",
    ),
    ("amount zero", PAYMENTS_PATH, body(payment(amount="0.00")), 422, "amount-must-be-positive"),
    (
        "CoinCoin under 10",
        PAYMENTS_PATH,
        body(payment(provider="coincoin", amount="9.99", currency="USDT")),
        422,
        "amount-below-provider-minimum",
    ),
    (
        "provider unknown",
        PAYMENTS_PATH,
        body(payment(provider="paypal")),
        422,
        "provider-not-configured",
    ),
    (
        "USD at CoinPay",
        PAYMENTS_PATH,
        body(payment(provider="coinpay")),
        422,
        "currency-not-supported",
    ),
    (
        "BTC at Payment Engine",
        PAYMENTS_PATH,
        body(payment(currency="BTC", amount="0.01")),
        422,
        "currency-not-supported",
    ),
    (
        "CoinPay paid in BTC",
        PAYMENTS_PATH,
        body(payment(provider="coinpay", currency="USDC", pay_currency="BTC")),
        422,
        "currency-not-supported",
    ),
    (
        "LiPayKripto with a pay currency",
        PAYMENTS_PATH,
        body(payment(provider="lipaykripto", currency="TRY", pay_currency="USDT")),
        422,
        "currency-not-supported",
    ),
    (
        "Cryptofuse priced in BTC, paid in its default",
        PAYMENTS_PATH,
        body(payment(provider="cryptofuse", currency="BTC", amount="0.01")),
        422,
        "pay-currency-required",
    ),
    (
        "currency a number",
        PAYMENTS_PATH,
        body(payment(currency=840)),
        422,
        "field-must-be-a-string",
    ),
    ("order_id NUL", PAYMENTS_PATH, body(payment(order_id="a\x00b")), 422, "text-contains-nul"),
    (
        "order_id lone surrogate",
        PAYMENTS_PATH,
        body(payment()).replace(b'"order_id": "V_', b'"order_id": "\\ud800V_'),
        422,
        "text-contains-lone-surrogate",
    ),
    (
        "order_id newline",
        PAYMENTS_PATH,
        body(payment(order_id="a\nb")),
        422,
        "text-contains-control-character",
    ),
    (
        "order_id padded",
        PAYMENTS_PATH,
        body(payment(order_id=" A1")),
        422,
        "text-has-surrounding-whitespace",
    ),
    ("order_id empty", PAYMENTS_PATH, body(payment(order_id="")), 422, "text-must-not-be-empty"),
    ("order_id 129", PAYMENTS_PATH, body(payment(order_id="x" * 129)), 422, "text-too-long"),
    ("customer_id 129", PAYMENTS_PATH, body(payment(customer_id="x" * 129)), 422, "text-too-long"),
    (
        "customer_id a megabyte",
        PAYMENTS_PATH,
        body(payment(customer_id="x" * 1_000_000)),
        422,
        "text-too-long",
    ),
    (
        "expires a string",
        PAYMENTS_PATH,
        body(payment(expires_in_minutes="60")),
        422,
        "expires-in-minutes-must-be-an-integer",
    ),
    (
        "expires 60.0",
        PAYMENTS_PATH,
        raw_payment('"amount": "1.00", "expires_in_minutes": 60.0'),
        422,
        "expires-in-minutes-must-be-an-integer",
    ),
    (
        "expires zero",
        PAYMENTS_PATH,
        body(payment(expires_in_minutes=0)),
        422,
        "expires-in-minutes-out-of-range",
    ),
    (
        "expires past a week",
        PAYMENTS_PATH,
        body(payment(expires_in_minutes=10081)),
        422,
        "expires-in-minutes-out-of-range",
    ),
    (
        "metadata a list",
        PAYMENTS_PATH,
        body(payment(metadata=[])),
        422,
        "metadata-must-be-an-object",
    ),
    (
        "metadata 9 levels",
        PAYMENTS_PATH,
        raw_payment('"amount": "1.00", "metadata": ' + nested(9).decode()),
        422,
        "metadata-too-deep",
    ),
    (
        "metadata 17 KiB",
        PAYMENTS_PATH,
        body(payment(metadata={"note": "x" * 17 * 1024})),
        422,
        "metadata-too-large",
    ),
    (
        "metadata a billion-digit number",
        PAYMENTS_PATH,
        raw_payment('"amount": "1.00", "metadata": {"n": 1e999999999}'),
        422,
        "metadata-too-large",
    ),
    (
        "metadata key NUL",
        PAYMENTS_PATH,
        body(payment(metadata={"k\x00": 1})),
        422,
        "text-contains-nul",
    ),
    (
        "LiPayKripto withdrawal without a coin",
        WITHDRAWALS_PATH,
        body(withdrawal(pay_currency=DROP)),
        422,
        "pay-currency-required",
    ),
    (
        "LiPayKripto withdrawal in BTC",
        WITHDRAWALS_PATH,
        body(withdrawal(pay_currency="BTC")),
        422,
        "currency-not-supported",
    ),
    (
        "LiPayKripto withdrawal in USD",
        WITHDRAWALS_PATH,
        body(withdrawal(currency="USD")),
        422,
        "currency-not-supported",
    ),
    (
        "CoinCoin withdrawal",
        WITHDRAWALS_PATH,
        body(withdrawal(provider="coincoin", currency="USDT", pay_currency=DROP)),
        422,
        "operation-not-supported",
    ),
    (
        "address 257",
        WITHDRAWALS_PATH,
        body(withdrawal(address="T" * 257)),
        422,
        "text-too-long",
    ),
    (
        "address NUL",
        WITHDRAWALS_PATH,
        body(withdrawal(address="T\x00")),
        422,
        "text-contains-nul",
    ),
    (
        "withdrawal past TRY's scale",
        WITHDRAWALS_PATH,
        body(withdrawal(amount="10.005")),
        422,
        "amount-too-many-fraction-digits",
    ),
    (
        "withdrawal amount a number",
        WITHDRAWALS_PATH,
        body(withdrawal(amount=10)),
        422,
        "amount-must-be-a-string",
    ),
]


async def test_each_body_rule_answers_its_status_and_type_and_leaves_no_trace(store):
    async with bench_for(store) as bench:
        calls, position = await bench.provider_calls(), await bench.log_position()
        actual = {}
        for name, path, raw, _, _ in BODY_RULES:
            answer = await bench.send("POST", path, raw)
            if answer.status < 400:
                actual[name] = (answer.status, "accepted")
                continue
            assert_problem(answer, answer.status)
            actual[name] = (answer.status, answer.body["type"].removeprefix(PROBLEM_BASE))
        expected = {name: (status, kind) for name, _, _, status, kind in BODY_RULES}
        assert expected == actual
        assert (calls, position) == (await bench.provider_calls(), await bench.log_position())


async def test_a_refused_lipaykripto_withdrawal_reserves_nothing_and_its_request_id_stays_free(
    store,
):
    """It once answered 500 after reserving the funds, and burnt the request id."""
    async with bench_for(store) as bench:
        refused = withdrawal(request_id="W_no_coin", pay_currency=DROP)
        answer = await bench.send("POST", WITHDRAWALS_PATH, body(refused))
        assert_problem(answer, 422, "pay-currency-required")
        assert (
            await bench.ledger.store.find_claim("withdrawal_request", "lipaykripto:W_no_coin")
            is None
        )
        assert 0 == await bench.log_position()


async def test_valid_requests_still_pass(store):
    async with bench_for(store) as bench:
        created = await bench.send(
            "POST",
            PAYMENTS_PATH,
            body(payment(metadata={"cart": [{"sku": "A-1", "qty": 2}]}, customer_id="c-1")),
        )
        assert 201 == created.status, created.body
        assert {"amount": "100.00", "currency": "USD"} == created.body["price"]
        eth = await bench.send(
            "POST", PAYMENTS_PATH, body(payment(amount="0.123456789012345678", currency="ETH"))
        )
        assert 201 == eth.status, eth.body
        crypto = await bench.send(
            "POST",
            PAYMENTS_PATH,
            body(
                payment(provider="cryptofuse", currency="BTC", pay_currency="BTC", amount="0.002")
            ),
        )
        assert 201 == crypto.status, crypto.body


async def test_unknown_routes_and_methods_and_oversized_bodies_are_problems(store):
    async with bench_for(store) as bench:
        assert_problem(await bench.send("GET", "/v1/nothing-here"), 404, "not-found")
        wrong_method = await bench.send("DELETE", PAYMENTS_PATH)
        assert_problem(wrong_method, 405, "method-not-allowed")
        assert "POST" in wrong_method.headers["Allow"]
        assert_problem(await bench.send("GET", "/v1/payments/not-a-uuid"), 404, "not-found")
        huge = b'{"note": "' + b"x" * (2 * 1024 * 1024) + b'"}'
        assert_problem(await bench.send("POST", PAYMENTS_PATH, huge), 413)
        unauthorized = await bench.send(
            "GET", PAYMENTS_PATH, headers={"Authorization": "Bearer wrong"}
        )
        assert_problem(unauthorized, 401, "unauthorized")


async def test_an_unexpected_failure_is_a_logged_500_problem_never_aiohttps_text(
    store, monkeypatch, caplog
):
    async with bench_for(store) as bench:
        service = bench.ledger.app[PAYMENTS]

        async def broken(_: Any) -> None:
            raise RuntimeError("secret internals")

        monkeypatch.setattr(service, "load_payment", broken)
        with caplog.at_level(logging.ERROR):
            answer = await bench.send("GET", f"{PAYMENTS_PATH}/{uuid.uuid4()}")
        assert_problem(answer, 500, "internal-error")
        assert "secret internals" not in json.dumps(answer.body)
        logged = [r for r in caplog.records if answer.request_id in r.getMessage()]
        assert logged, caplog.text
        assert logged[0].exc_info is not None


async def test_a_concurrency_conflict_that_outlasted_its_retries_is_a_409(store, monkeypatch):
    async with bench_for(store) as bench:
        service = bench.ledger.app[PAYMENTS]

        async def conflicted(_: Any) -> None:
            raise ConcurrencyConflict("stream moved on")

        monkeypatch.setattr(service, "load_payment", conflicted)
        answer = await bench.send("GET", f"{PAYMENTS_PATH}/{uuid.uuid4()}")
        assert_problem(answer, 409, "concurrency-conflict")


async def test_a_callers_request_id_is_kept_and_a_hostile_one_replaced(store):
    async with bench_for(store) as bench:
        kept = await bench.send("GET", "/v1/nothing", headers={"X-Request-Id": "abc-123"})
        assert ("abc-123", "abc-123") == (kept.request_id, kept.body["request_id"])
        hostile = "x" * 5000
        replaced = await bench.send("GET", "/v1/nothing", headers={"X-Request-Id": hostile})
        assert replaced.request_id != hostile
        assert_problem(replaced, 404)
        healthy = await bench.send("GET", "/healthz")
        assert 200 == healthy.status
        assert healthy.request_id


# ---------------------------------------------------------------- query parameters


def cursor(*parts: str) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(parts)).encode()).decode().rstrip("=")


# (path, params, status, problem type)
QUERY_RULES: list[tuple[str, dict[str, str] | list[tuple[str, str]], int, str]] = [
    ("/v1/payments", {"order_id": "\x00"}, 422, "text-contains-nul"),
    ("/v1/payments", {"status": "paid"}, 422, "parameter-value-not-allowed"),
    ("/v1/payments", {"coverage": "full"}, 422, "parameter-value-not-allowed"),
    ("/v1/payments", {"provider": "paypal"}, 422, "parameter-value-not-allowed"),
    ("/v1/payments", {"provider": "\x00"}, 422, "text-contains-nul"),
    ("/v1/payments", {"customer_id": "x" * 129}, 422, "text-too-long"),
    ("/v1/payments", {"order_id": ""}, 422, "text-must-not-be-empty"),
    ("/v1/payments", {"limit": "0"}, 422, "limit-out-of-range"),
    ("/v1/payments", {"limit": "501"}, 422, "limit-out-of-range"),
    ("/v1/payments", {"limit": "ten"}, 400, "limit-not-an-integer"),
    ("/v1/payments", {"limit": "\u0665"}, 400, "limit-not-an-integer"),
    ("/v1/payments", {"cursor": "garbage!"}, 400, "cursor-invalid"),
    ("/v1/payments", {"cursor": cursor("2024-01-01T00:00:00+00:00")}, 400, "cursor-invalid"),
    (
        "/v1/payments",
        {"cursor": cursor("0001-01-01T00:00:00+01:00", str(uuid.UUID(int=0)))},
        400,
        "cursor-invalid",
    ),
    (
        "/v1/payments",
        {"cursor": base64.urlsafe_b64encode(b"[" * 5000).decode()},
        400,
        "cursor-invalid",
    ),
    ("/v1/payments", {"created_from": "2024-01-01T00:00:00"}, 400, "instant-not-rfc3339"),
    ("/v1/payments", {"created_from": "2024-01-01"}, 400, "instant-not-rfc3339"),
    ("/v1/payments", {"created_to": "2024-01-01T00:00:00 00:00"}, 400, "instant-not-rfc3339"),
    ("/v1/payments", {"created_to": "2024-13-01T00:00:00Z"}, 400, "instant-not-rfc3339"),
    ("/v1/payments", {"created_to": "0001-01-01T00:00:00+01:00"}, 422, "instant-out-of-range"),
    ("/v1/payments", {"stauts": "pending"}, 400, "unknown-parameter"),
    ("/v1/payments", [("status", "pending"), ("status", "failed")], 400, "parameter-repeated"),
    ("/v1/withdrawals", {"status": "sent"}, 422, "parameter-value-not-allowed"),
    ("/v1/withdrawals", {"request_id": "a\x00"}, 422, "text-contains-nul"),
    ("/v1/withdrawals", {"coverage": "exact"}, 400, "unknown-parameter"),
    ("/v1/balances", {"account": "\x00"}, 422, "text-contains-nul"),
    ("/v1/balances", {"currency": "U" * 17}, 422, "text-too-long"),
    ("/v1/balances", {"limit": "5"}, 400, "unknown-parameter"),
    ("/v1/journal", {"account": "\x00"}, 422, "text-contains-nul"),
    ("/v1/journal", {"provider": "paypal"}, 422, "parameter-value-not-allowed"),
    ("/v1/journal", {"cursor": cursor(str(2**70))}, 400, "cursor-invalid"),
    ("/v1/journal", {"cursor": cursor("-1")}, 400, "cursor-invalid"),
    ("/v1/reconciliation/items", {"reason": "nope"}, 422, "parameter-value-not-allowed"),
    ("/v1/reconciliation/items", {"state": "closed"}, 422, "parameter-value-not-allowed"),
    ("/v1/reconciliation/items", {"provider": "x"}, 422, "parameter-value-not-allowed"),
    ("/v1/reconciliation/items", {"from": "yesterday"}, 400, "instant-not-rfc3339"),
    (
        "/v1/reconciliation/items",
        {"cursor": cursor("2024-01-01T00:00:00+00:00", "1", "payment", "a\x00", "underpaid")},
        400,
        "cursor-invalid",
    ),
    ("/v1/reconciliation/summary", {"reason": "nope"}, 422, "parameter-value-not-allowed"),
    ("/v1/reconciliation/summary", {"currency": "\x00"}, 422, "text-contains-nul"),
    ("/v1/reconciliation/summary", {"limit": "5"}, 400, "unknown-parameter"),
]


async def test_each_query_rule_answers_its_status_and_type(store):
    async with bench_for(store) as bench:
        actual = {}
        for number, (path, params, _, _) in enumerate(QUERY_RULES):
            answer = await bench.send("GET", path, params=params)
            if answer.status < 400:
                actual[number, path] = (answer.status, "accepted")
                continue
            assert_problem(answer, answer.status)
            actual[number, path] = (answer.status, answer.body["type"].removeprefix(PROBLEM_BASE))
        expected = {
            (number, path): (status, kind)
            for number, (path, _, status, kind) in enumerate(QUERY_RULES)
        }
        assert expected == actual


async def test_an_unknown_status_names_the_allowed_ones(store):
    async with bench_for(store) as bench:
        answer = await bench.send("GET", "/v1/payments", params={"status": "paid"})
        assert_problem(answer, 422, "parameter-value-not-allowed")
        assert "status" == answer.body["parameter"]
        for allowed in ("pending", "completed", "expired", "failed"):
            assert allowed in answer.body["detail"]


async def test_valid_queries_with_every_parameter_still_answer_200(store):
    async with bench_for(store) as bench:
        moment = "2024-05-01T12:00:00Z"
        queries = [
            (
                "/v1/payments",
                {
                    "provider": "coinpay",
                    "status": "pending",
                    "coverage": "unpaid",
                    "order_id": "o",
                    "provider_ref": "r",
                    "customer_id": "c",
                    "created_from": moment,
                    "created_to": "2024-05-01t12:00:00.123456789+02:00",
                    "cursor": encode_cursor(datetime.now(UTC), uuid.uuid4()),
                    "limit": "500",
                },
            ),
            ("/v1/withdrawals", {"status": "manual_review", "request_id": "r", "limit": "1"}),
            ("/v1/balances", {"account": "provider:coinpay:funds", "currency": "USDC"}),
            ("/v1/journal", {"provider": "lipaykripto", "cursor": encode_cursor(5), "limit": "1"}),
            (
                "/v1/reconciliation/items",
                {"reason": "underpaid", "state": "all", "from": moment, "to": moment},
            ),
            ("/v1/reconciliation/summary", {"state": "cleared", "provider": "cryptofuse"}),
        ]
        for path, params in queries:
            answer = await bench.send("GET", path, params=params)
            assert 200 == answer.status, (path, answer.body)
            assert [] == answer.body["items"]


# ---------------------------------------------------------------- properties


class RawNumber(str):
    """A JSON number token written as is (1e400, 5,000 digits): json.dumps cannot make one."""

    __slots__ = ()


def render(value: Any) -> str:
    if isinstance(value, RawNumber):
        return str(value)
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)}: {render(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(render(v) for v in value) + "]"
    return json.dumps(value)


HOSTILE_TEXT = [
    "\x00",
    "a\x00b",
    "\ud800",
    "x\udfffy",
    "\u202e\ufeff",
    " 10 ",
    "\u0661\u0662",
    "x" * 300,
]
NUMBERS = [
    RawNumber("1e400"),
    RawNumber("-1e400"),
    RawNumber("9" * 5000),
    RawNumber("1e999999999"),
    RawNumber("0.1"),
    RawNumber("-0"),
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.integers(0, 30).flatmap(
        lambda places: st.decimals(allow_nan=False, allow_infinity=False, places=places)
    ),
    st.sampled_from(NUMBERS),
    st.text(max_size=20),
    st.sampled_from(HOSTILE_TEXT),
    st.from_regex(r"\A[0-9]{0,30}(\.[0-9]{0,20})?\Z"),
    st.sampled_from(["USD", "USDC", "USDT", "TRY", "BTC", "USDTTRC20", "coinpay", "lipaykripto"]),
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)

PAYMENT_TEMPLATES = [
    {"provider": "coinpay", "amount": "100.00", "currency": "USDC"},
    {"provider": "coincoin", "amount": "100", "currency": "USDT"},
    {"provider": "cryptofuse", "amount": "100.00", "currency": "USD", "pay_currency": "USDTTRC20"},
    {"provider": "payment_engine", "amount": "100.00", "currency": "USD"},
    {"provider": "lipaykripto", "amount": "100.00", "currency": "TRY"},
]
WITHDRAWAL_TEMPLATES = [
    {"provider": "coinpay", "amount": "10", "currency": "USDC"},
    {"provider": "cryptofuse", "amount": "10", "currency": "USDTTRC20"},
    {"provider": "payment_engine", "amount": "10.00", "currency": "USD"},
    {"provider": "lipaykripto", "amount": "10.00", "currency": "TRY", "pay_currency": "USDT"},
]
PAYMENT_FIELDS = [
    "provider", "order_id", "amount", "currency", "pay_currency",
    "expires_in_minutes", "customer_id", "metadata",
]  # fmt: skip
WITHDRAWAL_FIELDS = [
    "provider", "request_id", "amount", "currency", "address", "pay_currency", "customer_id",
]  # fmt: skip
_serial = itertools.count()


@st.composite
def request_bodies(draw: st.DrawFn, templates: list[dict[str, Any]], fields: list[str]) -> bytes:
    """A request body: a valid one with some fields replaced by any JSON value, dropped, or
    joined by unknown ones; or random bytes, a repeated key, or deep nesting."""
    kind = draw(st.sampled_from(["mutated", "mutated", "mutated", "bytes", "repeat", "deep"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    document: dict[str, Any] = dict(draw(st.sampled_from(templates)))
    id_field = fields[1]
    document[id_field] = f"P_{next(_serial)}_{uuid.uuid4().hex[:8]}"
    if "address" in fields:
        document["address"] = "TPropertyAddress0000000000000001"
    if kind == "deep":
        depth = draw(st.sampled_from([9, 200, 5000, 60_000]))
        return (render(document)[:-1] + ', "metadata": ' + nested(depth).decode() + "}").encode()
    changed = draw(st.lists(st.sampled_from([*fields, "unknown"]), max_size=3, unique=True))
    for name in changed:
        if name == "unknown" or draw(st.integers(0, 3)) > 0:  # a field dropped one time in four
            document[name] = draw(json_values)
        else:
            document.pop(name, None)
    text = render(document)
    if kind == "repeat":
        name = draw(st.sampled_from(fields))
        text = text[:-1] + (", " if document else "") + f'"{name}": ' + render(draw(scalars)) + "}"
    return text.encode()


async def check_bodies(bench: Bench, path: str, bodies: st.SearchStrategy[bytes]) -> set[int]:
    call = run_examples(asyncio.get_running_loop())
    seen: set[int] = set()

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(bodies)
    def check(raw: bytes) -> None:
        calls, position = call(bench.provider_calls()), call(bench.log_position())
        answer = call(bench.send("POST", path, raw))
        seen.add(answer.status)
        # 201 taken; 409 the id is held; 502 the provider refused a valid request.
        assert answer.status in {201, 400, 409, 422, 502}, (answer.status, answer.body)
        if answer.status != 201:
            assert_problem(answer, answer.status)
        if answer.status in {400, 409, 422}:
            after = (call(bench.provider_calls()), call(bench.log_position()))
            assert (calls, position) == after, (answer.body, raw[:200])

    await in_thread(check)
    return seen


async def test_no_payment_body_yields_a_5xx_or_reaches_a_provider_when_refused(store):
    async with bench_for(store) as bench:
        seen = await check_bodies(
            bench, PAYMENTS_PATH, request_bodies(PAYMENT_TEMPLATES, PAYMENT_FIELDS)
        )
        assert {400, 422} <= seen, seen


async def test_no_withdrawal_body_yields_a_5xx_or_reaches_a_provider_when_refused(store):
    async with bench_for(store) as bench:
        seen = await check_bodies(
            bench, WITHDRAWALS_PATH, request_bodies(WITHDRAWAL_TEMPLATES, WITHDRAWAL_FIELDS)
        )
        assert {400, 422} <= seen, seen


LIST_PARAMETERS = {
    "/v1/payments": [
        "provider", "status", "coverage", "order_id", "provider_ref", "customer_id",
        "created_from", "created_to", "cursor", "limit",
    ],
    "/v1/withdrawals": [
        "provider", "status", "request_id", "provider_ref", "customer_id",
        "created_from", "created_to", "cursor", "limit",
    ],
    "/v1/balances": ["account", "currency"],
    "/v1/journal": ["account", "currency", "subject_id", "provider", "cursor", "limit"],
    "/v1/reconciliation/items": [
        "reason", "state", "provider", "currency", "from", "to", "cursor", "limit",
    ],
    "/v1/reconciliation/summary": ["reason", "state", "provider", "currency", "from", "to"],
}  # fmt: skip
# Query strings carry no lone surrogates (they are not UTF-8), everything else they can.
url_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=30)
parameter_values = st.one_of(
    url_text,
    st.sampled_from(["\x00", "pending", "completed", "unpaid", "exact", "underpaid", "open"]),
    st.sampled_from(["coinpay", "lipaykripto", "all", "cleared", "USD", "0", "500", "-1", ""]),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.datetimes(timezones=st.timezones()).map(lambda moment: moment.isoformat()),
    st.sampled_from(
        ["2024-05-01T12:00:00Z", "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"]
    ),
    st.lists(url_text, max_size=5).map(lambda parts: cursor(*parts)),
    st.tuples(st.datetimes(timezones=st.timezones()), st.uuids()).map(
        lambda key: encode_cursor(*key)
    ),
    st.integers(min_value=-(2**70), max_value=2**70).map(encode_cursor),
)


async def test_no_list_query_yields_a_5xx(store):
    async with bench_for(store) as bench:
        call = run_examples(asyncio.get_running_loop())
        seen: set[int] = set()

        @settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
        @given(st.data())
        def check(data: st.DataObject) -> None:
            path = data.draw(st.sampled_from(sorted(LIST_PARAMETERS)), label="path")
            names = st.sampled_from(LIST_PARAMETERS[path]) | url_text
            params = data.draw(st.lists(st.tuples(names, parameter_values), max_size=4))
            answer = call(bench.send("GET", path, params=params))
            seen.add(answer.status)
            assert answer.status in {200, 400, 422}, (path, params, answer.body)
            if answer.status == 200:
                assert isinstance(answer.body["items"], list)
            else:
                assert_problem(answer, answer.status)

        await in_thread(check)
        assert {200, 400, 422} <= seen, seen
