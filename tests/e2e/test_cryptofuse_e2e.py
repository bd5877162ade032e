"""Cryptofuse end to end: the ledger's HTTP app and the Cryptofuse sandbox on loopback, on a real
PostgreSQL. Webhooks are signed by the sandbox (raw-body HMAC-SHA256) and go through the ledger's
public webhook URL; payments and withdrawals are created through the internal API.

The ledger's clock and the sandbox's clock are one test clock (real time plus an offset the test
moves), so expiry by the ledger's own clock and funds seen after it can be staged.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from adapters.providers.cryptofuse.webhooks import sign
from adapters.sandbox import cryptofuse as cryptofuse_sandbox
from adapters.sandbox.cryptofuse import SandboxConfig, create_sandbox_app
from ledger.codec import decode_document
from ledger.deliveries import ReceiptKind
from tests.e2e.harness import free_port, ledger_with, serve
from tests.e2e.records import receipts, unmatched

PROVIDER = "cryptofuse"
WEBHOOK_PATH = f"/v1/webhooks/{PROVIDER}"
CONFIG = SandboxConfig(
    client_id="cf-e2e-client",
    client_secret="cf-e2e-client-secret",
    webhook_secret="cf-e2e-webhook-secret",
    # "confirming" immediately: the testnet webhooks overtake the create answer, so the ledger
    # must match deliveries that arrive while their payment is being created.
    testnet_start_delay_seconds=0.0,
    delayed_success_seconds=1.0,  # long enough to see the payment still waiting first
)
PAY_CURRENCY = "USDTTRC20"  # 6 places in the ledger; the sandbox prices it 1:1 in USD
ADDRESS = "TXYZabc1234567890withdrawal"
ONE_MIB = 1024 * 1024

# The fields of a payment view that say where its money stands.
MONEY_FIELDS = (
    "status",
    "coverage",
    "late",
    "received",
    "pending",
    "outstanding",
    "overpaid",
    "unverified",
    "deposits",
)


class Clock:
    """Real time plus an offset: the ledger and the sandbox both read it."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, delta: timedelta) -> None:
        self.offset += delta


@pytest.fixture
async def ledger(store, monkeypatch):
    clock = Clock()
    # The sandbox stamps expiry times, deposits and webhooks with `_now`; it follows the clock.
    monkeypatch.setattr(cryptofuse_sandbox, "_now", lambda: clock().replace(microsecond=0))
    async with serve(create_sandbox_app(CONFIG)) as sandbox_url:
        tables = {
            PROVIDER: {
                "base_url": sandbox_url,
                "client_id": CONFIG.client_id,
                "client_secret": CONFIG.client_secret,
                "webhook_secret": CONFIG.webhook_secret,
            }
        }
        async with ledger_with(store, tables, free_port(), clock=clock) as ledger:
            ledger.sandbox_url = sandbox_url
            ledger.clock = clock
            yield ledger


# ---------------------------------------------------------------- helpers


async def create(ledger, order_id: str, amount: str = "100.00", **extra: Any) -> dict:
    body = {
        "provider": PROVIDER,
        "order_id": order_id,
        "amount": amount,
        "currency": "USD",
        "pay_currency": PAY_CURRENCY,
        **extra,
    }
    status, view = await ledger.call("POST", "/v1/payments", json=body)
    assert 201 == status, view
    assert {"amount": amount, "currency": "USD"} == view["price"]
    return view


async def sandbox(ledger, path: str, body: dict | None = None) -> dict:
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{ledger.sandbox_url}{path}", json=body or {}) as reply,
    ):
        assert 200 == reply.status, await reply.text()
        return await reply.json()


async def scenario(ledger, provider_ref: str, name: str) -> list[dict]:
    """Runs a payment scenario; every delivery must have been accepted (200) by the ledger."""
    sent = await sandbox(ledger, f"/_sandbox/payments/{provider_ref}/scenario", {"scenario": name})
    deliveries = sent["deliveries"]
    assert deliveries
    assert [200] * len(deliveries) == [d["status"] for d in deliveries], deliveries
    return deliveries


