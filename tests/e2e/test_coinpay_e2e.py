"""CoinPay end to end: the ledger's HTTP app and the CoinPay sandbox on loopback, real PostgreSQL.

CoinPay signs `JSON.stringify(payload)` with HMAC-SHA256 in `x-signature`, and its webhook URL is
set once in its portal (here `POST /_sandbox/webhook_url`). It has no word for partial, over or
late payments, nor for expiry: `transaction.completed` carries the total paid so far, and the
ledger expires payments by its own clock, which these tests move. Payouts are answered by
`payout.completed` (documented) and `payout.failed` (the sandbox's addition); CoinPay documents no
webhook for a payout being processed or reviewed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from adapters.sandbox.coinpay import SandboxConfig, create_sandbox_app
from ledger.deliveries import ReceiptKind
from tests.e2e.harness import Ledger, free_port, ledger_with, serve
from tests.e2e.records import receipts, unmatched

SECRET = "whsec_coinpay_e2e"
USERNAME = "merchant-e2e"
PASSWORD = "pw-e2e-0451"
CURRENCY = "USDC"
PRICE = "120.50"  # half is 60.25, one and a half 180.75: exact in decimal and in a double
EXPIRY_MINUTES = 30


class Clock:
    """The ledger's clock: the wall clock moved forward by however much a test says."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, **delta: float) -> None:
        self.offset += timedelta(**delta)


