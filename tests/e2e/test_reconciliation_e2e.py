"""Reconciliation end to end: every reason code produced through a provider sandbox, and cleared.

Each scenario is driven through a sandbox's `/_sandbox/` controls where the sandbox can express
it; where it cannot, the delivery is built and signed (or tokened) by hand exactly as the provider
would send it, and the test says why. After each step the projections are caught up and the items
read back through `GET /v1/reconciliation/items` and `/summary` with exact amounts, beside the
payment or withdrawal view, `/v1/balances` and `/v1/journal`. Strict xfails record bugs found.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from adapters.providers.http_client import dumps_exact
from ledger.codec import decode_document
from ledger.money import loads_exact
from ledger.recording import ProviderRecordedAggregate
from tests.e2e.ledger_world import (
    COINCOIN_TOKEN,
    amounts,
    assert_balanced,
    balances,
    cf_signed,
    cleared_item,
    coincoin_order_at_the_provider,
    fund_cryptofuse,
    fund_lipaykripto,
    fund_payment_engine,
    instant,
    journal,
    open_item,
    open_world,
    payment_engine_transaction_at_the_provider,
    pe_event,
    pe_signed,
)

# The genuine delivery of a body first POSTed without authentication used to be recorded as that
# copy's duplicate. The fix was being made concurrently (uncommitted while these tests were
# written): until it is in, the tests that need it are strict xfails; once in, plain tests.
needs_the_genuine_copy_fix = pytest.mark.xfail(
    not hasattr(ProviderRecordedAggregate, "has_verified_delivery"),
    strict=True,
    reason="BUG (being fixed concurrently; strict xfails in test_coincoin_e2e.py): an "
    "unverified delivery's dedupe key is taken, so the genuine copy of the same body is "
    "recorded as its duplicate and moves no money",
)


@pytest.fixture
async def world(store, monkeypatch):
    async with open_world(store, monkeypatch) as opened:
        yield opened


async def assert_cleared_when_first_applied(world, payment_id: str, provider: str) -> None:
    """Each cleared unmatched item cleared at the event that first applied its delivery to the
    payment (a record applied again lands as a duplicate and changes nothing)."""
    first_applied: dict[str, datetime] = {}
    for event in await world.ledger.store.read_stream(payment_id):
        if event.type == "Payment.DeliveryRecorded":
            delivery = decode_document(event.payload)["delivery"]
            if delivery.get("matched_later"):
                key = f"{provider}:{delivery['dedupe_key']}"
                first_applied.setdefault(key, event.recorded_at)
    cleared = await world.items("cleared", reason="unmatched", provider=provider)
    assert cleared
    for item in cleared:
        assert first_applied[item["subject_id"]] == instant(item["cleared_at"]), item


# ---------------------------------------------------------------- underpaid


async def test_underpaid_opens_on_partial_funds_and_clears_when_the_rest_arrives(world):
    payment = await world.pay("coincoin", "REC_under_rest", "120.50", "USDT")
    await world.scenario("coincoin", payment["provider_ref"], "partial")  # 60.25 collected

    (item,) = (await world.reasons(payment["payment_id"])).values()
    assert ("payment", "coincoin", "underpaid", "USDT") == (
        item["subject_type"],
        item["provider"],
        item["reason"],
        item["currency"],
    )
    # CoinCoin's running total is its word on the amount: the third side of the comparison.
    assert ("120.500000", "60.250000", "60.250000", "60.250000") == amounts(item)
    open_item(world, item)
    filtered = await world.items(reason="underpaid", provider="coincoin")
    assert [payment["payment_id"]] == [i["subject_id"] for i in filtered]
    assert [] == await world.items(reason="underpaid", provider="cryptofuse")

    # The customer pays the rest: CoinCoin's running total reaches the price.
    await world.scenario("coincoin", payment["provider_ref"], "full")

    assert "completed" == (await world.payment(payment["payment_id"]))["status"]
    assert {} == await world.reasons(payment["payment_id"])
    cleared = (await world.reasons(payment["payment_id"], "cleared"))["underpaid"]
    assert (item["detected_at"], amounts(item)) == (cleared["detected_at"], amounts(cleared))
    cleared_item(cleared)


async def test_underpaid_is_replaced_by_expired_with_funds_when_the_ledgers_clock_expires_it(world):
    payment = await world.pay("coincoin", "REC_under_exp", "120.50", "USDT", expires_in_minutes=60)
    await world.scenario("coincoin", payment["provider_ref"], "partial")
    assert {"underpaid"} == set(await world.reasons(payment["payment_id"]))

    world.clock.advance(minutes=61)
    assert 1 == (await world.sweep()).payments_expired

    assert "expired" == (await world.payment(payment["payment_id"]))["status"]
    (item,) = (await world.reasons(payment["payment_id"])).values()
    assert ("expired_with_funds", ("120.500000", "60.250000", "60.250000", "60.250000")) == (
        item["reason"],
        amounts(item),
    )
    open_item(world, item)
    (underpaid,) = (await world.reasons(payment["payment_id"], "cleared")).values()
    # The same event (the clock's expiry) clears one and opens the other.
    assert ("underpaid", item["detected_at"]) == (underpaid["reason"], underpaid["cleared_at"])

    await world.settle(payment["payment_id"])
    assert {} == await world.reasons(payment["payment_id"])
    cleared = await world.reasons(payment["payment_id"], "cleared")
    assert {"underpaid", "expired_with_funds"} == set(cleared)
    cleared_item(cleared["expired_with_funds"])


# ---------------------------------------------------------------- overpaid


async def test_overpaid_opens_with_the_excess_and_clears_when_finance_settles(world):
    payment = await world.pay("cryptofuse", "REC_over", "100.00", "USD", pay_currency="USDTTRC20")
    await world.scenario("cryptofuse", payment["provider_ref"], "over")  # 150%

    (item,) = (await world.reasons(payment["payment_id"])).values()
    assert ("overpaid", "USDTTRC20", ("100.000000", "150.000000", "150.000000", "50.000000")) == (
        item["reason"],
        item["currency"],
        amounts(item),
    )
    open_item(world, item)
    assert {"overpaid:USDTTRC20": (1, "50.000000")} == await world.summary(provider="cryptofuse")

    settled = await world.settle(payment["payment_id"])
    assert ("completed", "over", "50.000000") == (
        settled["status"],
        settled["coverage"],
        settled["overpaid"],
    )
    assert {} == await world.reasons(payment["payment_id"])
    cleared_item((await world.reasons(payment["payment_id"], "cleared"))["overpaid"])
    assert {} == await world.summary(provider="cryptofuse")


# ---------------------------------------------------------------- expired_with_funds, paid_late


async def test_expired_with_funds_on_the_providers_expiry_word_clears_at_settlement(world):
    payment = await world.pay("cryptofuse", "REC_ewf", "100.00", "USD", pay_currency="USDTTRC20")
    # Half paid, then Cryptofuse's own "expired".
    await world.scenario("cryptofuse", payment["provider_ref"], "expire_with_funds")

    view = await world.payment(payment["payment_id"])
    assert ("expired", "partial", "expired") == (
        view["status"],
        view["coverage"],
        view["provider_status"],
    )
    (item,) = (await world.reasons(payment["payment_id"])).values()
    assert ("expired_with_funds", ("100.000000", "50.000000", "50.000000", "50.000000")) == (
        item["reason"],
        amounts(item),
    )
    open_item(world, item)

    await world.settle(payment["payment_id"])
    assert {} == await world.reasons(payment["payment_id"])
    cleared = await world.reasons(payment["payment_id"], "cleared")
    # The partial funds showed as underpaid until the provider's expiry word.
    assert {"underpaid", "expired_with_funds"} == set(cleared)


async def test_paid_late_after_the_providers_expiry_word_clears_at_settlement(world):
    payment = await world.pay("cryptofuse", "REC_late", "100.00", "USD", pay_currency="USDTTRC20")
    # Cryptofuse says "expired", then the full amount arrives and it says "completed".
    await world.scenario("cryptofuse", payment["provider_ref"], "late")

    view = await world.payment(payment["payment_id"])
    assert ("expired", "exact", True) == (view["status"], view["coverage"], view["late"])
    found = await world.reasons(payment["payment_id"])
    # One late payment, one item: the provider's "completed" and its amount are on it, and the
    # same funds are not counted again as expired_with_funds or a status_mismatch of 0.
    assert {"paid_late": ("100.000000", "100.000000", "100.000000", "100.000000")} == {
        reason: amounts(item) for reason, item in found.items()
    }
    assert "completed" == found["paid_late"]["provider_status"]

    await world.settle(payment["payment_id"])

    assert {} == await world.reasons(payment["payment_id"])
    assert {"paid_late"} == set(await world.reasons(payment["payment_id"], "cleared"))


async def test_paid_late_after_the_ledgers_own_expiry_clears_at_settlement(world):
    payment = await world.pay("coincoin", "REC_late_clock", "120.50", "USDT", expires_in_minutes=60)
    world.clock.advance(minutes=61)
    await world.sweep()
    assert {"stale"} == set(await world.reasons(payment["payment_id"]))

    # The customer pays in full after the ledger's deadline; CoinCoin settles it.
    await world.scenario("coincoin", payment["provider_ref"], "full")

    view = await world.payment(payment["payment_id"])
    assert ("expired", "exact", True, "120.500000") == (
        view["status"],
        view["coverage"],
        view["late"],
        view["received"],
    )
    found = await world.reasons(payment["payment_id"])
    assert {"paid_late": ("120.500000", "120.500000", "120.500000", "120.500000")} == {
        reason: amounts(item) for reason, item in found.items()
    }
    # CoinCoin's settlement word is a final word: the expiry is no longer stale.
    assert {"stale"} == set(await world.reasons(payment["payment_id"], "cleared"))

    await world.settle(payment["payment_id"])
    assert {} == await world.reasons(payment["payment_id"])


# ---------------------------------------------------------------- status_mismatch


async def test_status_mismatch_when_the_provider_says_paid_for_too_little_clears_on_the_rest(
    world,
):
    payment = await world.pay("payment_engine", "REC_sm_paid", "100.00", "USD")
    # Payment Engine's transaction for the order completes with half the amount.
    (partial,) = await world.scenario("payment_engine", payment["provider_ref"], "partial")

    view = await world.payment(payment["payment_id"])
    assert ("pending", "COMPLETED", "50.00") == (
        view["status"],
        view["provider_status"],
        view["received"],
    )
    found = await world.reasons(payment["payment_id"])
    assert {
        "status_mismatch": ("100.00", "50.00", None, "50.00"),
        "underpaid": ("100.00", "50.00", None, "50.00"),  # Payment Engine states no total
    } == {reason: amounts(item) for reason, item in found.items()}
    open_item(world, found["status_mismatch"])

    # The rest arrives as a further completed transfer for the same order (the sandbox's own
    # way of sending a second deposit; its scenarios refuse a transaction already completed).
    data = loads_exact(partial["body"].encode())["data"]
    data |= {"transactionId": f"{payment['provider_ref']}-d2", "amount": Decimal("50.00")}
    rest = pe_event("transaction.completed", data, "evt_rec_rest_1", world.clock)
    status, reply = await world.webhook("payment_engine", rest, pe_signed(rest))
    assert (200, "received") == (status, reply["outcome"])  # accepted when applied

    view = await world.payment(payment["payment_id"])
    assert ("completed", "exact", "100.00") == (view["status"], view["coverage"], view["received"])
    assert {} == await world.reasons(payment["payment_id"])
    cleared = await world.reasons(payment["payment_id"], "cleared")
    assert {"status_mismatch", "underpaid"} == set(cleared)
    cleared_item(cleared["status_mismatch"])


async def test_status_mismatch_when_lipaykripto_confirms_less_than_was_asked(world):
    """LiPayKripto has no word for a partial payment: 'confirmed' with less than was asked."""
    payment = await world.pay("lipaykripto", "REC_sm_lpk", "100.00", "TRY")
    await world.scenario("lipaykripto", payment["provider_ref"], "partial")
    found = await world.reasons(payment["payment_id"])
    assert {
        "status_mismatch": ("100.00", "50.00", "50.00", "50.00"),
        "underpaid": ("100.00", "50.00", "50.00", "50.00"),
    } == {reason: amounts(item) for reason, item in found.items()}
    assert {"status_mismatch:TRY": (1, "50.00"), "underpaid:TRY": (1, "50.00")} == (
        await world.summary(provider="lipaykripto")
    )


async def test_status_mismatch_when_the_provider_says_expired_after_completion_clears_on_agreement(
    world,
):
    payment = await world.pay("cryptofuse", "REC_sm_exp", "100.00", "USD", pay_currency="USDTTRC20")
    *_, completed = await world.scenario("cryptofuse", payment["provider_ref"], "full")
    assert {} == await world.reasons(payment["payment_id"])

    # Cryptofuse's sandbox will not expire a completed payment; its "expired" webhook, signed
    # as it signs them, stamped after the completion.
    world.clock.advance(minutes=1)
    body = dumps_exact(
        {
            "transaction_id": payment["provider_ref"],
            "event": "payment_status_update",
            "status": "expired",
            "timestamp": world.clock().strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
    ).encode()
    status, reply = await world.webhook("cryptofuse", body, cf_signed(body))
    assert (200, "received") == (status, reply["outcome"])  # accepted when applied

    view = await world.payment(payment["payment_id"])
    assert ("completed", "expired") == (view["status"], view["provider_status"])
    (item,) = (await world.reasons(payment["payment_id"])).values()
    assert ("status_mismatch", ("100.000000", "100.000000", "100.000000", "0.000000")) == (
        item["reason"],
        amounts(item),
    )
    open_item(world, item)

    # Cryptofuse's next word is "completed" again (its completed webhook, stamped later): the
    # two agree and the item clears.
    world.clock.advance(minutes=1)
    again = loads_exact(completed["body"].encode())
    again["timestamp"] = world.clock().strftime("%Y-%m-%dT%H:%M:%SZ")
    body = dumps_exact(again).encode()
    status, reply = await world.webhook("cryptofuse", body, cf_signed(body))
    assert 200 == status, reply
    assert "completed" == (await world.payment(payment["payment_id"]))["provider_status"]
    assert "status_mismatch" not in await world.reasons(payment["payment_id"])
    cleared_item((await world.reasons(payment["payment_id"], "cleared"))["status_mismatch"])


async def test_status_mismatch_for_a_withdrawal_word_its_state_cannot_take_stays_open(world):
    await fund_lipaykripto(world, "REC_fund_sm_wd", "300.00")
    withdrawal = await world.withdraw(
        "lipaykripto", "WD_rec_sm", "100.00", "TRY", pay_currency="USDT"
    )
    await world.withdrawal_scenario("lipaykripto", withdrawal["provider_ref"], "failed")
    assert {} == await world.reasons(withdrawal["withdrawal_id"])

    # LiPayKripto then says "confirmed" for the failed withdrawal.
    await world.withdrawal_scenario("lipaykripto", withdrawal["provider_ref"], "completed")

    view = await world.withdrawal(withdrawal["withdrawal_id"])
    assert ("failed", "0.00", None) == (view["status"], view["reserved"], view["sent"])
    (item,) = (await world.reasons(withdrawal["withdrawal_id"])).values()
    assert ("withdrawal", "status_mismatch", "TRY") == (
        item["subject_type"],
        item["reason"],
        item["currency"],
    )
    assert ("100.00", None, None, "100.00") == amounts(item)
    open_item(world, item)
    # A person has to decide: nothing later clears it by itself.
    await world.withdrawal_scenario("lipaykripto", withdrawal["provider_ref"], "failed")
    assert {"status_mismatch"} == set(await world.reasons(withdrawal["withdrawal_id"]))
    types = [
        e["type"]
        for e in (await world.get(f"/v1/withdrawals/{view['withdrawal_id']}/events"))["items"]
    ]
    assert "Withdrawal.DeliveryNotApplied" in types


# ---------------------------------------------------------------- amount_mismatch


async def test_amount_mismatch_when_the_providers_latest_total_differs_clears_when_they_agree(
    world,
):
    payment = await world.pay("coincoin", "REC_amount", "120.50", "USDT")
    # Running totals 120.5, 72.3, 36.15 arrive in that order: the money counts once (120.5),
    # and CoinCoin's newest word reports 36.15 collected.
    await world.scenario("coincoin", payment["provider_ref"], "out_of_order")

    view = await world.payment(payment["payment_id"])
    assert ("completed", "120.500000") == (view["status"], view["received"])
    (item,) = (await world.reasons(payment["payment_id"])).values()
    assert ("amount_mismatch", ("120.500000", "120.500000", "36.150000", "-84.350000")) == (
        item["reason"],
        amounts(item),
    )
    open_item(world, item)

    # CoinCoin's next word reports the full total again.
    await world.scenario("coincoin", payment["provider_ref"], "full")
    assert {} == await world.reasons(payment["payment_id"])
    cleared_item((await world.reasons(payment["payment_id"], "cleared"))["amount_mismatch"])


def _cryptofuse_confirming(
    payment: dict, deposits: list[tuple[str, str]], total: str, at: datetime
) -> bytes:
    """A Cryptofuse "confirming" webhook listing `deposits` (id, amount) and a total paid."""
    stamp = at.strftime("%Y-%m-%dT%H:%M:%SZ")
    history = [
        {
            "deposit_id": deposit_id,
            "amount": amount,
            "transaction_hash": f"0x{deposit_id}",
            "confirmations": 1,
            "timestamp": stamp,
        }
        for deposit_id, amount in deposits
    ]
    return dumps_exact(
        {
            "transaction_id": payment["provider_ref"],
            "event": "payment_status_update",
            "status": "confirming",
            "timestamp": stamp,
            "data": {
                "transaction_id": payment["provider_ref"],
                "status": "confirming",
                "amount_crypto": "100.00000000",
                "currency": "USDTTRC20",
                "payment_history": history,
                "total_paid_amount": total,
            },
        }
    ).encode()


async def test_amount_mismatch_when_the_provider_reports_more_paid_than_it_listed(world):
    """The sandbox's bodies always agree with themselves; a body whose total exceeds the
    deposits it lists is signed by hand as Cryptofuse signs its webhooks."""
    payment = await world.pay(
        "cryptofuse", "REC_amount_cf", "100.00", "USD", pay_currency="USDTTRC20"
    )
    first = _cryptofuse_confirming(
        payment, [("dep_a", "60.00000000")], "100.00000000", world.clock()
    )
    assert (200, "received") == (  # accepted when applied
        (r := await world.webhook("cryptofuse", first, cf_signed(first)))[0],
        r[1]["outcome"],
    )
    view = await world.payment(payment["payment_id"])
    assert ("confirming", "60.000000") == (view["status"], view["pending"])
    (item,) = (await world.reasons(payment["payment_id"])).values()
    assert ("amount_mismatch", ("100.000000", "0.000000", "100.000000", "40.000000")) == (
        item["reason"],
        amounts(item),
    )

    both = [("dep_a", "60.00000000"), ("dep_b", "40.00000000")]
    second = _cryptofuse_confirming(
        payment, both, "100.00000000", world.clock() + timedelta(seconds=1)
    )
    status, _ = await world.webhook("cryptofuse", second, cf_signed(second))
    assert 200 == status
    assert "100.000000" == (await world.payment(payment["payment_id"]))["pending"]
    assert "amount_mismatch" not in await world.reasons(payment["payment_id"])
    cleared_item((await world.reasons(payment["payment_id"], "cleared"))["amount_mismatch"])


# ---------------------------------------------------------------- unmatched


async def test_unmatched_coincoin_deliveries_clear_when_their_payment_is_created(world):
    order_id = "REC_early_cc_01"
    # The order exists at CoinCoin (the merchant's checkout created it) before the ledger knows
    # it, and the customer pays: CoinCoin's deliveries name our order id, which is unknown yet.
    await coincoin_order_at_the_provider(world, order_id, "120.50")
    sent = await world.scenario("coincoin", order_id, "full")

    found = await world.items(reason="unmatched", provider="coincoin")
    assert len(sent) == len(found) == 2
    for item in found:
        assert ("delivery", "USDT", (None, None, "120.500000", "120.500000")) == (
            item["subject_type"],
            item["currency"],
            amounts(item),
        )
        assert item["subject_id"].startswith("coincoin:")
        open_item(world, item)
    assert {"unmatched:USDT": (2, "241.000000")} == await world.summary(provider="coincoin")

    payment = await world.pay("coincoin", order_id, "120.50", "USDT")

    view = await world.payment(payment["payment_id"])
    assert ("completed", "exact", "120.500000", "0.000000") == (
        view["status"],
        view["coverage"],
        view["received"],
        view["unverified"],
    )
    assert [] == await world.items(reason="unmatched")
    cleared = await world.items("cleared", reason="unmatched")
    assert {i["subject_id"] for i in found} == {i["subject_id"] for i in cleared}
    for item in cleared:
        cleared_item(item)
    assert {} == await world.reasons(payment["payment_id"])
    await assert_cleared_when_first_applied(world, payment["payment_id"], "coincoin")
    held = await balances(world, "USDT")
    assert (Decimal("120.5"), 0) == (
        Decimal(held["provider:coincoin:funds"][0]),
        Decimal(held["suspense:unmatched"][0]),
    )


async def test_an_unmatched_payment_engine_transfer_clears_when_its_order_is_created(world):
    order_id = "REC_early_pe_01"
    early = await payment_engine_transaction_at_the_provider(world, order_id, "100.00")
    await world.scenario("payment_engine", early, "full")

    (item,) = await world.items(reason="unmatched")
    assert ("payment_engine", "USD", (None, None, "100.00", "100.00")) == (
        item["provider"],
        item["currency"],
        amounts(item),
    )
    # Authenticated funds for an unknown order are held in unmatched suspense.
    held = await balances(world, "USD")
    assert ("100.00", "-100.00") == (
        held["provider:payment_engine:funds"][0],
        held["suspense:unmatched"][0],
    )

    payment = await world.pay("payment_engine", order_id, "100.00", "USD")

    view = await world.payment(payment["payment_id"])
    assert ("completed", "100.00", [early]) == (
        view["status"],
        view["received"],
        [d["deposit_id"] for d in view["deposits"]],
    )
    assert [] == await world.items(reason="unmatched")
    cleared_item((await world.items("cleared", reason="unmatched"))[0])
    held = await balances(world, "USD")
    assert ("100.00", "0.00", "-100.00") == (
        held["provider:payment_engine:funds"][0],
        held["suspense:unmatched"][0],
        held["payments:received"][0],
    )


async def test_unmatched_running_totals_are_held_once(world):
    await coincoin_order_at_the_provider(world, "REC_early_cc_02", "120.50")
    await world.scenario("coincoin", "REC_early_cc_02", "full")
    held = await balances(world, "USDT")
    assert Decimal("120.5") == Decimal(held["provider:coincoin:funds"][0])


async def test_a_forged_unmatched_lipaykripto_delivery_makes_no_funds_available(world):
    forged = (
        b'{"try_amount": 1000.00, "client_id": "rec-lpk-client", "payment_id": "NOBODY_1",'
        b' "status": "confirmed"}'
    )
    status, reply = await world.webhook("lipaykripto", forged, token="a-guessed-token")
    assert (200, "received") == (status, reply["outcome"])  # unmatched when applied
    status, reply = await world.ledger.call(
        "POST",
        "/v1/withdrawals",
        json={
            "provider": "lipaykripto",
            "request_id": "WD_rec_forged",
            "amount": "900.00",
            "currency": "TRY",
            "address": "TRecWithdrawalAddress0123456789",
            "pay_currency": "USDT",
        },
    )
    assert 422 == status, reply


# ---------------------------------------------------------------- unverified


async def test_unverified_funds_clear_when_the_genuine_delivery_confirms_them(world):
    payment = await world.pay("lipaykripto", "REC_unverified", "100.00", "TRY")
    # A copy of LiPayKripto's confirmation, posted without the payment's callback token (an
    # extra key makes it a different body from the one LiPayKripto will send).
    copy = (
        b'{"try_amount": 100.00, "client_id": "rec-lpk-client", "payment_id": "REC_unverified",'
        b' "status": "confirmed", "note": "copy"}'
    )
    status, reply = await world.webhook("lipaykripto", copy)
    assert (200, "received") == (status, reply["outcome"])  # unverified when applied
    view = await world.payment(payment["payment_id"])
    assert ("pending", "0.00", "100.00") == (view["status"], view["received"], view["unverified"])
    (item,) = (await world.reasons(payment["payment_id"])).values()
    assert ("unverified", ("100.00", "0.00", None, "100.00")) == (item["reason"], amounts(item))
    open_item(world, item)

    # LiPayKripto's own delivery, to the payment's tokened callback URL.
    await world.scenario("lipaykripto", payment["provider_ref"], "full")

    view = await world.payment(payment["payment_id"])
    assert ("completed", "100.00", "0.00") == (view["status"], view["received"], view["unverified"])
    assert {} == await world.reasons(payment["payment_id"])
    cleared_item((await world.reasons(payment["payment_id"], "cleared"))["unverified"])


@needs_the_genuine_copy_fix
async def test_unverified_funds_clear_when_the_same_body_arrives_tokened(world):
    """The copy is byte for byte CoinCoin's own body (anyone can POST it to the untokened URL);
    the genuine delivery of the same body must still confirm the funds."""
    payment = await world.pay("coincoin", "REC_unverified_cc", "120.50", "USDT")
    untokened = f"{world.ledger.url}/v1/webhooks/coincoin"
    await world.control("coincoin", "webhook_url", {"webhook_url": untokened})
    await world.scenario("coincoin", payment["provider_ref"], "full")
    (item,) = (await world.reasons(payment["payment_id"])).values()
    assert ("unverified", ("120.500000", "0.000000", None, "120.500000")) == (
        item["reason"],
        amounts(item),
    )

    await world.control("coincoin", "webhook_url", {"webhook_url": f"{untokened}/{COINCOIN_TOKEN}"})
    await world.scenario("coincoin", payment["provider_ref"], "full")

    view = await world.payment(payment["payment_id"])
    assert ("completed", "120.500000", "0.000000") == (
        view["status"],
        view["received"],
        view["unverified"],
    )
    assert {} == await world.reasons(payment["payment_id"])
    assert "unverified" in await world.reasons(payment["payment_id"], "cleared")


@needs_the_genuine_copy_fix
async def test_an_unverified_then_genuine_unmatched_delivery_is_one_item_and_projections_go_on(
    world,
):
    order_id = "REC_early_cc_03"
    await coincoin_order_at_the_provider(world, order_id, "120.50")
    untokened = f"{world.ledger.url}/v1/webhooks/coincoin"
    await world.control("coincoin", "webhook_url", {"webhook_url": untokened})
    await world.scenario("coincoin", order_id, "full")
    await world.ledger.caught_up()
    await world.control("coincoin", "webhook_url", {"webhook_url": f"{untokened}/{COINCOIN_TOKEN}"})
    await world.scenario("coincoin", order_id, "full")

    found = await world.items(reason="unmatched")  # catches up: raises if a projection stops
    assert 2 == len(found)  # one per distinct body, though each body came twice
    payment = await world.pay("coincoin", order_id, "120.50", "USDT")
    assert ("completed", "120.500000") == (
        (view := await world.payment(payment["payment_id"]))["status"],
        view["received"],
    )
    assert [] == await world.items(reason="unmatched")
    await assert_cleared_when_first_applied(world, payment["payment_id"], "coincoin")
    assert all(p["lag"] == 0 for p in (await world.get("/v1/projections"))["items"])


# ---------------------------------------------------------------- stale


@pytest.mark.parametrize(
    ("provider", "price", "currency", "extra", "expected"),
    [
        ("cryptofuse", "100.00", "USD", {"pay_currency": "USDTTRC20"}, "100.000000"),
        ("coincoin", "120.50", "USDT", {}, "120.500000"),
    ],
)
async def test_stale_when_the_ledgers_clock_expires_a_payment_clears_on_the_providers_word(
    world, provider, price, currency, extra, expected
):
    payment = await world.pay(
        provider, f"REC_stale_{provider}", price, currency, expires_in_minutes=60, **extra
    )
    world.clock.advance(minutes=59)
    assert 0 == (await world.sweep()).payments_expired
    assert {} == await world.reasons(payment["payment_id"])

    world.clock.advance(minutes=2)
    assert 1 == (await world.sweep()).payments_expired

    (item,) = (await world.reasons(payment["payment_id"])).values()
    zero = "0." + "0" * 6
    assert ("stale", (expected, zero, None, expected)) == (item["reason"], amounts(item))
    open_item(world, item)

    # The provider's own expiry word arrives (Cryptofuse "expired", CoinCoin state -1).
    await world.scenario(provider, payment["provider_ref"], "expire_no_funds")

    assert {} == await world.reasons(payment["payment_id"])
    cleared_item((await world.reasons(payment["payment_id"], "cleared"))["stale"])
    assert "expired" == (await world.payment(payment["payment_id"]))["status"]


# ---------------------------------------------------------------- duplicate_deposit


async def test_duplicate_deposit_when_another_event_reports_the_same_transfer_clears_at_settle(
    world,
):
    payment = await world.pay("payment_engine", "REC_dup", "100.00", "USD")
    (delivery,) = await world.scenario("payment_engine", payment["provider_ref"], "full")
    assert {} == await world.reasons(payment["payment_id"])

    # Payment Engine reports the same completed transaction again under a new eventId (the same
    # eventId would be a redelivery, acknowledged as a duplicate and recorded only).
    event = loads_exact(delivery["body"].encode())
    again = pe_event(event["eventType"], event["data"], "evt_rec_again_1", world.clock)
    status, reply = await world.webhook("payment_engine", again, pe_signed(again))
    assert (200, "received") == (status, reply["outcome"])  # accepted when applied

    view = await world.payment(payment["payment_id"])
    assert ("completed", "100.00", 1) == (view["status"], view["received"], len(view["deposits"]))
    (item,) = (await world.reasons(payment["payment_id"])).values()
    assert ("duplicate_deposit", ("100.00", "100.00", None, "100.00")) == (
        item["reason"],
        amounts(item),
    )
    open_item(world, item)

    await world.settle(payment["payment_id"])
    assert {} == await world.reasons(payment["payment_id"])
    cleared_item((await world.reasons(payment["payment_id"], "cleared"))["duplicate_deposit"])


async def test_an_ordinary_multi_deposit_payment_is_not_a_duplicate_deposit(world):
    payment = await world.pay("cryptofuse", "REC_multi", "100.00", "USD", pay_currency="USDTTRC20")
    await world.scenario("cryptofuse", payment["provider_ref"], "multiple_deposits")
    assert "completed" == (await world.payment(payment["payment_id"]))["status"]
    assert {} == await world.reasons(payment["payment_id"])


# ---------------------------------------------------------------- withdrawal_stuck, manual_review


async def test_withdrawal_stuck_after_an_hour_of_silence_clears_when_the_provider_reports(world):
    await fund_cryptofuse(world, "REC_fund_stuck", "300.00")
    withdrawal = await world.withdraw("cryptofuse", "WD_rec_stuck", "100", "USDTTRC20")
    assert "submitted" == withdrawal["status"]

    world.clock.advance(minutes=59)
    assert 0 == (await world.sweep()).withdrawals_stuck
    assert {} == await world.reasons(withdrawal["withdrawal_id"])

    world.clock.advance(minutes=2)
    assert 1 == (await world.sweep()).withdrawals_stuck
    assert 0 == (await world.sweep()).withdrawals_stuck  # noticed once

    view = await world.withdrawal(withdrawal["withdrawal_id"])
    assert ("submitted", "100.000000") == (view["status"], view["reserved"])
    assert instant(view["stuck_since"]) >= datetime.now(UTC) + timedelta(minutes=60)
    (item,) = (await world.reasons(withdrawal["withdrawal_id"])).values()
    assert ("withdrawal", "withdrawal_stuck", "USDTTRC20") == (
        item["subject_type"],
        item["reason"],
        item["currency"],
    )
    assert ("100.000000", None, None, "100.000000") == amounts(item)
    open_item(world, item)

    # Cryptofuse reports progress.
    await world.withdrawal_scenario("cryptofuse", withdrawal["provider_ref"], "processing")

    view = await world.withdrawal(withdrawal["withdrawal_id"])
    assert ("processing", None) == (view["status"], view["stuck_since"])
    assert {} == await world.reasons(withdrawal["withdrawal_id"])
    cleared_item((await world.reasons(withdrawal["withdrawal_id"], "cleared"))["withdrawal_stuck"])


@pytest.mark.parametrize(
    ("outcome", "status", "sent", "available"),
    [("completed", "completed", "100.00", "200.00"), ("failed", "failed", None, "300.00")],
)
async def test_manual_review_opens_and_clears_when_the_withdrawal_completes_or_fails(
    world, outcome, status, sent, available
):
    await fund_lipaykripto(world, f"REC_fund_mr_{outcome}", "300.00")
    withdrawal = await world.withdraw(
        "lipaykripto", f"WD_rec_mr_{outcome}", "100.00", "TRY", pay_currency="USDT"
    )
    # LiPayKripto's manual_process.
    await world.withdrawal_scenario("lipaykripto", withdrawal["provider_ref"], "manual_review")

    view = await world.withdrawal(withdrawal["withdrawal_id"])
    assert ("manual_review", "manual_process", "100.00") == (
        view["status"],
        view["provider_status"],
        view["reserved"],
    )
    (item,) = (await world.reasons(withdrawal["withdrawal_id"])).values()
    assert ("manual_review", ("100.00", None, None, "100.00")) == (item["reason"], amounts(item))
    open_item(world, item)
    assert "200.00" == (await balances(world, "TRY"))["provider:lipaykripto:funds"][2]

    await world.withdrawal_scenario("lipaykripto", withdrawal["provider_ref"], outcome)

    view = await world.withdrawal(withdrawal["withdrawal_id"])
    assert (status, sent, "0.00") == (view["status"], view["sent"], view["reserved"])
    assert {} == await world.reasons(withdrawal["withdrawal_id"])
    cleared_item((await world.reasons(withdrawal["withdrawal_id"], "cleared"))["manual_review"])
    assert available == (await balances(world, "TRY"))["provider:lipaykripto:funds"][2]


# ---------------------------------------------------------------- funds for withdrawals


async def test_a_withdrawal_needs_available_funds_and_a_failed_one_releases_its_reservation(world):
    body = {
        "provider": "payment_engine",
        "request_id": "WD_rec_nofunds",
        "amount": "40.00",
        "currency": "USD",
        "address": "acct_payout_rec",
    }
    status, problem = await world.ledger.call("POST", "/v1/withdrawals", json=body)
    assert (422, 422) == (status, problem["status"])
    assert problem["type"].endswith("insufficient-funds")
    assert [] == (await world.get("/v1/withdrawals"))["items"]

    await fund_payment_engine(world, "REC_fund_wd", "100.00")
    too_much = {**body, "request_id": "WD_rec_toomuch", "amount": "100.01"}
    status, problem = await world.ledger.call("POST", "/v1/withdrawals", json=too_much)
    assert 422 == status
    assert problem["type"].endswith("insufficient-funds")
    funds = (await balances(world, "USD"))["provider:payment_engine:funds"]
    assert ("100.00", "0.00", "100.00") == funds

    withdrawal = await world.withdraw("payment_engine", "WD_rec_fails", "40.00", "USD")
    held = await balances(world, "USD")
    assert ("100.00", "-40.00", "60.00") == held["provider:payment_engine:funds"]
    assert ("0.00", "40.00", "0.00") == held["withdrawals:in_flight"]
    # What is reserved cannot be reserved again.
    again = {**body, "request_id": "WD_rec_again", "amount": "60.01"}
    status, problem = await world.ledger.call("POST", "/v1/withdrawals", json=again)
    assert 422 == status, problem

    await world.withdrawal_scenario("payment_engine", withdrawal["provider_ref"], "failed")

    view = await world.withdrawal(withdrawal["withdrawal_id"])
    assert ("failed", "0.00") == (view["status"], view["reserved"])
    held = await balances(world, "USD")
    assert ("100.00", "0.00", "100.00") == held["provider:payment_engine:funds"]
    assert ("0.00", "0.00", "0.00") == held["withdrawals:in_flight"]
    assert_balanced(await journal(world, currency="USD"))


# ---------------------------------------------------------------- provider_balance_mismatch


async def test_provider_balance_mismatch_from_a_polled_cryptofuse_balance_clears_when_it_matches(
    world,
):
    await fund_cryptofuse(world, "REC_fund_bal", "300.00")
    # The sandbox holds what the payment brought in: the poll agrees with the ledger.
    assert 1 == await world.ledger.poll_balances("cryptofuse")
    assert [] == await world.items(reason="provider_balance_mismatch")

    status, _ = await world.control(
        "cryptofuse", "balances", {"balances": {"USDTTRC20": {"amount": "290.5"}}}
    )
    assert 200 == status
    assert 1 == await world.ledger.poll_balances("cryptofuse")

    (item,) = await world.items(reason="provider_balance_mismatch")
    assert ("provider", "cryptofuse:USDTTRC20", "cryptofuse", "USDTTRC20") == (
        item["subject_type"],
        item["subject_id"],
        item["provider"],
        item["currency"],
    )
    assert (None, "300.000000", "290.500000", "-9.500000") == amounts(item)
    open_item(world, item)
    assert {"provider_balance_mismatch:USDTTRC20": (1, "-9.500000")} == await world.summary(
        reason="provider_balance_mismatch"
    )

    status, _ = await world.control(
        "cryptofuse", "balances", {"balances": {"USDTTRC20": {"amount": "300"}}}
    )
    assert 1 == await world.ledger.poll_balances("cryptofuse")
    assert [] == await world.items(reason="provider_balance_mismatch")
    (cleared,) = await world.items("cleared", reason="provider_balance_mismatch")
    assert (item["detected_at"], item["subject_id"]) == (
        cleared["detected_at"],
        cleared["subject_id"],
    )
    cleared_item(cleared)


async def test_provider_balance_mismatch_from_a_payment_engine_balance_webhook(world):
    await fund_payment_engine(world, "REC_fund_pe_bal", "100.00")
    reported = {"accountId": "merchant", "currencyCode": "USD", "availableBalance": "87.65"}
    status, answer = await world.control("payment_engine", "balances", {"balances": [reported]})
    assert (200, [200]) == (status, [d["status"] for d in answer["deliveries"]])

    (item,) = await world.items(reason="provider_balance_mismatch", provider="payment_engine")
    assert ("payment_engine:USD", (None, "100.00", "87.65", "-12.35")) == (
        item["subject_id"],
        amounts(item),
    )
    open_item(world, item)

    # The next report matches the ledger's funds.
    status, answer = await world.control(
        "payment_engine", "balances", {"balances": [reported | {"availableBalance": "100.00"}]}
    )
    assert 200 == status
    assert [] == await world.items(reason="provider_balance_mismatch")
    cleared_item((await world.items("cleared", reason="provider_balance_mismatch"))[0])


async def test_a_provider_balance_agreeing_with_the_journal_is_no_mismatch(world):
    early = await payment_engine_transaction_at_the_provider(world, "REC_early_pe_bal", "100.00")
    await world.scenario("payment_engine", early, "full")  # unmatched, held in suspense
    assert ("100.00", "0.00", "100.00") == (await balances(world, "USD"))[
        "provider:payment_engine:funds"
    ]
    reported = {"accountId": "merchant", "currencyCode": "USD", "availableBalance": "100.00"}
    status, _ = await world.control("payment_engine", "balances", {"balances": [reported]})
    assert 200 == status
    assert [] == await world.items(reason="provider_balance_mismatch")


# ---------------------------------------------------------------- exact amounts in the journal


def lines(entries: list[dict]) -> list[tuple[str, list[tuple[str, str, str]]]]:
    return [
        (e["event_type"], [(p["account"], p["kind"], p["amount"]) for p in e["postings"]])
        for e in entries
    ]


def posted(held: dict[str, tuple[str, str, str]], account: str) -> Decimal:
    """An account's posted balance; an account whose postings netted out may have no row."""
    return Decimal(held[account][0]) if account in held else Decimal(0)


