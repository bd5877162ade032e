"""Reading your writes (API.md), end to end against the Payment Engine sandbox: a payment that got
its 201 is on the list asked for right after, and a withdrawal's reservation shows in
/v1/balances as soon as its 201 arrived. Nobody catches the projections up by hand here: with the
in-process runner on (it races the request) and off (the request must bring them up itself)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal

import aiohttp
import pytest

from adapters.config import Settings
from adapters.http.app import init_app
from adapters.providers.registry import build_adapters
from adapters.sandbox.fleet import sandbox_fleet
from adapters.storage.postgres_store import PostgresEventStore
from projections.postings import provider_funds
from tests.e2e.harness import FAST_RETRIES, TOKEN, Ledger, free_port, serve
from tests.e2e.ledger_world import Clock, World

PROVIDER = "payment_engine"
FUNDS = provider_funds(PROVIDER)


@asynccontextmanager
async def ledger_before_payment_engine(
    store: PostgresEventStore, *, projections_in_process: bool
) -> AsyncIterator[World]:
    async with sandbox_fleet([PROVIDER]) as fleet:
        port = free_port()
        settings = Settings(
            public_url=f"http://127.0.0.1:{port}",
            api={"tokens": [{"name": "tests", "token": TOKEN, "scopes": ["admin"]}]},
            providers=fleet.provider_tables(),
            expiry_sweep_seconds=0,
            balance_poll_seconds=0,
            projections_worker="in_process" if projections_in_process else "off",
        )
        await fleet.send_webhooks_to(settings)
        adapters = build_adapters(settings.providers)
        for adapter in adapters.values():
            http = getattr(adapter.client, "_http", None) or getattr(adapter.client, "http", None)
            if http is not None and hasattr(http, "policy"):
                http.policy = FAST_RETRIES
        app = init_app(settings, store=store, adapters=adapters)
        async with serve(app, port) as url, aiohttp.ClientSession() as http:
            yield World(Ledger(url, http, store, app), fleet.urls(), Clock())


@pytest.fixture(params=[True, False], ids=["runner-on", "runner-off"])
async def world(request, store) -> AsyncIterator[World]:
    async with ledger_before_payment_engine(store, projections_in_process=request.param) as opened:
        yield opened


async def available(world: World) -> Decimal:
    balances = await world.get("/v1/balances", account=FUNDS, currency="USD")
    return sum((Decimal(b["available"]) for b in balances["items"]), Decimal(0))


async def test_a_created_payment_is_on_the_list_asked_for_right_after_its_201(world):
    missing = []
    for attempt in range(100):
        created = await world.pay(PROVIDER, f"RYW-{attempt}", "10.00", "USD")
        listed = await world.get("/v1/payments", order_id=created["order_id"])
        if [created["payment_id"]] != [p["payment_id"] for p in listed["items"]]:
            missing.append(attempt)
    assert [] == missing


async def test_a_withdrawals_reservation_shows_in_balances_right_after_its_201(world):
    funding = await world.pay(PROVIDER, "RYW-fund", "100.00", "USD")
    await world.scenario(PROVIDER, funding["provider_ref"], "full")
    funded = await available(world)
    assert Decimal("100.00") == funded
    for attempt in range(5):
        withdrawal = await world.withdraw(
            PROVIDER, f"RYW-wd-{attempt}", "10.00", "USD", address="acct_payout_ryw"
        )
        assert Decimal("10.00") == Decimal(withdrawal["reserved"])
        assert funded - (attempt + 1) * Decimal("10.00") == await available(world)