@dataclass
class World:
    ledger: Ledger
    sandbox_url: str
    clock: Clock = field(default_factory=Clock)

    @property
    def webhook_url(self) -> str:
        return f"{self.ledger.url}/v1/webhooks/coinpay"

    async def control(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        async with self.ledger.http.post(f"{self.sandbox_url}/_sandbox/{path}", json=body) as reply:
            return reply.status, await reply.json(content_type=None)

    async def deliver(
        self, raw: bytes, headers: dict[str, str] | None = None, path: str = "/v1/webhooks/coinpay"
    ) -> tuple[int, Any]:
        """A POST as a provider makes it: no bearer token, the body and headers as given."""
        sent = {"Content-Type": "application/json", **(headers or {})}
        async with self.ledger.http.post(self.ledger.url + path, data=raw, headers=sent) as reply:
            text = await reply.text()
            try:
                return reply.status, json.loads(text)
            except ValueError:
                return reply.status, text


@pytest.fixture
async def world(store):
    clock = Clock()
    config = SandboxConfig(username=USERNAME, password=PASSWORD, webhook_secret=SECRET)
    async with serve(create_sandbox_app(config)) as sandbox_url:
        tables = {
            "coinpay": {
                "base_url": sandbox_url,
                "username": USERNAME,
                "password": PASSWORD,
                "webhook_secret": SECRET,
            }
        }
        async with ledger_with(store, tables, free_port(), clock=clock) as ledger:
            world = World(ledger, sandbox_url, clock)
            # CoinPay's portal: the merchant enters the ledger's webhook URL once.
            status, _ = await world.control("webhook_url", {"webhook_url": world.webhook_url})
            assert 200 == status
            yield world


# --- helpers -------------------------------------------------------------------------------------


async def create(
    world: World, order_id: str, amount: str = PRICE, expires_in_minutes: int | None = None
) -> dict:
    body: dict[str, Any] = {
        "provider": "coinpay",
        "order_id": order_id,
        "amount": amount,
        "currency": CURRENCY,
    }
    if expires_in_minutes is not None:
        body["expires_in_minutes"] = expires_in_minutes
    status, payment = await world.ledger.call("POST", "/v1/payments", json=body)
    assert 201 == status, payment
    return payment


async def scenario(world: World, provider_ref: str, name: str) -> list[dict]:
    status, sent = await world.control(f"payments/{provider_ref}/scenario", {"scenario": name})
    assert 200 == status, sent
    assert all(200 == d["status"] for d in sent["deliveries"]), sent
    return sent["deliveries"]


async def view(world: World, payment_id: str) -> dict:
    status, payment = await world.ledger.call("GET", f"/v1/payments/{payment_id}")
    assert 200 == status, payment
    return payment


async def event_types(world: World, payment_id: str) -> list[str]:
    status, events = await world.ledger.call("GET", f"/v1/payments/{payment_id}/events")
    assert 200 == status, events
    return [e["type"] for e in events["items"]]


async def delivery_outcomes(world: World, stream_id: str) -> list[str]:
    """The outcome each recorded delivery got in a payment's or withdrawal's own stream (once
    the applier has applied every delivery received so far)."""
    await world.ledger.applied()
    return [
        json.loads(e.payload)["delivery"]["outcome"]
        for e in await world.ledger.store.read_stream(stream_id)
        if e.type.endswith(".DeliveryRecorded")
    ]


async def receipts_of(world: World, kind: ReceiptKind) -> list[dict]:
    """CoinPay's deliveries recorded on receipt as `kind`, each in a stream of its own."""
    return await receipts(world.ledger.store, kind, "coinpay")


async def unmatched_records(world: World) -> list[dict]:
    """CoinPay's deliveries held unmatched, once the applier has applied them."""
    await world.ledger.applied()
    return await unmatched(world.ledger.store, "coinpay")


def money(payment: dict) -> dict:
    """What a payment says about money and state, without its version and update time."""
    keys = ("status", "coverage", "late", "received", "pending", "outstanding", "overpaid")
    return {key: payment[key] for key in keys} | {
        "unverified": payment["unverified"],
        "deposits": [(d["amount"], d["verified"], d["late"]) for d in payment["deposits"]],
    }


def signed(body: str, secret: str = SECRET) -> dict[str, str]:
    """CoinPay's header for a body that is already JSON.stringify's own text (compact, keys in
    order, numbers as JavaScript writes them), computed here without the adapter's code."""
    digest = hmac.new(secret.encode(), body.encode(), hashlib.sha256).hexdigest()
    return {"x-signature": digest}


def completed_body(transaction_id: str, amount: str = "120.5") -> str:
    return (
        '{"event":"transaction.completed","data":{"transactionId":"' + transaction_id + '",'
        '"amount":' + amount + ',"currency":"' + CURRENCY + '"}}'
    )


# --- payments ------------------------------------------------------------------------------------

D0 = "0.000000"


@pytest.mark.parametrize(
    ("name", "status", "coverage", "received", "outstanding", "overpaid", "deposits"),
    [
        ("full", "completed", "exact", "120.500000", D0, D0, ["120.500000"]),
        ("partial", "pending", "partial", "60.250000", "60.250000", D0, ["60.250000"]),
        ("over", "completed", "over", "180.750000", D0, "60.250000", ["180.750000"]),
        # Each delivery carries the total so far: 60.25 then 120.5 are two deposits.
        ("multiple_deposits", "completed", "exact", "120.500000", D0, D0, ["60.250000"] * 2),
        # The lower total arriving second adds nothing.
        ("out_of_order", "completed", "exact", "120.500000", D0, D0, ["120.500000"]),
        ("duplicate", "completed", "exact", "120.500000", D0, D0, ["120.500000"]),
        ("fail", "failed", "unpaid", D0, "120.500000", D0, []),
    ],
)
async def test_a_scenario_ends_in_the_right_state_and_amounts(
    world, name, status, coverage, received, outstanding, overpaid, deposits
):
    payment = await create(world, f"ORDER-{name}")
    assert {"amount": "120.500000", "currency": CURRENCY} == payment["expected"]
    assert ("pending", "unpaid") == (payment["status"], payment["coverage"])

    await scenario(world, payment["provider_ref"], name)

    after = await view(world, payment["payment_id"])
    assert (status, coverage, False) == (after["status"], after["coverage"], after["late"])
    assert (received, outstanding, overpaid) == (
        after["received"],
        after["outstanding"],
        after["overpaid"],
    )
    assert (D0, D0) == (after["pending"], after["unverified"])
    assert deposits == [d["amount"] for d in after["deposits"]]
    assert all(d["verified"] and not d["late"] for d in after["deposits"])


async def test_a_duplicate_delivery_is_acknowledged_recorded_and_changes_nothing(world):
    payment = await create(world, "ORDER-dup")
    sent = await scenario(world, payment["provider_ref"], "duplicate")
    assert sent[0]["body"] == sent[1]["body"]  # byte for byte the same delivery
    # The copy is caught on receipt: recorded as a duplicate receipt, not in the payment's stream.
    assert ["verified"] == await delivery_outcomes(world, payment["payment_id"])
    (copy,) = await receipts_of(world, ReceiptKind.DUPLICATE)
    assert (sent[1]["body"], "verified") == (copy["body"], copy["verification"]["outcome"])
    types = await event_types(world, payment["payment_id"])
    assert 1 == types.count("Payment.DepositDetected")
    before = await view(world, payment["payment_id"])

    # CoinPay retries the same delivery once more, as a provider does when it saw no 2xx.
    status, reply = await world.deliver(sent[0]["body"].encode(), signed(sent[0]["body"]))
    assert (200, "duplicate") == (status, reply["outcome"])

    after = await view(world, payment["payment_id"])
    assert money(before) == money(after)
    assert types == await event_types(world, payment["payment_id"])
    assert 2 == len(await receipts_of(world, ReceiptKind.DUPLICATE))


async def test_expiry_without_funds_is_the_ledgers_own_clock(world):
    payment = await create(world, "ORDER-exp-empty", expires_in_minutes=EXPIRY_MINUTES)
    assert payment["expires_at"] is not None
    assert [] == await scenario(world, payment["provider_ref"], "expire_no_funds")
    assert "pending" == (await view(world, payment["payment_id"]))["status"]

    world.clock.advance(minutes=EXPIRY_MINUTES + 1)

    after = await view(world, payment["payment_id"])
    assert ("expired", "unpaid", False) == (after["status"], after["coverage"], after["late"])
    assert (D0, "120.500000") == (after["received"], after["outstanding"])
    assert "Payment.Expired" in await event_types(world, payment["payment_id"])


async def test_expiry_with_part_paid_keeps_the_funds(world):
    payment = await create(world, "ORDER-exp-half", expires_in_minutes=EXPIRY_MINUTES)
    await scenario(world, payment["provider_ref"], "expire_with_funds")
    before = await view(world, payment["payment_id"])
    assert ("pending", "partial") == (before["status"], before["coverage"])

    world.clock.advance(minutes=EXPIRY_MINUTES + 1)

    after = await view(world, payment["payment_id"])
    assert ("expired", "partial", False) == (after["status"], after["coverage"], after["late"])
    assert ("60.250000", "60.250000", D0) == (
        after["received"],
        after["outstanding"],
        after["overpaid"],
    )
    assert [("60.250000", False)] == [(d["amount"], d["late"]) for d in after["deposits"]]


async def test_funds_after_expiry_are_kept_and_late(world):
    payment = await create(world, "ORDER-late", expires_in_minutes=EXPIRY_MINUTES)
    world.clock.advance(minutes=EXPIRY_MINUTES + 1)
    # Nobody asked for the payment since it fell due: the delivery itself must find it expired.
    await scenario(world, payment["provider_ref"], "late")

    after = await view(world, payment["payment_id"])
    assert ("expired", "exact", True) == (after["status"], after["coverage"], after["late"])
    assert ("120.500000", D0, D0) == (after["received"], after["outstanding"], after["overpaid"])
    assert [("120.500000", True)] == [(d["amount"], d["late"]) for d in after["deposits"]]


async def test_funds_in_time_are_not_late_even_when_read_after_expiry(world):
    payment = await create(world, "ORDER-intime", expires_in_minutes=EXPIRY_MINUTES)
    await scenario(world, payment["provider_ref"], "full")
    world.clock.advance(minutes=EXPIRY_MINUTES + 1)

    after = await view(world, payment["payment_id"])
    assert ("completed", "exact", False) == (after["status"], after["coverage"], after["late"])
    assert "120.500000" == after["received"]


async def test_paying_in_another_crypto_than_the_price_is_a_422(world):
    body = {
        "provider": "coinpay",
        "order_id": "ORDER-btc",
        "amount": PRICE,
        "currency": CURRENCY,
        "pay_currency": "BTC",
    }
    status, reply = await world.ledger.call("POST", "/v1/payments", json=body)
    assert (422, 422) == (status, reply["status"])
    assert reply["type"].endswith("/currency-not-supported"), reply
    # Refused before anything was recorded: the order id is still free.
    assert None is await world.ledger.store.find_claim("payment_order", "coinpay:ORDER-btc")


# --- withdrawals (payouts) -----------------------------------------------------------------------


async def fund(world: World, amount: str) -> None:
    """Completes a payment of `amount`, so the ledger holds funds at CoinPay for a payout.

    POST /v1/withdrawals needs available funds at the provider in that currency (API.md)."""
    payment = await create(world, f"FUND-{uuid.uuid4().hex[:12]}", amount=amount)
    await scenario(world, payment["provider_ref"], "full")
    assert "completed" == (await view(world, payment["payment_id"]))["status"]


async def withdraw(world: World, request_id: str, amount: str = "200.00") -> dict:
    await fund(world, "500")
    body = {
        "provider": "coinpay",
        "request_id": request_id,
        "amount": amount,
        "currency": CURRENCY,
        "address": "bank-acct-7731",
    }
    status, withdrawal = await world.ledger.call("POST", "/v1/withdrawals", json=body)
    assert 201 == status, withdrawal
    assert "submitted" == withdrawal["status"]
    assert withdrawal["provider_ref"].startswith("po_")
    assert {"amount": "200.000000", "currency": CURRENCY} == withdrawal["requested"]
    assert "200.000000" == withdrawal["reserved"]
    return withdrawal


async def payout_scenario(world: World, provider_ref: str, name: str) -> list[dict]:
    status, sent = await world.control(f"withdrawals/{provider_ref}/scenario", {"scenario": name})
    assert 200 == status, sent
    assert all(200 == d["status"] for d in sent["deliveries"]), sent
    return sent["deliveries"]


async def withdrawal_view(world: World, withdrawal_id: str) -> dict:
    status, withdrawal = await world.ledger.call("GET", f"/v1/withdrawals/{withdrawal_id}")
    assert 200 == status, withdrawal
    return withdrawal


async def test_a_completed_payout(world):
    withdrawal = await withdraw(world, "WD-done")
    assert 1 == len(await payout_scenario(world, withdrawal["provider_ref"], "completed"))

    after = await withdrawal_view(world, withdrawal["withdrawal_id"])
    assert ("completed", "200.000000", D0) == (after["status"], after["sent"], after["reserved"])
    assert "payout.completed" == after["provider_status"]
    assert ["verified"] == await delivery_outcomes(world, withdrawal["withdrawal_id"])


async def test_a_failed_payout_releases_the_reservation(world):
    withdrawal = await withdraw(world, "WD-fail")
    await payout_scenario(world, withdrawal["provider_ref"], "failed")

    after = await withdrawal_view(world, withdrawal["withdrawal_id"])
    assert ("failed", None, D0) == (after["status"], after["sent"], after["reserved"])
    assert "Bank account rejected the transfer" == after["failure_reason"]


@pytest.mark.parametrize("name", ["processing", "manual_review"])
async def test_processing_and_review_are_not_announced_so_the_payout_stays_submitted(world, name):
    """CoinPay documents no webhook and no payout query for these states: the sandbox changes the
    payout and sends nothing, and the ledger has nothing to learn them from."""
    withdrawal = await withdraw(world, f"WD-{name}")
    assert [] == await payout_scenario(world, withdrawal["provider_ref"], name)

    after = await withdrawal_view(world, withdrawal["withdrawal_id"])
    assert ("submitted", "200.000000") == (after["status"], after["reserved"])
    assert [] == await delivery_outcomes(world, withdrawal["withdrawal_id"])

    # The final word still lands from there.
    await payout_scenario(world, withdrawal["provider_ref"], "completed")
    assert "completed" == (await withdrawal_view(world, withdrawal["withdrawal_id"]))["status"]


async def test_a_duplicate_payout_delivery_and_a_failure_after_completion_change_nothing(world):
    withdrawal = await withdraw(world, "WD-dup")
    (sent,) = await payout_scenario(world, withdrawal["provider_ref"], "completed")
    done = await withdrawal_view(world, withdrawal["withdrawal_id"])

    status, reply = await world.deliver(sent["body"].encode(), signed(sent["body"]))
    assert (200, "duplicate") == (status, reply["outcome"])
    # A failure arriving after the completion is recorded, and refused by the state machine.
    await payout_scenario(world, withdrawal["provider_ref"], "failed")

    after = await withdrawal_view(world, withdrawal["withdrawal_id"])
    assert (done["status"], done["sent"], done["reserved"], done["failure_reason"]) == (
        after["status"],
        after["sent"],
        after["reserved"],
        after["failure_reason"],
    )
    # The copy was caught on receipt (a duplicate receipt of its own); the failure, received,
    # is kept in the withdrawal's stream as not applied.
    assert ["verified", "not_applied"] == await delivery_outcomes(
        world, withdrawal["withdrawal_id"]
    )
    (copy,) = await receipts_of(world, ReceiptKind.DUPLICATE)
    assert sent["body"] == copy["body"]


# --- bad deliveries over HTTP --------------------------------------------------------------------


async def test_a_hand_signed_delivery_is_accepted(world):
    """The baseline for the refusals below: the same construction, correctly signed, moves money."""
    payment = await create(world, "ORDER-baseline")
    body = completed_body(payment["provider_ref"])
    status, reply = await world.deliver(body.encode(), signed(body))
    assert (200, "received") == (status, reply["outcome"])
    after = await view(world, payment["payment_id"])
    assert ("completed", "exact", "120.500000") == (
        after["status"],
        after["coverage"],
        after["received"],
    )
    assert ["verified"] == await delivery_outcomes(world, payment["payment_id"])


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("tampered", "signature_mismatch"),
        ("wrong_secret", "signature_mismatch"),
        ("missing_header", "signature_missing"),
        ("upper_case_hex", "signature_mismatch"),
    ],
)
async def test_a_bad_signature_is_401_recorded_and_moves_no_money(world, case, reason):
    """CoinPay can be asked about a payment, so a forged delivery naming one is also kept in its
    stream as unverified evidence (API.md, Deliveries): its deposit shows unverified, never as
    received."""
    payment = await create(world, f"ORDER-sig-{case}")
    body = completed_body(payment["provider_ref"])
    claimed = "120.500000"
    headers = {
        # Signed for 120.5, delivered claiming 999 (below).
        "tampered": signed(body),
        "wrong_secret": signed(body, "whsec_someone_else"),
        "missing_header": {},
        # The document compares with ===: the hex must be exactly what Node's digest('hex') gives.
        "upper_case_hex": {"x-signature": signed(body)["x-signature"].upper()},
    }[case]
    if case == "tampered":
        body = completed_body(payment["provider_ref"], amount="999")
        claimed = "999.000000"
    types_before = await event_types(world, payment["payment_id"])

    status, reply = await world.deliver(body.encode(), headers)

    assert 401 == status
    assert 401 == reply["status"]
    (rejected,) = await receipts_of(world, ReceiptKind.REJECTED)
    assert (reason, body) == (rejected["reason"], rejected["body"])
    after = await view(world, payment["payment_id"])
    assert ("pending", "unpaid", D0, claimed) == (
        after["status"],
        after["coverage"],
        after["received"],
        after["unverified"],
    )
    assert [(claimed, False)] == [(d["amount"], d["verified"]) for d in after["deposits"]]
    types_after = await event_types(world, payment["payment_id"])
    assert types_before.count("Payment.DeliveryRecorded") + 1 == types_after.count(
        "Payment.DeliveryRecorded"
    )
    assert ["unverified"] == await delivery_outcomes(world, payment["payment_id"])

    # A refused copy takes nothing from the genuine delivery that follows it.
    genuine = completed_body(payment["provider_ref"])
    status, reply = await world.deliver(genuine.encode(), signed(genuine))
    assert (200, "received") == (status, reply["outcome"])
    assert "120.500000" == (await view(world, payment["payment_id"]))["received"]
    assert ["unverified", "verified"] == await delivery_outcomes(world, payment["payment_id"])