async def withdrawal_scenario(ledger, provider_ref: str, name: str) -> dict:
    return await sandbox(
        ledger, f"/_sandbox/withdrawals/{provider_ref}/scenario", {"scenario": name}
    )


async def view_of(ledger, payment_id: str) -> dict:
    status, view = await ledger.call("GET", f"/v1/payments/{payment_id}")
    assert 200 == status, view
    return view


def money(view: dict) -> dict:
    return {name: view[name] for name in MONEY_FIELDS}


async def event_types(ledger, payment_id: str) -> list[str]:
    status, events = await ledger.call("GET", f"/v1/payments/{payment_id}/events")
    assert 200 == status, events
    return [e["type"] for e in events["items"]]


async def deliveries_recorded(ledger, stream_id: str) -> list[dict]:
    """The delivery documents recorded in a payment's or withdrawal's stream, oldest first (once
    the applier has applied every delivery received so far)."""
    await ledger.applied()
    return [
        decode_document(e.payload)["delivery"]
        for e in await ledger.store.read_stream(stream_id)
        if e.type.endswith(".DeliveryRecorded")
    ]


async def records(ledger, stream_id: str) -> list[dict]:
    return [decode_document(e.payload) for e in await ledger.store.read_stream(stream_id)]


async def receipts_of(ledger, kind: ReceiptKind) -> list[dict]:
    """Cryptofuse's deliveries recorded on receipt as `kind`, each in a stream of its own."""
    return await receipts(ledger.store, kind, PROVIDER)


async def unmatched_records(ledger) -> list[dict]:
    """Cryptofuse's deliveries held unmatched, once the applier has applied them."""
    await ledger.applied()
    return await unmatched(ledger.store, PROVIDER)


async def wait_for_deliveries(ledger, payment_id: str, count: int) -> None:
    """The testnet amounts send their webhooks by themselves: waits until `count` arrived."""
    deadline = asyncio.get_running_loop().time() + 10
    while len(await deliveries_recorded(ledger, payment_id)) < count:
        assert asyncio.get_running_loop().time() < deadline, "testnet webhooks did not arrive"
        await asyncio.sleep(0.05)


async def reconciliation(ledger, reason: str) -> list[dict]:
    status, page = await ledger.call(
        "GET", "/v1/reconciliation/items", params={"provider": PROVIDER, "reason": reason}
    )
    assert 200 == status, page
    return page["items"]


async def provider_requests(ledger) -> list[tuple[str, str]]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{ledger.sandbox_url}/_sandbox/requests") as reply,
    ):
        return [(r["method"], r["path"]) for r in (await reply.json())["requests"]]


