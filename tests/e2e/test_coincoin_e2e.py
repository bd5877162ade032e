"""CoinCoin end to end: the ledger's HTTP app and the CoinCoin sandbox on loopback, real PostgreSQL.

CoinCoin signs no webhook and takes its callback URL once, in its portal; the ledger's URL there
carries the provider table's `webhook_token`, and a delivery without it is recorded as unverified
(200, no money moved), never refused. Each delivery carries the running total `collected` and a
state code whose numbering the document contradicts, so money is read from the totals; -1
(Invalid) is the only provider word with an effect (expiry). CoinCoin has no withdrawals and no
failure word: the sandbox's `fail` is Invalid with a deposit below the network fee.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from adapters.http.keys import ADAPTERS
from adapters.providers.contract import CreatePaymentRequest
from adapters.sandbox.coincoin import SandboxConfig, create_sandbox_app
from ledger.deliveries import ReceiptKind
from tests.e2e.harness import Ledger, free_port, ledger_with, serve
from tests.e2e.records import receipts, unmatched

APP_ID = "cc-app-e2e"
SECRET_KEY = "cc-secret-e2e-77"
WEBHOOK_TOKEN = "cc-portal-token-e2e-3f9a1c"
CURRENCY = "USDT"
PRICE = "120.50"  # shares: 0.3 -> 36.15, 0.5 -> 60.25, 0.6 -> 72.3, 1.5 -> 180.75
EXPIRY_MINUTES = 60  # CoinCoin counts whole hours
D0 = "0.000000"


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

    def webhook_url(self, token: str | None = WEBHOOK_TOKEN) -> str:
        base = f"{self.ledger.url}/v1/webhooks/coincoin"
        return f"{base}/{token}" if token else base

    async def control(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        async with self.ledger.http.post(f"{self.sandbox_url}/_sandbox/{path}", json=body) as reply:
            return reply.status, await reply.json(content_type=None)

    async def set_portal_url(self, url: str) -> None:
        status, _ = await self.control("webhook_url", {"webhook_url": url})
        assert 200 == status

    async def deliver(self, raw: bytes, url: str | None = None) -> tuple[int, Any]:
        """A POST as CoinCoin makes it: no bearer token, no signature, just the body."""
        headers = {"Content-Type": "application/json"}
        async with self.ledger.http.post(
            url or self.webhook_url(), data=raw, headers=headers
        ) as reply:
            text = await reply.text()
            try:
                return reply.status, json.loads(text)
            except ValueError:
                return reply.status, text


@pytest.fixture
async def world(store):
    clock = Clock()
    async with serve(create_sandbox_app(SandboxConfig(APP_ID, SECRET_KEY))) as sandbox_url:
        tables = {
            "coincoin": {
                # The document's "API path" carries its version.
                "base_url": f"{sandbox_url}/v1",
                "app_id": APP_ID,
                "secret_key": SECRET_KEY,
                "webhook_token": WEBHOOK_TOKEN,
            }
        }
        async with ledger_with(store, tables, free_port(), clock=clock) as ledger:
            world = World(ledger, sandbox_url, clock)
            # CoinCoin's portal: the merchant enters the ledger's tokened URL once.
            await world.set_portal_url(world.webhook_url())
            yield world


# --- helpers -------------------------------------------------------------------------------------


async def create(world: World, order_id: str, expires_in_minutes: int | None = None) -> dict:
    body: dict[str, Any] = {
        "provider": "coincoin",
        "order_id": order_id,
        "amount": PRICE,
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


async def deliveries(world: World, payment_id: str) -> list[dict]:
    """Each delivery recorded in the payment's own stream, as the ledger stored it (once the
    applier has applied every delivery received so far)."""
    await world.ledger.applied()
    return [
        json.loads(e.payload)["delivery"]
        for e in await world.ledger.store.read_stream(payment_id)
        if e.type == "Payment.DeliveryRecorded"
    ]


async def receipts_of(world: World, kind: ReceiptKind) -> list[dict]:
    """CoinCoin's deliveries recorded on receipt as `kind`, each in a stream of its own."""
    return await receipts(world.ledger.store, kind, "coincoin")


