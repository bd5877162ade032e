"""Payment Engine end to end: the ledger's HTTP app and the Payment Engine sandbox on loopback, on a
real PostgreSQL. The sandbox signs its webhooks (`X-Webhook-Signature: sha256=<hex>` over the raw
body) and posts them to the URL set in its "developer portal": the ledger's
`{public_url}/v1/webhooks/payment_engine`.

The ledger's clock and the sandbox's clock are one test clock (real time plus an offset the test
moves), so expiry by the ledger's own clock and funds seen after it can be staged.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import aiohttp
import pytest

from adapters.providers.http_client import dumps_exact
from adapters.sandbox import payment_engine as payment_engine_sandbox
from adapters.sandbox.payment_engine import SandboxConfig, create_sandbox_app
from ledger.codec import decode_document
from ledger.deliveries import ReceiptKind
from tests.e2e.harness import free_port, ledger_with, serve
from tests.e2e.records import receipts, unmatched

PROVIDER = "payment_engine"
WEBHOOK_PATH = f"/v1/webhooks/{PROVIDER}"
USERNAME = "pe-e2e-user"
PASSWORD = "pe-e2e-password"
WEBHOOK_SECRET = "pe-e2e-webhook-secret"
MERCHANT = "merchant"  # the adapter's and the sandbox's default merchant account
DESTINATION = "acct_payout_e2e"
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


def _datetime_following(clock: Clock) -> type[datetime]:
    """A `datetime` whose `now` is the test clock, for the sandbox module's event timestamps."""

    class FollowingDatetime(datetime):
        @classmethod
        def now(cls, tz=None):
            return clock().astimezone(tz)

    return FollowingDatetime


@pytest.fixture
async def ledger(store, monkeypatch):
    clock = Clock()
    monkeypatch.setattr(payment_engine_sandbox, "datetime", _datetime_following(clock))
    config = SandboxConfig(username=USERNAME, password=PASSWORD, webhook_secret=WEBHOOK_SECRET)
    async with serve(create_sandbox_app(config)) as sandbox_url:
        tables = {
            PROVIDER: {
                "base_url": sandbox_url,
                "username": USERNAME,
                "password": PASSWORD,
                "webhook_secret": WEBHOOK_SECRET,
            }
        }
        async with ledger_with(store, tables, free_port(), clock=clock) as ledger:
            ledger.sandbox_url = sandbox_url
            ledger.clock = clock
            # The merchant sets the webhook URL once, in the provider's portal.
            await sandbox(ledger, "/_sandbox/portal", {"webhook_url": ledger.url + WEBHOOK_PATH})
            yield ledger


# ---------------------------------------------------------------- helpers


async def create(ledger, order_id: str, amount: str = "100.00", **extra: Any) -> dict:
    body = {
        "provider": PROVIDER,
        "order_id": order_id,
        "amount": amount,
        "currency": "USD",
        "expires_in_minutes": 30,
        **extra,
    }
    status, view = await ledger.call("POST", "/v1/payments", json=body)
    assert 201 == status, view
    assert {"amount": amount, "currency": "USD"} == view["price"] == view["expected"]
    assert view["provider_ref"].startswith("txn_")
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
    """A stream's documents, once the applier has applied every delivery received so far."""
    await ledger.applied()
    return [decode_document(e.payload) for e in await ledger.store.read_stream(stream_id)]


async def receipts_of(ledger, kind: ReceiptKind) -> list[dict]:
    """Payment Engine's deliveries recorded on receipt as `kind`, each in a stream of its own."""
    return await receipts(ledger.store, kind, PROVIDER)


async def unmatched_records(ledger) -> list[dict]:
    """Payment Engine's deliveries held unmatched, once the applier has applied them."""
    await ledger.applied()
    return await unmatched(ledger.store, PROVIDER)


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


def signature(body: bytes, secret: str = WEBHOOK_SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signed(body: bytes, secret: str = WEBHOOK_SECRET) -> dict[str, str]:
    return {"X-Webhook-Signature": signature(body, secret)}


def completed_body(
    transaction_id: str, reference: str, amount: str = "100.00", event_id: str = "evt_e2e_1"
) -> bytes:
    """A `transaction.completed` event into the merchant account, as the sandbox sends them."""
    return dumps_exact(
        {
            "eventId": event_id,
            "eventType": "transaction.completed",
            "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            "data": {
                "transactionId": transaction_id,
                "transactionReference": reference,
                "externalReference": reference,
                "toAccountId": MERCHANT,
                "paymentTypeId": "crypto_deposit",
                "amount": Decimal(amount),
                "currencyCode": "USD",
                "status": "COMPLETED",
            },
        }
    ).encode()