async def post_webhook(ledger, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    return await ledger.call(
        "POST",
        WEBHOOK_PATH,
        data=body,
        headers={"Content-Type": "application/json", **headers},
    )


def signed(body: bytes, secret: str = CONFIG.webhook_secret) -> dict[str, str]:
    return {"X-Webhook-Signature": sign(body, secret)}


def completed_body(transaction_id: str, amount: str = "100.00000000") -> bytes:
    """A "completed" webhook in the document's envelope, paying `amount` in one deposit."""
    return json.dumps(
        {
            "transaction_id": transaction_id,
            "event": "payment_status_update",
            "status": "completed",
            "timestamp": "2024-12-27T10:10:00Z",
            "data": {
                "transaction_id": transaction_id,
                "status": "completed",
                "amount_crypto": amount,
                "currency": PAY_CURRENCY,
                "payment_type": "full",
                "payment_history": [
                    {
                        "deposit_id": "dep_e2e_1",
                        "amount": amount,
                        "transaction_hash": "0xabc123",
                        "confirmations": 20,
                        "timestamp": "2024-12-27T10:05:00Z",
                    }
                ],
                "total_paid_amount": amount,
            },
        }
    ).encode()


async def fund(ledger, order_id: str, usd: str) -> dict:
    """Completes a payment of `usd` (1:1 in USDTTRC20), so the ledger holds funds at Cryptofuse."""
    payment = await create(ledger, order_id, usd)
    await scenario(ledger, payment["provider_ref"], "full")
    view = await view_of(ledger, payment["payment_id"])
    assert ("completed", "exact") == (view["status"], view["coverage"])
    return view


async def request_withdrawal(ledger, request_id: str, amount: str) -> dict:
    status, view = await ledger.call(
        "POST",
        "/v1/withdrawals",
        json={
            "provider": PROVIDER,
            "request_id": request_id,
            "amount": amount,
            "currency": PAY_CURRENCY,
            "address": ADDRESS,
        },
    )
    assert 201 == status, view
    return view


async def withdrawal_of(ledger, withdrawal_id: str) -> dict:
    status, view = await ledger.call("GET", f"/v1/withdrawals/{withdrawal_id}")
    assert 200 == status, view
    return view


# ---------------------------------------------------------------- testnet amounts


@pytest.mark.parametrize(
    ("amount", "webhooks", "status", "coverage", "received", "outstanding", "overpaid", "word"),
    [
        # 123.45: instant success; "confirming" then "completed".
        ("123.45", 2, "completed", "exact", "123.450000", "0.000000", "0.000000", "completed"),
        # 345.67: partial payment (50%): never completed, half outstanding.
        (
            "345.67",
            2,
            "pending",
            "partial",
            "172.835000",
            "172.835000",
            "0.000000",
            "partially_paid",
        ),
        # 456.78: overpayment (150%): completed and over by half.
        ("456.78", 2, "completed", "over", "685.170000", "0.000000", "228.390000", "completed"),
        # 567.89: expired payment: nothing arrived.
        ("567.89", 1, "expired", "unpaid", "0.000000", "567.890000", "0.000000", "expired"),
        # 678.90: failed payment.
        ("678.90", 1, "failed", "unpaid", "0.000000", "678.900000", "0.000000", "failed"),
    ],
)
async def test_testnet_amounts_behave_as_documented(
    ledger, amount, webhooks, status, coverage, received, outstanding, overpaid, word
):
    payment = await create(ledger, f"TESTNET_{amount}", amount)
    assert {"amount": f"{amount}0000", "currency": PAY_CURRENCY} == payment["expected"]
    await wait_for_deliveries(ledger, payment["payment_id"], webhooks)
    view = await view_of(ledger, payment["payment_id"])
    assert (status, coverage, False) == (view["status"], view["coverage"], view["late"])
    assert (received, "0.000000", outstanding, overpaid) == (
        view["received"],
        view["pending"],
        view["outstanding"],
        view["overpaid"],
    )
    assert word == view["provider_status"]
    assert [received] * (received != "0.000000") == [d["amount"] for d in view["deposits"]]
    recorded = await deliveries_recorded(ledger, view["payment_id"])
    assert all(d["outcome"] == "verified" for d in recorded), [
        (d["outcome"], d.get("matched_later"), d.get("subject_check")) for d in recorded
    ]
    # None of them was left behind as unmatched (its funds would sit in suspense).
    await ledger.caught_up()
    assert [] == await reconciliation(ledger, "unmatched")


async def test_testnet_234_56_succeeds_only_after_a_while(ledger):
    payment = await create(ledger, "TESTNET_234.56", "234.56")
    waiting = await view_of(ledger, payment["payment_id"])
    assert ("pending", "unpaid", "0.000000") == (
        waiting["status"],
        waiting["coverage"],
        waiting["received"],
    )
    await wait_for_deliveries(ledger, payment["payment_id"], 2)
    view = await view_of(ledger, payment["payment_id"])
    assert ("completed", "exact", False) == (view["status"], view["coverage"], view["late"])
    assert ("234.560000", "0.000000", "0.000000") == (
        view["received"],
        view["outstanding"],
        view["overpaid"],
    )


# ---------------------------------------------------------------- scenarios


@pytest.mark.parametrize(
    ("name", "status", "coverage", "late", "received", "outstanding", "overpaid", "deposits"),
    [
        ("full", "completed", "exact", False, "100.000000", "0.000000", "0.000000", 1),
        ("partial", "pending", "partial", False, "50.000000", "50.000000", "0.000000", 1),
        ("over", "completed", "over", False, "150.000000", "0.000000", "50.000000", 1),
        ("expire_no_funds", "expired", "unpaid", False, "0.000000", "100.000000", "0.000000", 0),
        ("expire_with_funds", "expired", "partial", False, "50.000000", "50.000000", "0.000000", 1),
        # The provider said "expired", then funds came: kept, counted, the payment stays expired.
        ("late", "expired", "exact", True, "100.000000", "0.000000", "0.000000", 1),
        ("fail", "failed", "unpaid", False, "0.000000", "100.000000", "0.000000", 0),
        ("multiple_deposits", "completed", "exact", False, "100.000000", "0.000000", "0.000000", 3),
        ("duplicate", "completed", "exact", False, "100.000000", "0.000000", "0.000000", 1),
        ("out_of_order", "completed", "exact", False, "100.000000", "0.000000", "0.000000", 3),
    ],
)
async def test_scenario_ends_in_the_right_state(
    ledger, name, status, coverage, late, received, outstanding, overpaid, deposits
):
    payment = await create(ledger, f"ORDER_{name}")
    assert {"amount": "100.000000", "currency": PAY_CURRENCY} == payment["expected"]
    sent = await scenario(ledger, payment["provider_ref"], name)
    view = await view_of(ledger, payment["payment_id"])
    assert (status, coverage, late) == (view["status"], view["coverage"], view["late"])
    assert (received, "0.000000", outstanding, overpaid, "0.000000") == (
        view["received"],
        view["pending"],
        view["outstanding"],
        view["overpaid"],
        view["unverified"],
    )
    assert deposits == len(view["deposits"])
    assert all(d["confirmed"] and d["verified"] for d in view["deposits"])
    assert [late] * deposits == [d["late"] for d in view["deposits"]]
    # Every delivery is kept: in the payment's own stream once received, or as a duplicate
    # receipt when it is a copy of one received before.
    copies = await receipts_of(ledger, ReceiptKind.DUPLICATE)
    assert len(sent) == len(await deliveries_recorded(ledger, payment["payment_id"])) + len(copies)
    assert len(sent) == len(await receipts_of(ledger, ReceiptKind.RECEIVED)) + len(copies)


async def test_a_payment_in_another_crypto_completes(ledger):
    payment = await create(ledger, "ORDER_erc20", pay_currency="USDTERC20")
    assert {"amount": "100.000000", "currency": "USDTERC20"} == payment["expected"]
    await scenario(ledger, payment["provider_ref"], "full")
    view = await view_of(ledger, payment["payment_id"])
    assert ("completed", "exact", "100.000000", "0.000000") == (
        view["status"],
        view["coverage"],
        view["received"],
        view["pending"],
    )


async def test_several_deposits_add_up_exactly_in_either_order(ledger):
    in_order = await create(ledger, "ORDER_in_order")
    reversed_order = await create(ledger, "ORDER_reversed")
    await scenario(ledger, in_order["provider_ref"], "multiple_deposits")
    await scenario(ledger, reversed_order["provider_ref"], "out_of_order")
    first = await view_of(ledger, in_order["payment_id"])
    second = await view_of(ledger, reversed_order["payment_id"])
    # 40%, 30% and the rest, each counted once.
    amounts = ["40.000000", "30.000000", "30.000000"]
    assert amounts == sorted((d["amount"] for d in first["deposits"]), reverse=True)
    assert amounts == sorted((d["amount"] for d in second["deposits"]), reverse=True)
    strip = ("deposits",)
    assert {k: v for k, v in money(first).items() if k not in strip} == {
        k: v for k, v in money(second).items() if k not in strip
    }
    # The provider's final word wins whichever order the deliveries came in.
    assert "completed" == first["provider_status"] == second["provider_status"]


async def test_several_deposits_raise_no_duplicate_deposit_item(ledger):
    payment = await create(ledger, "ORDER_no_dup_item")
    await scenario(ledger, payment["provider_ref"], "multiple_deposits")
    await ledger.caught_up()
    assert [] == await reconciliation(ledger, "duplicate_deposit")


async def test_a_duplicate_delivery_is_acknowledged_and_changes_nothing(ledger):
    payment = await create(ledger, "ORDER_dup")
    sent = await scenario(ledger, payment["provider_ref"], "duplicate")
    outcomes = [d["outcome"] for d in await deliveries_recorded(ledger, payment["payment_id"])]
    # The sandbox sent the final webhook twice: the second is caught on receipt and recorded
    # as a duplicate receipt of its own, not in the payment's stream.
    assert ["verified", "verified"] == outcomes
    (copy,) = await receipts_of(ledger, ReceiptKind.DUPLICATE)
    assert sent[-1]["body"] == copy["body"]
    before = await view_of(ledger, payment["payment_id"])
    for delivery in sent:  # and every one of them once more, byte for byte
        raw = delivery["body"].encode()
        status, reply = await post_webhook(ledger, raw, signed(raw))
        assert (200, "duplicate") == (status, reply["outcome"])
    after = await view_of(ledger, payment["payment_id"])
    assert money(before) == money(after)
    assert 2 == len(await deliveries_recorded(ledger, payment["payment_id"]))
    assert 1 + len(sent) == len(await receipts_of(ledger, ReceiptKind.DUPLICATE))
    assert ("completed", "exact", "100.000000") == (
        after["status"],
        after["coverage"],
        after["received"],
    )


# ---------------------------------------------------------------- the ledger's own clock


async def test_the_ledger_expires_a_payment_by_its_own_clock(ledger):
    payment = await create(ledger, "ORDER_clock", expires_in_minutes=30)
    ledger.clock.advance(timedelta(minutes=29))
    assert "pending" == (await view_of(ledger, payment["payment_id"]))["status"]
    ledger.clock.advance(timedelta(minutes=2))
    view = await view_of(ledger, payment["payment_id"])
    # The provider has said nothing since "waiting": the ledger's clock alone expired it.
    assert ("expired", "unpaid", False, "waiting") == (
        view["status"],
        view["coverage"],
        view["late"],
        view["provider_status"],
    )
    assert ("0.000000", "100.000000") == (view["received"], view["outstanding"])
    assert "Payment.Expired" in await event_types(ledger, payment["payment_id"])


async def test_partial_funds_then_expiry_by_the_clock_is_expired_with_funds(ledger):
    payment = await create(ledger, "ORDER_clock_partial", expires_in_minutes=30)
    await scenario(ledger, payment["provider_ref"], "partial")
    ledger.clock.advance(timedelta(minutes=31))
    view = await view_of(ledger, payment["payment_id"])
    assert ("expired", "partial", False) == (view["status"], view["coverage"], view["late"])
    assert ("50.000000", "50.000000") == (view["received"], view["outstanding"])


async def test_funds_after_the_clocks_expiry_are_kept_and_late(ledger):
    payment = await create(ledger, "ORDER_clock_late", expires_in_minutes=30)
    ledger.clock.advance(timedelta(minutes=31))
    assert "expired" == (await view_of(ledger, payment["payment_id"]))["status"]
    # The customer pays in full after the deadline; the provider never said "expired".
    await scenario(ledger, payment["provider_ref"], "full")
    view = await view_of(ledger, payment["payment_id"])
    assert ("expired", "exact", True) == (view["status"], view["coverage"], view["late"])
    assert ("100.000000", "0.000000", "0.000000") == (
        view["received"],
        view["outstanding"],
        view["overpaid"],
    )
    assert [True] == [d["late"] for d in view["deposits"]]


# ---------------------------------------------------------------- withdrawals


@pytest.mark.parametrize(
    ("name", "status", "provider_status", "sent", "reserved"),
    [
        ("processing", "processing", "processing", None, "100.000000"),
        ("completed", "completed", "completed", "98.500000", "0.000000"),
        ("failed", "failed", "failed", None, "0.000000"),
        # Cryptofuse documents no review state: a held withdrawal shows "processing".
        ("manual_review", "processing", "processing", None, "100.000000"),
    ],
)
async def test_withdrawal_scenario_ends_in_the_right_state(
    ledger, name, status, provider_status, sent, reserved
):
    await fund(ledger, f"FUND_{name}", "200.00")
    created = await request_withdrawal(ledger, f"WD_{name}", "100")
    assert ("submitted", "pending") == (created["status"], created["provider_status"])
    assert {"amount": "100.000000", "currency": PAY_CURRENCY} == created["requested"]
    # 1% platform fee plus 0.50 network fee, withheld from what is sent.
    assert ("1.500000", "100.000000") == (created["fee"], created["reserved"])
    answer = await withdrawal_scenario(ledger, created["provider_ref"], name)
    assert all(200 == d["status"] for d in answer["deliveries"]), answer
    view = await withdrawal_of(ledger, created["withdrawal_id"])
    assert (status, provider_status, sent, reserved) == (
        view["status"],
        view["provider_status"],
        view["sent"],
        view["reserved"],
    )
    if status == "completed":
        assert view["tx_hash"].startswith("0x")
    if status == "failed":
        assert view["failure_reason"]


async def test_a_withdrawal_beyond_the_funds_held_is_422_and_never_reaches_the_provider(ledger):
    await fund(ledger, "FUND_small", "50.00")
    status, problem = await ledger.call(
        "POST",
        "/v1/withdrawals",
        json={
            "provider": PROVIDER,
            "request_id": "WD_too_much",
            "amount": "50.000001",
            "currency": PAY_CURRENCY,
            "address": ADDRESS,
        },
    )
    assert 422 == status, problem
    assert problem["type"].endswith("insufficient-funds")
    assert ("POST", "/withdrawal/") not in await provider_requests(ledger)
    # Exactly what is held can go.
    assert "submitted" == (await request_withdrawal(ledger, "WD_all", "50"))["status"]


async def test_a_redelivered_withdrawal_webhook_changes_nothing(ledger):
    await fund(ledger, "FUND_dup", "200.00")
    created = await request_withdrawal(ledger, "WD_dup", "100")
    answer = await withdrawal_scenario(ledger, created["provider_ref"], "completed")
    before = await withdrawal_of(ledger, created["withdrawal_id"])
    for delivery in answer["deliveries"]:
        raw = delivery["body"].encode()
        status, reply = await post_webhook(ledger, raw, signed(raw))
        assert (200, "duplicate") == (status, reply["outcome"])
    after = await withdrawal_of(ledger, created["withdrawal_id"])
    assert {k: v for k, v in before.items() if k not in {"version", "updated_at"}} == {
        k: v for k, v in after.items() if k not in {"version", "updated_at"}
    }
    assert ("completed", "98.500000") == (after["status"], after["sent"])


# ---------------------------------------------------------------- bad input over HTTP


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("tampered", "signature_mismatch"),
        ("wrong_secret", "signature_mismatch"),
        ("missing", "signature_missing"),
    ],
)
async def test_a_delivery_without_a_valid_signature_is_401_recorded_and_moves_no_money(
    ledger, case, reason
):
    """Cryptofuse can be asked about a payment, so a delivery naming one is also kept in its stream
    as unverified evidence (API.md, Deliveries): what it claims shows as unverified, never as
    received."""
    payment = await create(ledger, f"ORDER_sig_{case}")
    body = completed_body(payment["provider_ref"])
    headers = {
        # A valid signature, but over another body than the one sent.
        "tampered": signed(body.replace(b"100.00000000", b"900.00000000")),
        "wrong_secret": signed(body, "not-the-webhook-secret"),
        "missing": {},
    }[case]
    before = await view_of(ledger, payment["payment_id"])
    recorded_before = await deliveries_recorded(ledger, payment["payment_id"])
    status, reply = await post_webhook(ledger, body, headers)
    assert 401 == status, reply
    assert 401 == reply["status"]
    (attempt,) = await receipts_of(ledger, ReceiptKind.REJECTED)
    assert (reason, body.decode()) == (attempt["reason"], attempt["body"])
    after = await view_of(ledger, payment["payment_id"])
    moved = ("status", "coverage", "late", "received", "pending", "outstanding", "overpaid")
    assert [before[k] for k in moved] == [after[k] for k in moved]
    assert ("0.000000", "100.000000") == (after["received"], after["unverified"])
    assert [("100.000000", False)] == [(d["amount"], d["verified"]) for d in after["deposits"]]
    recorded = await deliveries_recorded(ledger, payment["payment_id"])
    assert len(recorded_before) + 1 == len(recorded)
    assert "unverified" == recorded[-1]["outcome"]