@pytest.mark.parametrize(
    ("case", "body", "reason"),
    [
        ("not_json", '{"event":"transaction.completed","data":{', "not_json"),
        ("not_an_object", "[1,2,3]", "wrong_shape"),
        ("data_not_an_object", '{"event":"transaction.completed","data":[]}', "wrong_shape"),
        (
            "no_event",
            '{"data":{"transactionId":"REF","amount":120.5,"currency":"USDC"}}',
            "wrong_shape",
        ),
        (
            "amount_not_a_number",
            (
                '{"event":"transaction.completed","data":'
                '{"transactionId":"REF","amount":"lots","currency":"USDC"}}'
            ),
            "wrong_shape",
        ),
    ],
)
async def test_a_body_not_of_coinpays_shape_is_400_recorded_raw_and_moves_no_money(
    world, case, body, reason
):
    payment = await create(world, f"ORDER-shape-{case}")
    body = body.replace("REF", payment["provider_ref"])
    types_before = await event_types(world, payment["payment_id"])

    # Signed correctly (or as well as anything can be for a body that is not JSON): the refusal
    # must be the shape, not the signature.
    status, reply = await world.deliver(body.encode(), signed(body))

    assert (400, 400) == (status, reply["status"])
    (invalid,) = await receipts_of(world, ReceiptKind.INVALID)
    assert (reason, body) == (invalid["reason"], invalid["body"])
    assert [] == await receipts_of(world, ReceiptKind.REJECTED)
    after = await view(world, payment["payment_id"])
    assert (D0, "unpaid") == (after["received"], after["coverage"])
    assert types_before == await event_types(world, payment["payment_id"])