async def fund(ledger, order_id: str, amount: str) -> dict:
    """Completes a payment of `amount` USD: the ledger (and the sandbox's merchant account) then
    hold that much at Payment Engine."""
    payment = await create(ledger, order_id, amount)
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
            "currency": "USD",
            "address": DESTINATION,
        },
    )
    assert 201 == status, view
    return view


async def withdrawal_of(ledger, withdrawal_id: str) -> dict:
    status, view = await ledger.call("GET", f"/v1/withdrawals/{withdrawal_id}")
    assert 200 == status, view
    return view


# ---------------------------------------------------------------- scenarios


@pytest.mark.parametrize(
    ("name", "status", "coverage", "late", "received", "outstanding", "overpaid", "deposits"),
    [
        ("full", "completed", "exact", False, "100.00", "0.00", "0.00", ["100.00"]),
        # The payment's transaction completes with less than was asked.
        ("partial", "pending", "partial", False, "50.00", "50.00", "0.00", ["50.00"]),
        ("over", "completed", "over", False, "150.00", "0.00", "50.00", ["150.00"]),
        # transaction.failed with failureReason EXPIRED is the provider's expiry word.
        ("expire_no_funds", "expired", "unpaid", False, "0.00", "100.00", "0.00", []),
        ("expire_with_funds", "expired", "partial", False, "50.00", "50.00", "0.00", ["50.00"]),
        # Expired first, then a further transfer for the order: kept, counted, late.
        ("late", "expired", "exact", True, "100.00", "0.00", "0.00", ["100.00"]),
        ("fail", "failed", "unpaid", False, "0.00", "100.00", "0.00", []),
        (
            "multiple_deposits",
            "completed",
            "exact",
            False,
            "100.00",
            "0.00",
            "0.00",
            ["33.33", "33.33", "33.34"],
        ),
        ("duplicate", "completed", "exact", False, "100.00", "0.00", "0.00", ["100.00"]),
        (
            "out_of_order",
            "completed",
            "exact",
            False,
            "100.00",
            "0.00",
            "0.00",
            ["33.33", "33.33", "33.34"],
        ),
    ],
)
async def test_scenario_ends_in_the_right_state(
    ledger, name, status, coverage, late, received, outstanding, overpaid, deposits
):
    payment = await create(ledger, f"ORDER_{name}")
    sent = await scenario(ledger, payment["provider_ref"], name)
    view = await view_of(ledger, payment["payment_id"])
    assert (status, coverage, late) == (view["status"], view["coverage"], view["late"])
    assert (received, "0.00", outstanding, overpaid, "0.00") == (
        view["received"],
        view["pending"],
        view["outstanding"],
        view["overpaid"],
        view["unverified"],
    )
    assert deposits == sorted(d["amount"] for d in view["deposits"])
    assert all(d["confirmed"] and d["verified"] for d in view["deposits"])
    assert [late] * len(deposits) == [d["late"] for d in view["deposits"]]
    # Every delivery is kept: in the payment's own stream once received, or as a duplicate
    # receipt when it is a copy of one received before.
    copies = await receipts_of(ledger, ReceiptKind.DUPLICATE)
    assert len(sent) == len(await deliveries_recorded(ledger, payment["payment_id"])) + len(copies)
    assert len(sent) == len(await receipts_of(ledger, ReceiptKind.RECEIVED)) + len(copies)