async def test_the_same_body_correctly_signed_does_move_money(ledger):
    """The counterpart of the 401 cases: proves their body would have been accepted."""
    payment = await create(ledger, "ORDER_sig_ok")
    body = completed_body(payment["provider_ref"])
    status, reply = await post_webhook(ledger, body, signed(body))
    assert (200, "received") == (status, reply["outcome"])
    view = await view_of(ledger, payment["payment_id"])
    assert ("completed", "exact", "100.000000") == (
        view["status"],
        view["coverage"],
        view["received"],
    )
    recorded = await deliveries_recorded(ledger, payment["payment_id"])
    assert ["verified"] == [d["outcome"] for d in recorded]


@pytest.mark.parametrize(
    ("case", "body", "reason"),
    [
        ("not_json", b'{"transaction_id": "x", "status": ', "not_json"),
        ("array", b'[{"status": "completed"}]', "wrong_shape"),
        ("no_status", b'{"event": "payment_status_update", "data": {}}', "wrong_shape"),
        (
            "history_not_a_list",
            (
                b'{"event": "payment_status_update", "status": "completed",'
                b' "data": {"payment_history": "100.00"}}'
            ),
            "wrong_shape",
        ),
    ],
)
async def test_a_signed_body_that_is_not_a_cryptofuse_webhook_is_400_and_recorded_raw(
    ledger, case, body, reason
):
    payment = await create(ledger, f"ORDER_bad_{case}")
    before = await view_of(ledger, payment["payment_id"])
    status, reply = await post_webhook(ledger, body, signed(body))
    assert 400 == status, reply
    (attempt,) = await receipts_of(ledger, ReceiptKind.INVALID)
    assert (reason, body.decode()) == (attempt["reason"], attempt["body"])
    assert money(before) == money(await view_of(ledger, payment["payment_id"]))


