"""Finance's and internal services' lists end to end: `GET /v1/payments` and `/v1/withdrawals` with
every filter and keyset pagination, `/v1/journal` and `/v1/balances` filters and pages, and
`/v1/projections`, over payments and withdrawals driven through four provider sandboxes.

Lists read the projections' tables, so each test catches the projections up before it reads.
"""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import UTC, datetime

import pytest

from tests.e2e.ledger_world import (
    World,
    assert_balanced,
    fund_lipaykripto,
    fund_payment_engine,
    instant,
    journal,
    open_world,
)


@pytest.fixture
async def world(store, monkeypatch):
    async with open_world(store, monkeypatch) as opened:
        yield opened


async def every_page(world: World, path: str, limit: int, **filters: str) -> list[list[dict]]:
    """Each page of a list, following next_cursor to the end."""
    await world.ledger.caught_up()
    pages: list[list[dict]] = []
    params = {"limit": str(limit), **filters}
    while True:
        page = await world.get(path, **params)
        assert len(page["items"]) <= limit
        pages.append(page["items"])
        if page["next_cursor"] is None:
            return pages
        params["cursor"] = page["next_cursor"]


async def ids(world: World, path: str, key: str, **filters: str) -> set[str]:
    pages = await every_page(world, path, 500, **filters)
    found = [item[key] for page in pages for item in page]
    assert len(found) == len(set(found))
    return set(found)


async def a_moment_passes() -> datetime:
    """An instant strictly between what was created before and what is created after it."""
    await asyncio.sleep(0.01)
    moment = datetime.now(UTC)
    await asyncio.sleep(0.01)
    return moment


@pytest.fixture
async def payments(world):
    """Seven payments at three providers in every state, created in two batches around `middle`.

    Returns (name -> payment view at creation, middle).
    """
    made: dict[str, dict] = {}

    async def make(name, provider, amount, currency, scenario=None, **extra):
        view = await world.pay(provider, f"Q_{name}", amount, currency, **extra)
        if scenario:
            await world.scenario(provider, view["provider_ref"], scenario)
        made[name] = view

    await make("pe_full", "payment_engine", "100.00", "USD", "full")
    await make("pe_partial", "payment_engine", "100.00", "USD", "partial")
    await make("pe_over", "payment_engine", "100.00", "USD", "over")
    await make("pe_waiting", "payment_engine", "100.00", "USD")
    middle = await a_moment_passes()
    await make("lpk_full", "lipaykripto", "250.00", "TRY", "full")
    await make("lpk_failed", "lipaykripto", "250.00", "TRY", "fail")
    await make("cc_expired", "coincoin", "120.50", "USDT", expires_in_minutes=60)
    world.clock.advance(minutes=61)
    assert 1 == (await world.sweep()).payments_expired
    return made, middle