async def test_several_deposits_leave_the_same_payment_in_either_order(ledger):
    in_order = await create(ledger, "ORDER_in_order")
    reversed_order = await create(ledger, "ORDER_reversed")
    await scenario(ledger, in_order["provider_ref"], "multiple_deposits")
    await scenario(ledger, reversed_order["provider_ref"], "out_of_order")
    first = await view_of(ledger, in_order["payment_id"])
    second = await view_of(ledger, reversed_order["payment_id"])

    def comparable(view: dict) -> dict:
        # Deposits are the payment's own transaction and its further transfers -d2 and -d3.
        deposits = sorted(
            (d["deposit_id"].removeprefix(view["provider_ref"]), d["amount"])
            for d in view["deposits"]
        )
        return {**money(view), "deposits": deposits, "provider_status": view["provider_status"]}

    assert [("", "33.33"), ("-d2", "33.33"), ("-d3", "33.34")] == comparable(first)["deposits"]
    assert comparable(first) == comparable(second)
    assert "COMPLETED" == first["provider_status"]


async def test_a_duplicate_delivery_is_acknowledged_and_changes_nothing(ledger):
    payment = await create(ledger, "ORDER_dup")
    sent = await scenario(ledger, payment["provider_ref"], "duplicate")
    outcomes = [d["outcome"] for d in await deliveries_recorded(ledger, payment["payment_id"])]
    # The sandbox sent the same event (same eventId) twice: the second is caught on receipt as a
    # duplicate, recorded as a receipt of its own and not in the payment's stream.
    assert ["verified"] == outcomes
    (copy,) = await receipts_of(ledger, ReceiptKind.DUPLICATE)
    assert sent[1]["body"] == copy["body"]
    before = await view_of(ledger, payment["payment_id"])
    raw = sent[0]["body"].encode()
    status, reply = await post_webhook(ledger, raw, signed(raw))  # and once more, by hand
    assert (200, "duplicate") == (status, reply["outcome"])
    after = await view_of(ledger, payment["payment_id"])
    assert money(before) == money(after)
    assert 1 == len(await deliveries_recorded(ledger, payment["payment_id"]))
    assert 2 == len(await receipts_of(ledger, ReceiptKind.DUPLICATE))
    assert ("completed", "exact", "100.00") == (
        after["status"],
        after["coverage"],
        after["received"],
    )


async def test_a_redelivery_under_the_same_event_id_is_a_duplicate_even_if_reserialized(ledger):
    payment = await create(ledger, "ORDER_dup_reserialized")
    (delivery,) = await scenario(ledger, payment["provider_ref"], "full")
    reformatted = dumps_exact(decode_document(delivery["body"].encode())).encode()
    reformatted = reformatted.replace(b'"data":', b'"data" :')
    assert reformatted != delivery["body"].encode()
    status, reply = await post_webhook(ledger, reformatted, signed(reformatted))
    assert (200, "duplicate") == (status, reply["outcome"])
    assert "100.00" == (await view_of(ledger, payment["payment_id"]))["received"]


# ---------------------------------------------------------------- the ledger's own clock


async def test_the_ledger_expires_a_payment_by_its_own_clock(ledger):
    payment = await create(ledger, "ORDER_clock")
    ledger.clock.advance(timedelta(minutes=29))
    assert "pending" == (await view_of(ledger, payment["payment_id"]))["status"]
    ledger.clock.advance(timedelta(minutes=2))
    view = await view_of(ledger, payment["payment_id"])
    # Payment Engine has no expiry of its own and said nothing: the ledger's clock expired it.
    assert ("expired", "unpaid", False, "PENDING") == (
        view["status"],
        view["coverage"],
        view["late"],
        view["provider_status"],
    )
    assert ("0.00", "100.00") == (view["received"], view["outstanding"])
    assert "Payment.Expired" in await event_types(ledger, payment["payment_id"])


async def test_partial_funds_then_expiry_by_the_clock_is_expired_with_funds(ledger):
    payment = await create(ledger, "ORDER_clock_partial")
    await scenario(ledger, payment["provider_ref"], "partial")
    assert "pending" == (await view_of(ledger, payment["payment_id"]))["status"]
    ledger.clock.advance(timedelta(minutes=31))
    view = await view_of(ledger, payment["payment_id"])
    assert ("expired", "partial", False) == (view["status"], view["coverage"], view["late"])
    assert ("50.00", "50.00") == (view["received"], view["outstanding"])