async def test_an_unsigned_malformed_body_is_401_because_the_signature_is_checked_first(ledger):
    status, _ = await post_webhook(ledger, b"{not json", {})
    assert 401 == status
    assert [] == await receipts_of(ledger, ReceiptKind.INVALID)
    (attempt,) = await receipts_of(ledger, ReceiptKind.REJECTED)
    assert "signature_missing" == attempt["reason"]


async def test_an_oversized_body_is_413_and_moves_no_money(ledger):
    payment = await create(ledger, "ORDER_big")
    base = completed_body(payment["provider_ref"])
    body = base[:-1] + b', "padding": "' + b"x" * ONE_MIB + b'"}'
    status, _ = await post_webhook(ledger, body, signed(body))
    assert 413 == status
    view = await view_of(ledger, payment["payment_id"])
    assert ("pending", "0.000000", []) == (view["status"], view["received"], view["deposits"])
    assert [] == await deliveries_recorded(ledger, payment["payment_id"])


async def test_a_delivery_for_an_unknown_payment_is_200_unmatched_and_recorded(ledger):
    body = completed_body("00000000-0000-4000-8000-00000000dead")
    status, reply = await post_webhook(ledger, body, signed(body))
    assert (200, "received") == (status, reply["outcome"])
    (record,) = await unmatched_records(ledger)
    assert ("payment", body.decode()) == (record["subject_type"], record["body"])
    # Delivered again: acknowledged, held unmatched once (the copy is a duplicate receipt).
    status, reply = await post_webhook(ledger, body, signed(body))
    assert (200, "duplicate") == (status, reply["outcome"])
    assert 1 == len(await unmatched_records(ledger))
    (copy,) = await receipts_of(ledger, ReceiptKind.DUPLICATE)
    assert body.decode() == copy["body"]