async def test_an_18_decimal_eth_overpayment_is_posted_exactly_and_settled(world):
    payment = await world.pay("payment_engine", "REC_eth", "0.123456789012345678", "ETH")
    assert {"amount": "0.123456789012345678", "currency": "ETH"} == payment["expected"]
    await world.scenario("payment_engine", payment["provider_ref"], "over")  # 150%

    view = await world.payment(payment["payment_id"])
    assert ("0.185185183518518517", "0.061728394506172839") == (
        view["received"],
        view["overpaid"],
    )
    (item,) = (await world.reasons(payment["payment_id"])).values()
    assert (
        "overpaid",
        ("0.123456789012345678", "0.185185183518518517", None, "0.061728394506172839"),
    ) == (item["reason"], amounts(item))
    held = await balances(world, "ETH")
    assert {
        "provider:payment_engine:funds": (
            "0.185185183518518517",
            "0.000000000000000000",
            "0.185185183518518517",
        ),
        "payments:received": (
            "-0.123456789012345678",
            "0.000000000000000000",
            "-0.123456789012345678",
        ),
        "suspense:overpayment": (
            "-0.061728394506172839",
            "0.000000000000000000",
            "-0.061728394506172839",
        ),
    } == held

    await world.settle(payment["payment_id"])

    held = await balances(world, "ETH")
    assert Decimal("0.185185183518518517") == posted(held, "provider:payment_engine:funds")
    assert Decimal("-0.123456789012345678") == posted(held, "merchant:payable")
    assert 0 == posted(held, "payments:received")
    assert Decimal("-0.061728394506172839") == posted(held, "suspense:overpayment")
    entries = await journal(world, subject_id=payment["payment_id"])
    assert [
        (
            "Payment.DepositDetected",
            [
                ("payments:received", "posted", "-0.123456789012345678"),
                ("provider:payment_engine:funds", "posted", "0.185185183518518517"),
                ("suspense:overpayment", "posted", "-0.061728394506172839"),
            ],
        ),
        (
            "Payment.Settled",
            [
                ("merchant:payable", "posted", "-0.123456789012345678"),
                ("payments:received", "posted", "0.123456789012345678"),
            ],
        ),
    ] == lines(entries)
    assert {"payment"} == {e["subject_type"] for e in entries}
    assert {} == await world.reasons(payment["payment_id"])
    assert_balanced(await journal(world))