async def unmatched_records(world: World) -> list[dict]:
    """CoinCoin's deliveries held unmatched, once the applier has applied them."""
    await world.ledger.applied()
    return await unmatched(world.ledger.store, "coincoin")


def money(payment: dict) -> dict:
    keys = ("status", "coverage", "late", "received", "pending", "outstanding", "overpaid")
    return {key: payment[key] for key in keys} | {
        "unverified": payment["unverified"],
        "deposits": [(d["amount"], d["verified"], d["late"]) for d in payment["deposits"]],
    }


def body_for(
    payment: dict, collected: str = "120.5", state: int = 2, address: str | None = None
) -> str:
    """A delivery shaped as the document's example, written by hand (not by the sandbox)."""
    return (
        '{"payment":{"address":"' + (address or payment["address"]) + '",'
        '"payment_id":"' + payment["provider_ref"] + '","network":"tron","coin":"usdt",'
        '"amount":120.5},"collected":{"usdt":' + collected + '},"state":' + str(state) + "}"
    )


async def known_payment(world: World, order_id: str) -> dict:
    """A created payment, with the address CoinCoin issued for it (the sandbox's order view)."""
    payment = await create(world, order_id)
    async with world.ledger.http.get(
        f"{world.sandbox_url}/_sandbox/payments/{payment['provider_ref']}"
    ) as reply:
        assert 200 == reply.status
        order = await reply.json()
    return payment | {"address": order["address"]}


# --- payments ------------------------------------------------------------------------------------

EXPECTED = "120.500000"


@pytest.mark.parametrize(
    ("name", "status", "coverage", "late", "received", "outstanding", "overpaid", "deposits"),
    [
        # In Settlement, then Completed, both with the full total.
        ("full", "completed", "exact", False, EXPECTED, D0, D0, [EXPECTED]),
        # Receiving, then the document's own example: state 1 with half collected.
        ("partial", "pending", "partial", False, "60.250000", "60.250000", D0, ["60.250000"]),
        ("over", "completed", "over", False, "180.750000", D0, "60.250000", ["180.750000"]),
        # Running totals 36.15, 72.3, 120.5: three deposits.
        (
            "multiple_deposits",
            "completed",
            "exact",
            False,
            EXPECTED,
            D0,
            D0,
            ["36.150000", "36.150000", "48.200000"],
        ),
        # The same totals highest first: the lower ones add nothing.
        ("out_of_order", "completed", "exact", False, EXPECTED, D0, D0, [EXPECTED]),
        ("duplicate", "completed", "exact", False, EXPECTED, D0, D0, [EXPECTED]),
        # Invalid (-1) with nothing collected: the provider's expiry word.
        ("expire_no_funds", "expired", "unpaid", False, D0, EXPECTED, D0, []),
        # Invalid, then the customer pays anyway: kept, late.
        ("late", "expired", "exact", True, EXPECTED, D0, D0, [EXPECTED]),
        # No failure word exists: Invalid with dust below the network fee. The dust is kept.
        ("fail", "expired", "partial", False, "0.500000", "120.000000", D0, ["0.500000"]),
    ],
)
async def test_a_scenario_ends_in_the_right_state_and_amounts(
    world, name, status, coverage, late, received, outstanding, overpaid, deposits
):
    payment = await create(world, f"ORDER_{name}")
    assert {"amount": EXPECTED, "currency": CURRENCY} == payment["expected"]
    assert ("pending", "unpaid", "state=0") == (
        payment["status"],
        payment["coverage"],
        payment["provider_status"],
    )

    sent = await scenario(world, payment["provider_ref"], name)

    after = await view(world, payment["payment_id"])
    assert (status, coverage, late) == (after["status"], after["coverage"], after["late"])
    assert (received, outstanding, overpaid) == (
        after["received"],
        after["outstanding"],
        after["overpaid"],
    )
    assert (D0, D0) == (after["pending"], after["unverified"])
    assert deposits == [d["amount"] for d in after["deposits"]]
    assert all(d["verified"] for d in after["deposits"])
    # Each delivery recorded once: received (and then kept in the payment's stream), or a copy
    # of one received before, caught on receipt as a duplicate.
    received = await receipts_of(world, ReceiptKind.RECEIVED)
    copies = await receipts_of(world, ReceiptKind.DUPLICATE)
    assert len(sent) == len(received) + len(copies)
    assert len(received) == len(await deliveries(world, payment["payment_id"]))