async def test_payments_filter_by_provider_status_coverage_order_ref_and_creation_time(
    world, payments
):
    made, middle = payments
    payment_id = {name: view["payment_id"] for name, view in made.items()}

    async def named(**filters: str) -> set[str]:
        found = await ids(world, "/v1/payments", "payment_id", **filters)
        return {name for name, pid in payment_id.items() if pid in found} | (
            {"?"} if found - set(payment_id.values()) else set()
        )

    assert set(made) == await named()
    assert {"pe_full", "pe_partial", "pe_over", "pe_waiting"} == await named(
        provider="payment_engine"
    )
    assert {"lpk_full", "lpk_failed"} == await named(provider="lipaykripto")
    assert set() == await named(provider="cryptofuse")
    assert {"pe_full", "pe_over", "lpk_full"} == await named(status="completed")
    assert {"pe_partial", "pe_waiting"} == await named(status="pending")
    assert {"lpk_failed"} == await named(status="failed")
    assert {"cc_expired"} == await named(status="expired")
    assert {"pe_partial"} == await named(coverage="partial")
    assert {"pe_over"} == await named(coverage="over")
    assert {"pe_waiting", "lpk_failed", "cc_expired"} == await named(coverage="unpaid")
    assert {"pe_full"} == await named(provider="payment_engine", coverage="exact")
    assert set() == await named(provider="payment_engine", status="failed")
    assert {"pe_partial"} == await named(order_id="Q_pe_partial")
    assert set() == await named(order_id="Q_nobody")
    assert {"pe_over"} == await named(provider_ref=made["pe_over"]["provider_ref"])
    assert {"lpk_full"} == await named(provider_ref=made["lpk_full"]["provider_ref"])
    after, before = {"created_from": middle.isoformat()}, {"created_to": middle.isoformat()}
    assert {"lpk_full", "lpk_failed", "cc_expired"} == await named(**after)
    assert {"pe_full", "pe_partial", "pe_over", "pe_waiting"} == await named(**before)
    assert {"lpk_failed"} == await named(status="failed", **after)
    assert set() == await named(status="failed", **before)
    first = instant(made["pe_full"]["created_at"])
    assert set() == await named(created_to=first.isoformat())  # the bound is exclusive
    assert set(made) == await named(created_from=first.isoformat())  # and this one inclusive
    zulu = middle.isoformat().replace("+00:00", "Z")
    assert {"lpk_full", "lpk_failed", "cc_expired"} == await named(created_from=zulu)

    # Each listed item is the payment's own view, as of its latest event.
    listed = (await world.get("/v1/payments", limit="500"))["items"]
    for item in listed:
        assert await world.payment(item["payment_id"]) == item
    views = {item["order_id"]: item for item in listed}
    assert ("completed", "over", "150.00") == (
        views["Q_pe_over"]["status"],
        views["Q_pe_over"]["coverage"],
        views["Q_pe_over"]["received"],
    )
    assert ("expired", "0.000000") == (
        views["Q_cc_expired"]["status"],
        views["Q_cc_expired"]["received"],
    )