async def test_a_webhook_for_an_unconfigured_provider_is_404(ledger):
    body = completed_body("whatever")
    status, _ = await ledger.call("POST", "/v1/webhooks/coinpay", data=body, headers=signed(body))
    assert 404 == status


# ---------------------------------------------------------------- outbound calls


async def exchanges(ledger, stream_id: str) -> list[tuple[str, int | None]]:
    """(operation, status) of every outbound attempt recorded in a subject's stream."""
    return [
        (document["exchange"]["operation"], document["exchange"]["status"])
        for document in [
            decode_document(e.payload)
            for e in await ledger.store.read_stream(stream_id)
            if e.type.endswith(".ProviderExchangeRecorded")
        ]
    ]


async def test_a_revoked_token_is_fetched_again_and_every_attempt_recorded(ledger):
    await create(ledger, "ORDER_token_1")
    await sandbox(ledger, "/_sandbox/expire_tokens")
    payment = await create(ledger, "ORDER_token_2")
    assert [
        ("create_payment", 401),
        ("login", 200),
        ("create_payment", 201),
    ] == await exchanges(ledger, payment["payment_id"])
    assert 2 == (await provider_requests(ledger)).count(("POST", "/o/token/"))


async def test_a_transient_provider_error_on_create_is_retried(ledger):
    await sandbox(ledger, "/_sandbox/faults", {"operation": "create_payment", "statuses": [503]})
    payment = await create(ledger, "ORDER_retried")
    calls = await exchanges(ledger, payment["payment_id"])
    assert [("create_payment", 503), ("create_payment", 201)] == [
        c for c in calls if c[0] == "create_payment"
    ]