async def test_a_duplicate_delivery_is_acknowledged_recorded_and_changes_nothing(world):
    payment = await create(world, "ORDER_dup")
    sent = await scenario(world, payment["provider_ref"], "duplicate")
    assert sent[0]["body"] == sent[1]["body"]
    # The copy is caught on receipt: recorded as a duplicate receipt, not in the payment's stream.
    (recorded,) = await deliveries(world, payment["payment_id"])
    assert "verified" == recorded["outcome"]
    (copy,) = await receipts_of(world, ReceiptKind.DUPLICATE)
    assert (sent[1]["body"], recorded["dedupe_key"]) == (copy["body"], copy["dedupe_key"])
    types = await event_types(world, payment["payment_id"])
    assert 1 == types.count("Payment.DepositDetected")
    before = await view(world, payment["payment_id"])

    status, reply = await world.deliver(sent[0]["body"].encode())
    assert (200, "duplicate") == (status, reply["outcome"])

    assert money(before) == money(await view(world, payment["payment_id"]))
    assert types == await event_types(world, payment["payment_id"])
    assert 2 == len(await receipts_of(world, ReceiptKind.DUPLICATE))


async def test_the_ledgers_clock_expires_a_payment_coincoin_says_nothing_about(world):
    payment = await create(world, "ORDER_clock_empty", expires_in_minutes=EXPIRY_MINUTES)
    assert payment["expires_at"] is not None
    world.clock.advance(minutes=EXPIRY_MINUTES + 1)

    after = await view(world, payment["payment_id"])
    assert ("expired", "unpaid", False, D0) == (
        after["status"],
        after["coverage"],
        after["late"],
        after["received"],
    )


async def test_expiry_with_part_paid_keeps_the_funds(world):
    """CoinCoin's "In Settlement" for an overdue order with funds decides nothing by itself: the
    payment expires when the ledger's clock passes the order's expiry."""
    payment = await create(world, "ORDER_exp_half", expires_in_minutes=EXPIRY_MINUTES)
    await scenario(world, payment["provider_ref"], "expire_with_funds")
    before = await view(world, payment["payment_id"])
    assert ("pending", "partial", "60.250000") == (
        before["status"],
        before["coverage"],
        before["received"],
    )

    world.clock.advance(minutes=EXPIRY_MINUTES + 1)

    after = await view(world, payment["payment_id"])
    assert ("expired", "partial", False) == (after["status"], after["coverage"], after["late"])
    assert ("60.250000", "60.250000") == (after["received"], after["outstanding"])


async def test_funds_after_the_ledgers_own_expiry_are_kept_and_late(world):
    payment = await create(world, "ORDER_clock_late", expires_in_minutes=EXPIRY_MINUTES)
    world.clock.advance(minutes=EXPIRY_MINUTES + 1)
    await scenario(world, payment["provider_ref"], "full")

    after = await view(world, payment["payment_id"])
    assert ("expired", "exact", True) == (after["status"], after["coverage"], after["late"])
    assert (EXPECTED, D0) == (after["received"], after["outstanding"])
    assert [(EXPECTED, True)] == [(d["amount"], d["late"]) for d in after["deposits"]]


async def test_the_coincoin_sandbox_has_no_withdrawals(world):
    status, sent = await world.control("withdrawals/anything/scenario", {"scenario": "completed"})
    assert 404 == status, sent


WITHDRAWAL = {
    "provider": "coincoin",
    "request_id": "WD_none",
    "amount": "50",
    "currency": CURRENCY,
    "address": "TXYZ",
}


async def funds_at_coincoin(world: World) -> dict:
    await world.ledger.caught_up()
    status, balances = await world.ledger.call(
        "GET", f"/v1/balances?account=provider:coincoin:funds&currency={CURRENCY}"
    )
    assert 200 == status, balances
    (funds,) = balances["items"]
    return funds


