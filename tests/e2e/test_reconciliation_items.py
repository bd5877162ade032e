"""Reconciliation items finance can act on, through the provider sandboxes: the same cells in the
API's JSON and CSV as the one renderer gives, the merchant's and the provider's references on
every item, the provider's word on underpaid and overpaid items, one item for a late payment,
and settlement shown on the payment view."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from adapters.storage.read_models.items import ITEM_COLUMNS, ReconciliationItem, item_cells
from adapters.storage.read_models.readers import reconciliation_items_all
from tests.e2e.ledger_world import amounts, instant, open_world


@pytest.fixture
async def world(store, monkeypatch):
    async with open_world(store, monkeypatch) as opened:
        yield opened


async def _three_findings(world) -> dict[str, dict]:
    """An underpaid (CoinCoin), an overpaid (Cryptofuse) and a late payment (Payment Engine)."""
    under = await world.pay("coincoin", "ITEMS_under", "120.50", "USDT")
    await world.scenario("coincoin", under["provider_ref"], "partial")
    over = await world.pay("cryptofuse", "ITEMS_over", "100.00", "USD", pay_currency="USDTTRC20")
    await world.scenario("cryptofuse", over["provider_ref"], "over")
    late = await world.pay("payment_engine", "ITEMS_late", "100.00", "USD")
    await world.scenario("payment_engine", late["provider_ref"], "late")
    return {"underpaid": under, "overpaid": over, "paid_late": late}


async def test_json_and_csv_items_agree_line_for_line_with_the_renderer(world):
    await _three_findings(world)
    items = await world.items("all")

    status, text = await world.ledger.call(
        "GET", "/v1/reconciliation/items", params={"state": "all", "format": "csv"}
    )
    assert 200 == status, text
    header, *rows = list(csv.reader(io.StringIO(text)))
    assert list(ITEM_COLUMNS) == header
    assert [[item[c] or "" for c in ITEM_COLUMNS] for item in items] == rows
    # The JSON has exactly the renderer's cells, in its order, for the rows as stored.
    assert all(list(ITEM_COLUMNS) == list(item) for item in items)
    stored = await reconciliation_items_all(
        world.ledger.store.pool, reason=None, provider=None, include_cleared=True
    )
    rendered = {
        (c["subject_id"], c["reason"], c["detected_at"]): c
        for c in (item_cells(ReconciliationItem.from_row(row)) for row in stored)
    }
    assert rendered == {(i["subject_id"], i["reason"], i["detected_at"]): i for i in items}


async def test_amounts_are_at_the_currencys_scale_and_times_end_in_z(world):
    await _three_findings(world)
    for item in await world.items("all"):
        decimals = {"USDT": 6, "USDTTRC20": 6, "USD": 2}[item["currency"]]
        for column in ("expected", "received", "provider_reported", "difference"):
            if item[column] is not None:
                assert decimals == len(item[column].split(".")[1]), (column, item)
        assert item["detected_at"].endswith("Z"), item
        instant(item["detected_at"])


async def test_every_item_carries_the_order_id_and_the_provider_reference(world):
    payments = await _three_findings(world)
    items = {item["reason"]: item for item in await world.items()}
    for reason, payment in payments.items():
        assert (payment["order_id"], payment["provider_ref"]) == (
            items[reason]["order_id"],
            items[reason]["provider_ref"],
        )
        assert payment["provider_ref"]


async def test_underpaid_and_overpaid_items_carry_the_providers_word(world):
    payments = await _three_findings(world)
    items = {item["reason"]: item for item in await world.items()}
    # CoinCoin's running total and Cryptofuse's paid amount: three sides, not two.
    assert ("120.500000", "60.250000", "60.250000", "60.250000") == amounts(items["underpaid"])
    assert ("100.000000", "150.000000", "150.000000", "50.000000") == amounts(items["overpaid"])
    for reason in ("underpaid", "overpaid"):
        view = await world.payment(payments[reason]["payment_id"])
        assert view["provider_status"] == items[reason]["provider_status"], reason
        assert items[reason]["provider_status"]


async def test_a_late_payment_is_one_item_and_the_summary_says_how_it_counts(world):
    late = await world.pay("payment_engine", "ITEMS_one_late", "100.00", "USD")
    await world.scenario("payment_engine", late["provider_ref"], "late")

    view = await world.payment(late["payment_id"])
    assert ("expired", True, "COMPLETED") == (view["status"], view["late"], view["provider_status"])
    (item,) = (await world.reasons(late["payment_id"])).values()
    assert ("paid_late", ("100.00", "100.00", None, "100.00"), "COMPLETED") == (
        item["reason"],
        amounts(item),
        item["provider_status"],
    )
    summary = await world.get("/v1/reconciliation/summary", currency="USD")
    assert [("paid_late", 1, "100.00")] == [
        (r["reason"], r["items"], r["difference"]) for r in summary["items"]
    ]
    assert "a late payment is one paid_late item" in summary["counting"]


async def test_the_payment_view_shows_settlement(world):
    payment = await world.pay(
        "cryptofuse", "ITEMS_settle", "100.00", "USD", pay_currency="USDTTRC20"
    )
    await world.scenario("cryptofuse", payment["provider_ref"], "full")
    before = await world.payment(payment["payment_id"])
    assert (False, None) == (before["settled"], before["settled_at"])

    settled = await world.settle(payment["payment_id"])
    after = await world.payment(payment["payment_id"])
    assert (True, settled["settled_at"]) == (after["settled"], after["settled_at"])
    assert world.started <= instant(after["settled_at"])
    listed = await world.get("/v1/payments", order_id="ITEMS_settle")
    assert [after["settled_at"]] == [p["settled_at"] for p in listed["items"]]


@pytest.mark.parametrize(
    "params",
    [{"reason": "nope"}, {"provider": "paypal"}, {"format": "xlsx"}],
)
async def test_an_unknown_reason_provider_or_format_is_refused(world, params):
    for path in ("/v1/reconciliation/items", "/v1/reconciliation/summary"):
        if "format" in params and path.endswith("summary"):
            continue
        status, problem = await world.ledger.call("GET", path, params=params)
        # API.md: a value outside what a parameter takes is a 422 naming what it takes.
        assert (422, "parameter-value-not-allowed") == (status, problem["type"].rsplit("/")[-1])


def test_the_renderer_keeps_each_currencys_scale_and_writes_times_in_z():
    """Sums of NUMERIC drop trailing zeros and 0E-8 must read as zero at scale; a figure finer
    than the scale, or in a currency the ledger does not know, is shown whole, never rounded."""
    detected = datetime(2026, 1, 2, 3, 4, 5, 600000, tzinfo=timezone(timedelta(hours=2)))
    row = {
        "subject_type": "payment",
        "subject_id": "p1",
        "reason": "underpaid",
        "provider": "coinpay",
        "currency": "ETH",
        "expected": Decimal(1),
        "received": Decimal("0E-8"),
        "provider_reported": Decimal("0.1234567890123456789"),
        "provider_status": "partial",
        "difference": Decimal("1.5"),
        "order_id": "o1",
        "provider_ref": "r1",
        "detected_at": detected,
        "detected_position": 1,
        "updated_position": 1,
        "cleared_at": None,
        "cleared_position": None,
    }
    cells = item_cells(ReconciliationItem.from_row(row))
    assert (
        "1.000000000000000000",
        "0.000000000000000000",
        "0.1234567890123456789",
        "1.500000000000000000",
        "2026-01-02T01:04:05.600000Z",
        None,
        "open",
    ) == tuple(
        cells[c]
        for c in (
            "expected",
            "received",
            "provider_reported",
            "difference",
            "detected_at",
            "cleared_at",
            "state",
        )
    )
    unknown = item_cells(ReconciliationItem.from_row(row | {"currency": "XYZ"}))
    assert "1.5" == unknown["difference"]