async def test_a_withdrawal_whose_answer_is_lost_is_not_sent_twice(ledger):
    await fund(ledger, "FUND_lost_answer", "200.00")
    await sandbox(ledger, "/_sandbox/faults", {"operation": "create_withdrawal", "statuses": [503]})
    status, reply = await ledger.call(
        "POST",
        "/v1/withdrawals",
        json={
            "provider": PROVIDER,
            "request_id": "WD_lost_answer",
            "amount": "100",
            "currency": PAY_CURRENCY,
            "address": ADDRESS,
        },
    )
    assert 502 == status, reply
    # Repeating a payout whose outcome is unknown could pay twice: one attempt only.
    assert 1 == (await provider_requests(ledger)).count(("POST", "/withdrawal/"))


# ---------------------------------------------------------------- provider-reported balances


async def test_polled_balances_are_recorded_as_provider_reported(ledger):
    """Cryptofuse sends no balance webhook: `GET /user/balances/` is how it reports them."""
    await sandbox(
        ledger,
        "/_sandbox/balances",
        {"balances": {PAY_CURRENCY: {"amount": "250.5", "pending_amount": "0"}}},
    )
    await fund(ledger, "FUND_poll", "100.00")  # credited to the merchant's balance on completion
    assert 1 == await ledger.poll_balances(PROVIDER)
    (report,) = await records(ledger, f"provider-balances-{PROVIDER}")
    assert (PAY_CURRENCY, "350.50000000", "0.00000000", True) == (
        report["currency"],
        report["available"],
        report["pending"],
        report["verified"],
    )