async def test_a_withdrawal_at_coincoin_is_refused_and_reserves_nothing(world):
    # Funds held at CoinCoin first, so that the refusal cannot be an insufficient-funds one.
    funding = await create(world, "FUND_coincoin_wd")
    await scenario(world, funding["provider_ref"], "full")
    assert "completed" == (await view(world, funding["payment_id"]))["status"]
    status, reply = await world.ledger.call("POST", "/v1/withdrawals", json=WITHDRAWAL)
    assert 422 == status, reply
    assert 422 == reply["status"]
    assert reply["type"].endswith("/operation-not-supported"), reply
    # Refused before anything was recorded: no withdrawal, nothing reserved.
    assert None is await world.ledger.store.find_claim("withdrawal_request", "coincoin:WD_none")
    funds = await funds_at_coincoin(world)
    assert [Decimal(EXPECTED)] * 2 == [Decimal(funds["posted"]), Decimal(funds["available"])]


async def test_a_withdrawal_the_client_refuses_only_when_asked_is_cancelled_and_released(
    world, monkeypatch
):
    """Where the client does not say beforehand that it has no such call, the withdrawal is
    recorded (and its funds reserved) first; the refusal then cancels it, releasing the funds."""
    client = world.ledger.app[ADAPTERS]["coincoin"].client
    monkeypatch.setattr(client, "unsupported_operations", frozenset())
    funding = await create(world, "FUND_coincoin_wd2")
    await scenario(world, funding["provider_ref"], "full")
    status, reply = await world.ledger.call("POST", "/v1/withdrawals", json=WITHDRAWAL)
    assert (422, 422) == (status, reply["status"]), reply
    assert reply["type"].endswith("/operation-not-supported"), reply
    claim = await world.ledger.store.find_claim("withdrawal_request", "coincoin:WD_none")
    assert claim is not None
    status, left = await world.ledger.call("GET", f"/v1/withdrawals/{claim.stream_id}")
    assert (200, "cancelled", D0) == (status, left["status"], left["reserved"]), left
    assert "CoinCoin documents no withdrawal endpoint" in left["failure_reason"]
    funds = await funds_at_coincoin(world)
    assert [Decimal(EXPECTED)] * 2 == [Decimal(funds["posted"]), Decimal(funds["available"])]


# --- the callback token --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "reason"), [(None, "token_missing"), ("guess", "token_mismatch")]
)
async def test_a_delivery_without_the_portal_token_is_recorded_unverified_and_moves_no_money(
    world, token, reason
):
    payment = await create(world, f"ORDER_tok_{reason}")
    # The portal URL lacks the token (or has another): every delivery arrives unauthenticated.
    await world.set_portal_url(world.webhook_url(token))
    await scenario(world, payment["provider_ref"], "full")

    after = await view(world, payment["payment_id"])
    assert ("pending", "unpaid", D0, EXPECTED) == (
        after["status"],
        after["coverage"],
        after["received"],
        after["unverified"],
    )
    assert [(EXPECTED, False)] == [(d["amount"], d["verified"]) for d in after["deposits"]]
    recorded = await deliveries(world, payment["payment_id"])
    assert [("unverified", reason)] * 2 == [(d["outcome"], d["subject_check"]) for d in recorded]
    assert [] == await receipts_of(world, ReceiptKind.REJECTED)


async def test_the_genuine_delivery_counts_after_an_unauthenticated_copy_of_it(world):
    """Anyone can POST a body to the untokened URL. If such a copy arrives first, CoinCoin's own
    (tokened) delivery of the same body must still move the money, not be taken as its duplicate."""
    payment = await create(world, "ORDER_copy_first")
    await world.set_portal_url(world.webhook_url(None))
    await scenario(world, payment["provider_ref"], "full")
    assert D0 == (await view(world, payment["payment_id"]))["received"]

    await world.set_portal_url(world.webhook_url())
    await scenario(world, payment["provider_ref"], "full")

    after = await view(world, payment["payment_id"])
    assert ("completed", "exact", EXPECTED) == (
        after["status"],
        after["coverage"],
        after["received"],
    )
    outcomes = [d["outcome"] for d in await deliveries(world, payment["payment_id"])]
    assert ["unverified", "unverified", "verified", "verified"] == outcomes