async def test_funds_after_the_clocks_expiry_are_kept_and_late(ledger):
    payment = await create(ledger, "ORDER_clock_late")
    ledger.clock.advance(timedelta(minutes=31))
    assert "expired" == (await view_of(ledger, payment["payment_id"]))["status"]
    await scenario(ledger, payment["provider_ref"], "full")
    view = await view_of(ledger, payment["payment_id"])
    assert ("expired", "exact", True) == (view["status"], view["coverage"], view["late"])
    assert ("100.00", "0.00", "0.00") == (view["received"], view["outstanding"], view["overpaid"])
    assert [True] == [d["late"] for d in view["deposits"]]


# ---------------------------------------------------------------- withdrawals


@pytest.mark.parametrize(
    ("name", "status", "provider_status", "sent", "reserved"),
    [
        ("processing", "processing", "PROCESSING", None, "40.00"),
        ("completed", "completed", "COMPLETED", "40.00", "0.00"),
        ("failed", "failed", "FAILED", None, "0.00"),
        # Payment Engine has no review state: the sandbox reports PROCESSING, the nearest.
        ("manual_review", "processing", "PROCESSING", None, "40.00"),
    ],
)
async def test_withdrawal_scenario_ends_in_the_right_state(
    ledger, name, status, provider_status, sent, reserved
):
    await fund(ledger, f"FUND_{name}", "100.00")
    created = await request_withdrawal(ledger, f"WD_{name}", "40.00")
    assert ("submitted", "PENDING") == (created["status"], created["provider_status"])
    assert {"amount": "40.00", "currency": "USD"} == created["requested"]
    assert ("0.00", "40.00") == (created["fee"], created["reserved"])
    answer = await withdrawal_scenario(ledger, created["provider_ref"], name)
    assert [200] == [d["status"] for d in answer["deliveries"]], answer
    view = await withdrawal_of(ledger, created["withdrawal_id"])
    assert (status, provider_status, sent, reserved) == (
        view["status"],
        view["provider_status"],
        view["sent"],
        view["reserved"],
    )
    if status == "failed":
        assert "INVALID_ACCOUNT_STATUS" == view["failure_reason"]


async def test_a_withdrawal_beyond_the_funds_held_is_422_and_never_reaches_the_provider(ledger):
    await fund(ledger, "FUND_small", "30.00")
    status, problem = await ledger.call(
        "POST",
        "/v1/withdrawals",
        json={
            "provider": PROVIDER,
            "request_id": "WD_too_much",
            "amount": "30.01",
            "currency": "USD",
            "address": DESTINATION,
        },
    )
    assert 422 == status, problem
    assert problem["type"].endswith("insufficient-funds")
    # Only the funding payment was ever sent to the provider.
    assert 1 == (await provider_requests(ledger)).count(("POST", "/api/v1/transactions"))
    assert "submitted" == (await request_withdrawal(ledger, "WD_all", "30.00"))["status"]


async def test_a_redelivered_withdrawal_webhook_changes_nothing(ledger):
    await fund(ledger, "FUND_dup", "100.00")
    created = await request_withdrawal(ledger, "WD_dup", "40.00")
    answer = await withdrawal_scenario(ledger, created["provider_ref"], "completed")
    before = await withdrawal_of(ledger, created["withdrawal_id"])
    raw = answer["deliveries"][0]["body"].encode()
    status, reply = await post_webhook(ledger, raw, signed(raw))
    assert (200, "duplicate") == (status, reply["outcome"])
    after = await withdrawal_of(ledger, created["withdrawal_id"])
    assert {k: v for k, v in before.items() if k not in {"version", "updated_at"}} == {
        k: v for k, v in after.items() if k not in {"version", "updated_at"}
    }
    assert ("completed", "40.00") == (after["status"], after["sent"])


# ---------------------------------------------------------------- provider-reported balances


async def test_a_balance_webhook_is_recorded_as_a_provider_reported_balance(ledger):
    stream = f"provider-balances-{PROVIDER}"
    answer = await sandbox(
        ledger,
        "/_sandbox/balances",
        {
            "balances": [
                {"accountId": MERCHANT, "currencyCode": "USD", "availableBalance": "1234.56"}
            ]
        },
    )
    (delivery,) = answer["deliveries"]
    assert 200 == delivery["status"]
    (report,) = await records(ledger, stream)
    assert (MERCHANT, "USD", "1234.56", True) == (
        report["account"],
        report["currency"],
        report["available"],
        report["verified"],
    )
    # Delivered again: acknowledged, recorded once.
    raw = delivery["body"].encode()
    status, reply = await post_webhook(ledger, raw, signed(raw))
    assert (200, "duplicate") == (status, reply["outcome"])
    assert 1 == len(await records(ledger, stream))
    # A forged balance (signed with another secret) is refused and never becomes a report.
    forged = raw.replace(b"1234.56", b"9999999.00")
    status, _ = await post_webhook(ledger, forged, signed(forged, "not-the-secret"))
    assert 401 == status
    assert 1 == len(await records(ledger, stream))
    assert 1 == len(await receipts_of(ledger, ReceiptKind.REJECTED))