async def test_payment_pages_cover_every_payment_once_newest_first(world, payments):
    made, _ = payments
    for limit in (1, 2, 3, 7, 500):
        pages = await every_page(world, "/v1/payments", limit)
        items = [item for page in pages for item in page]
        assert len(pages) == max(1, -(-len(made) // limit)), limit
        assert all(len(page) == limit for page in pages[:-1]), limit
        # Every payment exactly once, newest first.
        assert [v["order_id"] for v in made.values()][::-1] == [i["order_id"] for i in items]
        keys = [(instant(i["created_at"]), i["payment_id"]) for i in items]
        assert keys == sorted(keys, reverse=True)


async def test_filtered_payment_pages_stay_within_the_filter(world, payments):
    made, _ = payments
    pages = await every_page(world, "/v1/payments", 1, provider="payment_engine")
    assert 4 == len(pages)
    assert ["Q_pe_waiting", "Q_pe_over", "Q_pe_partial", "Q_pe_full"] == [
        page[0]["order_id"] for page in pages
    ]
    pages = await every_page(world, "/v1/payments", 2, coverage="unpaid")
    assert [2, 1] == [len(page) for page in pages]
    # A cursor keeps its place when newer payments arrive: nothing is seen twice or skipped.
    first = await world.get("/v1/payments", limit="3")
    await world.pay("payment_engine", "Q_newer", "10.00", "USD")
    await world.ledger.caught_up()
    rest = await every_page(world, "/v1/payments", 3, cursor=first["next_cursor"])
    seen = [i["payment_id"] for i in first["items"]] + [i["payment_id"] for p in rest for i in p]
    assert sorted(seen) == sorted(v["payment_id"] for v in made.values())


def _cursor(*parts: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(parts).encode()).decode().rstrip("=")


# A value that cannot be read as its type is a 400; one read but out of range, a 422 (API.md).
BAD_LIST_QUERIES = [
    ({"limit": "0"}, 422),
    ({"limit": "501"}, 422),
    ({"limit": "-1"}, 422),
    ({"limit": "ten"}, 400),
    ({"limit": ""}, 400),
    ({"cursor": "not a cursor"}, 400),
    ({"cursor": _cursor("2024-01-01T00:00:00+00:00")}, 400),  # one part, two expected
    ({"cursor": _cursor("yesterday", "00000000-0000-0000-0000-000000000000")}, 400),
    ({"cursor": _cursor("2024-01-01T00:00:00+00:00", "not-a-uuid")}, 400),
    ({"cursor": base64.urlsafe_b64encode(b'{"a": 1}').decode()}, 400),
    ({"created_from": "2024-01-01T00:00:00"}, 400),  # no time zone
    ({"created_to": "last tuesday"}, 400),
]


async def test_a_bad_cursor_limit_or_time_is_refused(world):
    for path in ("/v1/payments", "/v1/withdrawals"):
        for query, expected in BAD_LIST_QUERIES:
            status, body = await world.ledger.call("GET", path, params=query)
            assert expected == status, (path, query, body)


async def test_a_cursor_from_another_list_is_refused_or_harmless(world):
    """The journal's cursor (one position) is not a payments cursor."""
    status, _ = await world.ledger.call("GET", "/v1/payments", params={"cursor": _cursor(5)})
    assert 400 == status
    status, _ = await world.ledger.call("GET", "/v1/journal", params={"cursor": _cursor("x")})
    assert 400 == status


@pytest.fixture
async def withdrawals(world):
    """Six withdrawals at two providers: (name -> view at creation, middle instant)."""
    await fund_payment_engine(world, "Q_fund_pe", "1000.00")
    await fund_lipaykripto(world, "Q_fund_lpk", "1000.00")
    made: dict[str, dict] = {}

    async def make(name, provider, amount, currency, scenario=None, **extra):
        view = await world.withdraw(provider, f"WQ_{name}", amount, currency, **extra)
        if scenario:
            await world.withdrawal_scenario(provider, view["provider_ref"], scenario)
        made[name] = view

    await make("pe_done", "payment_engine", "10.00", "USD", "completed")
    await make("pe_failed", "payment_engine", "20.00", "USD", "failed")
    await make("pe_moving", "payment_engine", "30.00", "USD", "processing", customer_id="c-7")
    middle = await a_moment_passes()
    await make("pe_sent", "payment_engine", "40.00", "USD")
    lpk = {"pay_currency": "USDT"}
    await make("lpk_review", "lipaykripto", "50.00", "TRY", "manual_review", **lpk)
    await make("lpk_sent", "lipaykripto", "60.00", "TRY", customer_id="c-7", **lpk)
    return made, middle


async def test_withdrawals_filter_by_provider_status_request_ref_customer_and_time(
    world, withdrawals
):
    made, middle = withdrawals
    withdrawal_id = {name: view["withdrawal_id"] for name, view in made.items()}

    async def named(**filters: str) -> set[str]:
        found = await ids(world, "/v1/withdrawals", "withdrawal_id", **filters)
        assert found <= set(withdrawal_id.values())
        return {name for name, wid in withdrawal_id.items() if wid in found}

    assert set(made) == await named()
    assert {"pe_done", "pe_failed", "pe_moving", "pe_sent"} == await named(
        provider="payment_engine"
    )
    assert {"lpk_review", "lpk_sent"} == await named(provider="lipaykripto")
    assert {"pe_done"} == await named(status="completed")
    assert {"pe_failed"} == await named(status="failed")
    assert {"pe_moving"} == await named(status="processing")
    assert {"lpk_review"} == await named(status="manual_review")
    assert {"pe_sent", "lpk_sent"} == await named(status="submitted")
    assert {"lpk_sent"} == await named(provider="lipaykripto", status="submitted")
    assert {"pe_failed"} == await named(request_id="WQ_pe_failed")
    assert {"lpk_review"} == await named(provider_ref=made["lpk_review"]["provider_ref"])
    assert {"pe_moving", "lpk_sent"} == await named(customer_id="c-7")
    assert set() == await named(customer_id="c-8")
    after, before = {"created_from": middle.isoformat()}, {"created_to": middle.isoformat()}
    assert {"pe_sent", "lpk_review", "lpk_sent"} == await named(**after)
    assert {"pe_done", "pe_failed", "pe_moving"} == await named(**before)
    assert {"pe_sent"} == await named(provider="payment_engine", **after)

    listed = (await world.get("/v1/withdrawals", limit="500"))["items"]
    for item in listed:
        assert await world.withdrawal(item["withdrawal_id"]) == item
    views = {item["request_id"]: item for item in listed}
    assert ("completed", "10.00", "0.00") == (
        views["WQ_pe_done"]["status"],
        views["WQ_pe_done"]["sent"],
        views["WQ_pe_done"]["reserved"],
    )
    assert ("manual_review", "50.00") == (
        views["WQ_lpk_review"]["status"],
        views["WQ_lpk_review"]["reserved"],
    )


async def test_withdrawal_pages_cover_every_withdrawal_once_newest_first(world, withdrawals):
    made, _ = withdrawals
    for limit in (1, 4, 6):
        pages = await every_page(world, "/v1/withdrawals", limit)
        items = [item for page in pages for item in page]
        assert [v["request_id"] for v in made.values()][::-1] == [i["request_id"] for i in items]
        assert len(pages) == -(-len(made) // limit), limit
    pages = await every_page(world, "/v1/withdrawals", 1, provider="lipaykripto")
    assert [["WQ_lpk_sent"], ["WQ_lpk_review"]] == [[i["request_id"] for i in p] for p in pages]


async def test_journal_pages_and_filters_and_balances_filters(world, withdrawals):
    entries = await journal(world)
    assert_balanced(entries)
    positions = [e["position"] for e in entries]
    assert positions == sorted(positions)
    assert len(set(positions)) == len(positions)
    assert all(e["entry_id"] == f"0:{e['position']}" for e in entries)
    pages = await every_page(world, "/v1/journal", 3)
    assert entries == [e for page in pages for e in page]
    assert all(len(page) == 3 for page in pages[:-1])

    try_entries = await journal(world, currency="TRY")
    assert try_entries
    assert all(any(p["currency"] == "TRY" for p in e["postings"]) for e in try_entries)
    assert {e["position"] for e in try_entries} == {
        e["position"] for e in entries if any(p["currency"] == "TRY" for p in e["postings"])
    }
    in_flight = await journal(world, account="withdrawals:in_flight")
    assert all(
        any(p["account"] == "withdrawals:in_flight" for p in e["postings"]) for e in in_flight
    )
    # Six requests, one completion and one failure touch the in-flight account.
    assert 8 == len(in_flight)
    assert {"lipaykripto"} == {e["provider"] for e in await journal(world, provider="lipaykripto")}
    subject = withdrawals[0]["pe_done"]["withdrawal_id"]
    assert ["Withdrawal.Requested", "Withdrawal.Completed"] == [
        e["event_type"] for e in await journal(world, subject_id=subject)
    ]

    everything = (await world.get("/v1/balances"))["items"]
    assert {"USD", "TRY"} == {b["currency"] for b in everything}
    usd = (await world.get("/v1/balances", currency="USD"))["items"]
    assert [b for b in everything if b["currency"] == "USD"] == usd
    (funds,) = (await world.get("/v1/balances", account="provider:lipaykripto:funds"))["items"]
    # 1000.00 in, 50.00 and 60.00 reserved by the open withdrawals.
    assert ("TRY", "1000.00", "-110.00", "890.00") == (
        funds["currency"],
        funds["posted"],
        funds["pending"],
        funds["available"],
    )
    assert [] == (await world.get("/v1/balances", account="nobody", currency="USD"))["items"]


async def test_projections_report_positions_and_no_lag_once_caught_up(world, payments):
    await world.ledger.caught_up()
    status = (await world.get("/v1/projections"))["items"]
    assert {"subjects", "journal", "reconciliation"} == {p["name"] for p in status}
    head = (await world.ledger.store.head()).position
    for projection in status:
        assert (0, head, head, 0) == (
            projection["partition"],
            projection["position"],
            projection["head"],
            projection["lag"],
        )
        assert (None, None) == (projection["failed_position"], projection["failure"])
        assert instant(projection["updated_at"]) <= datetime.now(UTC)

    # New events: the head moves on; after catching up every projection is there again.
    await world.pay("payment_engine", "Q_after", "10.00", "USD")
    await world.ledger.caught_up()
    status = (await world.get("/v1/projections"))["items"]
    assert {0} == {p["lag"] for p in status}
    assert all(p["position"] > head for p in status)