async def test_a_6_decimal_usdt_payment_in_two_parts_is_posted_exactly(world):
    payment = await world.pay("coincoin", "REC_usdt", "120.50", "USDT")
    await world.scenario("coincoin", payment["provider_ref"], "partial")
    held = await balances(world, "USDT")
    assert {
        "provider:coincoin:funds": ("60.250000", "0.000000", "60.250000"),
        "suspense:underpayment": ("-60.250000", "0.000000", "-60.250000"),
    } == held

    await world.scenario("coincoin", payment["provider_ref"], "full")

    held = await balances(world, "USDT")
    assert ("120.500000", "-120.500000", 0) == (
        held["provider:coincoin:funds"][0],
        held["payments:received"][0],
        posted(held, "suspense:underpayment"),
    )
    assert [
        (
            "Payment.DepositDetected",
            [
                ("provider:coincoin:funds", "posted", "60.250000"),
                ("suspense:underpayment", "posted", "-60.250000"),
            ],
        ),
        (
            "Payment.DepositDetected",
            [
                ("payments:received", "posted", "-120.500000"),
                ("provider:coincoin:funds", "posted", "60.250000"),
                ("suspense:underpayment", "posted", "60.250000"),
            ],
        ),
    ] == lines(await journal(world, subject_id=payment["payment_id"]))
    assert_balanced(await journal(world))