async def test_a_tokened_delivery_naming_another_address_moves_no_money(world):
    payment = await known_payment(world, "ORDER_address")
    body = body_for(payment, address="TWrongAddressWrongAddressWrongAddr")

    status, reply = await world.deliver(body.encode())

    assert (200, "received") == (status, reply["outcome"])
    after = await view(world, payment["payment_id"])
    assert (D0, EXPECTED, "unpaid") == (after["received"], after["unverified"], after["coverage"])
    (recorded,) = await deliveries(world, payment["payment_id"])
    assert ("unverified", "address_mismatch", body) == (
        recorded["outcome"],
        recorded["subject_check"],
        recorded["body"],
    )


async def test_a_hand_written_tokened_delivery_is_accepted(world):
    """The baseline for the refusals: the same construction, to the tokened URL, moves money."""
    payment = await known_payment(world, "ORDER_baseline")
    status, reply = await world.deliver(body_for(payment).encode())
    assert (200, "received") == (status, reply["outcome"])
    after = await view(world, payment["payment_id"])
    assert ("completed", "exact", EXPECTED) == (
        after["status"],
        after["coverage"],
        after["received"],
    )
    (recorded,) = await deliveries(world, payment["payment_id"])
    assert ("verified", "") == (recorded["outcome"], recorded["subject_check"])


# --- bad deliveries over HTTP --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("not_json", "not_json"),
        ("not_an_object", "wrong_shape"),
        ("payment_not_an_object", "wrong_shape"),
        ("collected_as_text", "wrong_shape"),
        ("no_state", "wrong_shape"),
        ("no_payment_id", "wrong_shape"),
    ],
)
@pytest.mark.parametrize("token", [WEBHOOK_TOKEN, None])
async def test_a_body_not_of_coincoins_shape_is_400_recorded_raw_and_moves_no_money(
    world, case, reason, token
):
    payment = await known_payment(world, f"ORDER_shape_{case}")
    good = body_for(payment)
    body = {
        "not_json": good[:-7],
        "not_an_object": "[" + good + "]",
        "payment_not_an_object": '{"payment":"x","collected":{"usdt":120.5},"state":2}',
        "collected_as_text": good.replace('"usdt":120.5', '"usdt":"120.5"'),
        "no_state": good.replace(',"state":2', ""),
        "no_payment_id": good.replace('"payment_id":"' + payment["provider_ref"] + '",', ""),
    }[case]
    assert body != good
    types_before = await event_types(world, payment["payment_id"])

    status, reply = await world.deliver(body.encode(), world.webhook_url(token))

    assert (400, 400) == (status, reply["status"])
    (invalid,) = await receipts_of(world, ReceiptKind.INVALID)
    assert (reason, body) == (invalid["reason"], invalid["body"])
    after = await view(world, payment["payment_id"])
    assert (D0, D0, "unpaid") == (after["received"], after["unverified"], after["coverage"])
    assert types_before == await event_types(world, payment["payment_id"])


async def test_an_oversized_body_is_413_and_nothing_is_recorded(world):
    payment = await known_payment(world, "ORDER_big")
    body = body_for(payment)[:-1] + ',"note":"' + "x" * (1024 * 1024) + '"}'
    types_before = await event_types(world, payment["payment_id"])
    status, reply = await world.deliver(body.encode())
    assert (413, 413) == (status, reply["status"])
    for kind in ReceiptKind:
        assert [] == await receipts_of(world, kind)
    assert [] == await unmatched_records(world)
    assert types_before == await event_types(world, payment["payment_id"])
    assert D0 == (await view(world, payment["payment_id"]))["received"]


@pytest.mark.parametrize("provider", ["nosuchprovider", "coinpay"])
async def test_an_unknown_or_unconfigured_provider_is_404(world, provider):
    payment = await known_payment(world, f"ORDER_404_{provider}")
    url = f"{world.ledger.url}/v1/webhooks/{provider}/{WEBHOOK_TOKEN}"
    status, reply = await world.deliver(body_for(payment).encode(), url)
    assert (404, 404) == (status, reply["status"])
    assert D0 == (await view(world, payment["payment_id"]))["received"]