async def test_an_oversized_body_is_413_and_nothing_is_recorded(world):
    payment = await create(world, "ORDER-big")
    padding = "x" * (1024 * 1024)
    body = (
        '{"event":"transaction.completed","data":{"transactionId":"'
        + payment["provider_ref"]
        + '","amount":120.5,"currency":"USDC","note":"'
        + padding
        + '"}}'
    )
    status, reply = await world.deliver(body.encode(), signed(body))
    assert (413, 413) == (status, reply["status"])
    for kind in ReceiptKind:
        assert [] == await receipts_of(world, kind)
    assert D0 == (await view(world, payment["payment_id"]))["received"]


@pytest.mark.parametrize("provider", ["nosuchprovider", "cryptofuse"])
async def test_an_unknown_or_unconfigured_provider_is_404(world, provider):
    body = completed_body(str(uuid.uuid4()))
    status, reply = await world.deliver(body.encode(), signed(body), f"/v1/webhooks/{provider}")
    assert (404, 404) == (status, reply["status"])


async def test_a_delivery_for_an_unknown_payment_is_200_unmatched_and_recorded_once(world):
    unknown = str(uuid.uuid4())
    body = completed_body(unknown)

    status, reply = await world.deliver(body.encode(), signed(body))
    assert (200, "received") == (status, reply["outcome"])
    status, reply = await world.deliver(body.encode(), signed(body))
    assert (200, "duplicate") == (status, reply["outcome"])

    (held,) = await unmatched_records(world)
    assert ([unknown], body) == (held["references"], held["body"])
    (copy,) = await receipts_of(world, ReceiptKind.DUPLICATE)
    assert body == copy["body"]