async def test_a_2_decimal_try_payment_settled_and_paid_out_is_posted_exactly(world):
    payment = await fund_lipaykripto(world, "REC_try", "250.00")
    await world.settle(payment["payment_id"])
    withdrawal = await world.withdraw(
        "lipaykripto", "WD_rec_try", "100.00", "TRY", pay_currency="USDT"
    )
    held = await balances(world, "TRY")
    assert ("250.00", "-100.00", "150.00") == held["provider:lipaykripto:funds"]

    await world.withdrawal_scenario("lipaykripto", withdrawal["provider_ref"], "completed")

    view = await world.withdrawal(withdrawal["withdrawal_id"])
    assert ("completed", "100.00", "0.00", "0.00") == (
        view["status"],
        view["sent"],
        view["fee"],
        view["reserved"],
    )
    held = await balances(world, "TRY")
    assert ("150.00", "0.00", "150.00") == held["provider:lipaykripto:funds"]
    assert Decimal("-150.00") == posted(held, "merchant:payable")
    assert 0 == posted(held, "payments:received")
    assert [
        (
            "Payment.DepositDetected",
            [
                ("payments:received", "posted", "-250.00"),
                ("provider:lipaykripto:funds", "posted", "250.00"),
            ],
        ),
        (
            "Payment.Settled",
            [("merchant:payable", "posted", "-250.00"), ("payments:received", "posted", "250.00")],
        ),
    ] == lines(await journal(world, subject_id=payment["payment_id"]))
    assert [
        (
            "Withdrawal.Requested",
            [
                ("provider:lipaykripto:funds", "reserved", "-100.00"),
                ("withdrawals:in_flight", "pending", "100.00"),
            ],
        ),
        (
            "Withdrawal.Completed",
            [
                ("merchant:payable", "posted", "100.00"),
                ("provider:lipaykripto:funds", "posted", "-100.00"),
                ("provider:lipaykripto:funds", "reserved", "100.00"),
                ("withdrawals:in_flight", "pending", "-100.00"),
            ],
        ),
    ] == lines(await journal(world, subject_id=withdrawal["withdrawal_id"]))
    assert_balanced(await journal(world))
    assert {} == await world.reasons(withdrawal["withdrawal_id"])