async def test_a_delivery_for_an_unknown_payment_is_200_unmatched_and_recorded_once(world):
    stranger = {"provider_ref": "NOT_OUR_ORDER_01", "address": "TStrangerAddress"}
    body = body_for(stranger)

    status, reply = await world.deliver(body.encode())
    assert (200, "received") == (status, reply["outcome"])
    status, reply = await world.deliver(body.encode())
    assert (200, "duplicate") == (status, reply["outcome"])

    (held,) = await unmatched_records(world)
    assert (["NOT_OUR_ORDER_01"], body) == (held["references"], held["body"])
    (copy,) = await receipts_of(world, ReceiptKind.DUPLICATE)
    assert body == copy["body"]


async def test_an_unmatched_delivery_is_applied_when_its_payment_appears(world):
    """CoinCoin's payment_id is our order id: a delivery that overtakes the create response is
    kept unmatched and applied once the payment exists."""
    order_id = f"ORDER_early_{uuid.uuid4().hex[:8]}"
    early = {"provider_ref": order_id, "address": "TEarlyAddress"}
    status, reply = await world.deliver(body_for(early).encode())
    assert (200, "received") == (status, reply["outcome"])
    (held,) = await unmatched_records(world)
    assert [order_id] == held["references"]

    payment = await create(world, order_id)

    # The address the early delivery named is not the one CoinCoin issued, so it moved nothing
    # (address_mismatch): matching later goes through the same checks as arriving on time.
    after = await view(world, payment["payment_id"])
    assert (D0, EXPECTED, "unpaid") == (after["received"], after["unverified"], after["coverage"])
    # CoinCoin's provider_ref IS the order id: the unmatched record, found under both names the
    # payment service looks it up by, is applied once (not again, as a duplicate).
    (applied,) = await deliveries(world, payment["payment_id"])
    assert ("unverified", "address_mismatch") == (applied["outcome"], applied["subject_check"])
    assert applied["matched_later"]


async def test_a_genuine_early_delivery_counts_after_an_unauthenticated_copy_of_it(world):
    """Both copies of a delivery overtake the create response, the unauthenticated one first:
    the genuine one is kept unmatched too (not as the copy's duplicate) and moves the money once
    the payment exists."""
    order_id = f"ORDER_copy_early_{uuid.uuid4().hex[:8]}"

    async def record_nothing(_exchange: Any) -> None:
        return None

    # The order as CoinCoin holds it (its address), before the ledger's create call asks again.
    order = await world.ledger.app[ADAPTERS]["coincoin"].client.create_payment(
        CreatePaymentRequest(order_id, Decimal(PRICE), CURRENCY, world.webhook_url()),
        record_nothing,
    )
    body = body_for({"provider_ref": order.provider_ref, "address": order.pay_address}).encode()
    assert (200, "received") == _outcome(await world.deliver(body, world.webhook_url(None)))
    assert (200, "received") == _outcome(await world.deliver(body))
    assert (200, "duplicate") == _outcome(await world.deliver(body))
    assert (200, "duplicate") == _outcome(await world.deliver(body, world.webhook_url(None)))
    # Both copies held unmatched: the genuine one not taken as the unauthenticated one's copy.
    held = await unmatched_records(world)
    assert ["unverified", "verified"] == sorted(h["verification"]["outcome"] for h in held)

    payment = await create(world, order_id)

    after = await view(world, payment["payment_id"])
    assert ("completed", "exact", EXPECTED, D0) == (
        after["status"],
        after["coverage"],
        after["received"],
        after["unverified"],
    )
    outcomes = sorted(d["outcome"] for d in await deliveries(world, payment["payment_id"]))
    assert outcomes in (["duplicate", "verified"], ["unverified", "verified"]), outcomes
    # The funds held in unmatched suspense went to the payment: nothing is left there.
    await world.ledger.caught_up()
    status, balances = await world.ledger.call(
        "GET", f"/v1/balances?account=suspense:unmatched&currency={CURRENCY}"
    )
    assert 200 == status, balances
    assert all(Decimal(item["posted"]) == 0 for item in balances["items"]), balances


def _outcome(reply: tuple[int, Any]) -> tuple[int, str]:
    status, body = reply
    return status, body["outcome"]