# ---------------------------------------------------------------- bad input over HTTP


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("tampered", "signature_mismatch"),
        ("wrong_secret", "signature_mismatch"),
        ("missing", "signature_missing"),
        ("no_prefix", "signature_malformed"),
    ],
)
async def test_a_delivery_without_a_valid_signature_is_401_recorded_and_moves_no_money(
    ledger, case, reason
):
    """Payment Engine can be asked about a payment, so a delivery naming one is also kept in its
    stream as unverified evidence (API.md, Deliveries): what it claims shows as unverified, never
    as received."""
    payment = await create(ledger, f"ORDER_sig_{case}")
    body = completed_body(payment["provider_ref"], payment["order_id"])
    headers = {
        # A valid signature, but over another body than the one sent.
        "tampered": signed(body.replace(b"100.00", b"900.00")),
        "wrong_secret": signed(body, "not-the-webhook-secret"),
        "missing": {},
        "no_prefix": {"X-Webhook-Signature": signature(body).removeprefix("sha256=")},
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
    assert ("0.00", "100.00") == (after["received"], after["unverified"])
    assert [("100.00", False)] == [(d["amount"], d["verified"]) for d in after["deposits"]]
    recorded = await deliveries_recorded(ledger, payment["payment_id"])
    assert len(recorded_before) + 1 == len(recorded)
    assert "unverified" == recorded[-1]["outcome"]


async def test_the_same_body_correctly_signed_does_move_money(ledger):
    """The counterpart of the 401 cases: proves their body would have been accepted."""
    payment = await create(ledger, "ORDER_sig_ok")
    body = completed_body(payment["provider_ref"], payment["order_id"])
    status, reply = await post_webhook(ledger, body, signed(body))
    assert (200, "received") == (status, reply["outcome"])
    view = await view_of(ledger, payment["payment_id"])
    assert ("completed", "exact", "100.00") == (view["status"], view["coverage"], view["received"])
    recorded = await deliveries_recorded(ledger, payment["payment_id"])
    assert ["verified"] == [d["outcome"] for d in recorded]


@pytest.mark.parametrize(
    ("case", "body", "reason"),
    [
        ("not_json", b'{"eventId": "evt_1", "eventType": ', "not_json"),
        ("array", b'[{"eventType": "transaction.completed"}]', "wrong_shape"),
        ("no_event_type", b'{"eventId": "evt_2", "data": {}}', "wrong_shape"),
        ("no_data", b'{"eventId": "evt_3", "eventType": "transaction.completed"}', "wrong_shape"),
        (
            "amount_not_a_number",
            (
                b'{"eventId": "evt_4", "eventType": "transaction.completed", "data":'
                b' {"transactionId": "txn_x", "amount": "lots", "currencyCode": "USD"}}'
            ),
            "wrong_shape",
        ),
    ],
)
async def test_a_signed_body_that_is_not_a_payment_engine_event_is_400_and_recorded_raw(
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
    base = completed_body(payment["provider_ref"], payment["order_id"])
    body = base[:-1] + b', "padding": "' + b"x" * ONE_MIB + b'"}'
    status, _ = await post_webhook(ledger, body, signed(body))
    assert 413 == status
    view = await view_of(ledger, payment["payment_id"])
    assert ("pending", "0.00", []) == (view["status"], view["received"], view["deposits"])
    assert [] == await deliveries_recorded(ledger, payment["payment_id"])


async def test_a_delivery_for_an_unknown_payment_is_200_unmatched_and_recorded(ledger):
    body = completed_body("txn_nobody_knows", "ORDER_nobody_knows")
    status, reply = await post_webhook(ledger, body, signed(body))
    assert (200, "received") == (status, reply["outcome"])
    (record,) = await unmatched_records(ledger)
    assert ("payment", body.decode()) == (record["subject_type"], record["body"])
    status, reply = await post_webhook(ledger, body, signed(body))
    assert (200, "duplicate") == (status, reply["outcome"])
    assert 1 == len(await unmatched_records(ledger))
    (copy,) = await receipts_of(ledger, ReceiptKind.DUPLICATE)
    assert body.decode() == copy["body"]


async def test_an_event_type_the_document_does_not_name_is_recorded_and_moves_nothing(ledger):
    payment = await create(ledger, "ORDER_unknown_event")
    body = completed_body(payment["provider_ref"], payment["order_id"]).replace(
        b"transaction.completed", b"transaction.refunded"
    )
    status, reply = await post_webhook(ledger, body, signed(body))
    assert (200, "received") == (status, reply["outcome"])
    # Its receipt is all that is kept of it: no fact to apply, to its payment or as unmatched.
    (record,) = await receipts_of(ledger, ReceiptKind.RECEIVED)
    assert ("transaction.refunded", body.decode()) == (record["event_type"], record["body"])
    assert "0.00" == (await view_of(ledger, payment["payment_id"]))["received"]
    assert [] == await deliveries_recorded(ledger, payment["payment_id"])
    assert [] == await unmatched_records(ledger)


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


@pytest.mark.parametrize(
    ("keep_refresh_tokens", "renewal"),
    [
        (True, [("login_refresh", 200)]),
        # The refresh token is gone too: refreshing fails, so the client logs in again.
        (False, [("login_refresh", 401), ("login", 200)]),
    ],
)
async def test_an_expired_token_is_renewed_and_every_attempt_recorded(
    ledger, keep_refresh_tokens, renewal
):
    await create(ledger, "ORDER_token_1")
    await sandbox(ledger, "/_sandbox/expire_tokens", {"keep_refresh_tokens": keep_refresh_tokens})
    payment = await create(ledger, "ORDER_token_2")
    assert [("create_payment", 401), *renewal, ("create_payment", 201)] == await exchanges(
        ledger, payment["payment_id"]
    )


async def test_a_transient_provider_error_on_create_is_retried(ledger):
    await sandbox(ledger, "/_sandbox/faults", {"operation": "create_payment", "statuses": [503]})
    payment = await create(ledger, "ORDER_retried")
    calls = await exchanges(ledger, payment["payment_id"])
    assert [("create_payment", 503), ("create_payment", 201)] == [
        c for c in calls if c[0] == "create_payment"
    ]


async def test_the_api_key_alternative_works_end_to_end(store):
    config = SandboxConfig(api_key="pe-e2e-api-key", webhook_secret=WEBHOOK_SECRET)
    async with serve(create_sandbox_app(config)) as sandbox_url:
        tables = {
            PROVIDER: {
                "base_url": sandbox_url,
                "api_key": "pe-e2e-api-key",
                "webhook_secret": WEBHOOK_SECRET,
            }
        }
        async with ledger_with(store, tables, free_port()) as ledger:
            ledger.sandbox_url = sandbox_url
            await sandbox(ledger, "/_sandbox/portal", {"webhook_url": ledger.url + WEBHOOK_PATH})
            payment = await create(ledger, "ORDER_api_key")
            await scenario(ledger, payment["provider_ref"], "full")
            view = await view_of(ledger, payment["payment_id"])
            assert ("completed", "exact", "100.00") == (
                view["status"],
                view["coverage"],
                view["received"],
            )
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"{sandbox_url}/_sandbox/requests") as reply,
            ):
                requests = (await reply.json())["requests"]
            # No login at all: every provider call carried the key.
            assert [("POST", "/api/v1/transactions", "api_key")] == [
                (r["method"], r["path"], r["auth"]) for r in requests
            ]


async def test_polled_balances_are_recorded_like_the_balance_webhook(ledger):
    await fund(ledger, "FUND_poll", "100.00")  # the sandbox credits the merchant account
    assert 1 == await ledger.poll_balances(PROVIDER)
    (report,) = await records(ledger, f"provider-balances-{PROVIDER}")
    assert (MERCHANT, "USD", "100.00", True) == (
        report["account"],
        report["currency"],
        report["available"],
        report["verified"],
    )