# ---------------------------------------------------------------- summary and filters


async def test_the_summary_counts_and_sums_open_items_per_reason_and_currency(world):
    over = await world.pay("cryptofuse", "REC_sum_over", "100.00", "USD", pay_currency="USDTTRC20")
    await world.scenario("cryptofuse", over["provider_ref"], "over")
    for n in (1, 2):
        partial = await world.pay("coincoin", f"REC_sum_part_{n}", "120.50", "USDT")
        await world.scenario("coincoin", partial["provider_ref"], "partial")
    late = await world.pay("payment_engine", "REC_sum_late", "100.00", "USD")
    await world.scenario("payment_engine", late["provider_ref"], "late")

    # The late payment is one item: its 100.00 is counted once, not three times.
    assert {
        "overpaid:USDTTRC20": (1, "50.000000"),
        "underpaid:USDT": (2, "120.500000"),
        "paid_late:USD": (1, "100.00"),
    } == await world.summary()
    assert {"underpaid:USDT": (2, "120.500000")} == await world.summary(provider="coincoin")
    late_items = {"paid_late:USD": (1, "100.00")}
    assert late_items == await world.summary(currency="USD")
    assert {} == await world.summary(provider="lipaykripto")

    await world.settle(late["payment_id"])
    assert {} == await world.summary(currency="USD")
    assert late_items == await world.summary(currency="USD", state="cleared")
    assert late_items == await world.summary(currency="USD", state="all")
    assert 4 == len(await world.items("all"))

    # Items filter by reason, provider, currency and detection time, and page with a cursor.
    assert 2 == len(await world.items(reason="underpaid", currency="USDT"))
    assert [] == await world.items(reason="underpaid", currency="USD")
    everything = await world.items("all")
    first = min(instant(i["detected_at"]) for i in everything)
    later = [i for i in everything if instant(i["detected_at"]) > first]
    since = (first + timedelta(microseconds=1)).isoformat()
    assert sorted(map(str, later)) == sorted(map(str, await world.items("all", **{"from": since})))
    until = await world.items("all", to=since)
    assert len(everything) == len(later) + len(until)
    pages, params = [], {"state": "all", "limit": "2"}
    while True:
        page = await world.get("/v1/reconciliation/items", **params)
        pages.append(page["items"])
        if page["next_cursor"] is None:
            break
        params["cursor"] = page["next_cursor"]
    assert [2, 2] == [len(p) for p in pages]
    assert [i for p in pages for i in p] == everything


async def test_a_bad_reconciliation_query_is_refused(world):
    """Unreadable (a time without its zone, a foreign cursor) is a 400; readable but not a
    value the parameter takes (an unknown reason or state, a limit of 0) is a 422."""
    for query, expected in (
        ({"reason": "no_such_reason"}, 422),
        ({"state": "closed"}, 422),
        ({"from": "2024-01-01T00:00:00"}, 400),  # no time zone
        ({"to": "yesterday"}, 400),
        ({"limit": "0"}, 422),
        ({"cursor": "not-a-cursor"}, 400),
    ):
        for path in ("/v1/reconciliation/items", "/v1/reconciliation/summary"):
            if path.endswith("summary") and set(query) & {"limit", "cursor"}:
                continue  # the summary does not page
            status, body = await world.ledger.call("GET", path, params=query)
            assert expected == status, (path, query, body)
