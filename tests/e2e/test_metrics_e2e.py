"""/metrics: Prometheus text that prometheus-client's own parser reads, moving with the traffic
it counts, and each app counting only its own."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.ledger_world import World, open_world


@pytest.fixture
async def world(store, monkeypatch):
    async with open_world(store, monkeypatch) as opened:
        yield opened


async def scrape(world: World) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample, by name and labels; /metrics needs no token."""
    async with world.ledger.http.get(world.ledger.url + "/metrics") as reply:
        assert 200 == reply.status
        assert reply.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await reply.text()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_the_delivery_counter_moves_when_a_delivery_arrives(world):
    payment = await world.pay("coincoin", "MET_delivery", "120.50", "USDT")
    before = await scrape(world)
    counted = {"provider": "coincoin", "outcome": "received"}
    assert 0 == value(before, "ledger_webhook_deliveries_total", **counted)
    assert 0 == value(before, "ledger_deliveries_applied_total", outcome="accepted")

    sent = await world.scenario("coincoin", payment["provider_ref"], "partial")

    after = await scrape(world)
    assert sent, "the scenario delivered nothing"
    assert len(sent) == value(after, "ledger_webhook_deliveries_total", **counted)
    # Once applied, each counts as applied to its payment, its lag from receipt observed.
    await world.ledger.applied()
    applied = await scrape(world)
    assert len(sent) == value(applied, "ledger_deliveries_applied_total", outcome="accepted")
    assert len(sent) == value(applied, "ledger_applier_lag_seconds_count")


async def test_metrics_count_appends_requests_provider_calls_projections_and_open_items(world):
    payment = await world.pay("coincoin", "MET_everything", "120.50", "USDT")
    await world.scenario("coincoin", payment["provider_ref"], "partial")
    await world.ledger.caught_up()

    samples = await scrape(world)

    assert value(samples, "ledger_event_store_append_seconds_count") >= 2
    assert value(samples, "ledger_event_store_append_batch_events_sum") >= 2
    route = {"method": "POST", "route": "/v1/payments", "status": "201"}
    assert 1 == value(samples, "ledger_http_requests_total", **route)
    timed = {"method": "POST", "route": "/v1/payments"}
    assert 1 == value(samples, "ledger_http_request_seconds_count", **timed)
    call = {"provider": "coincoin", "operation": "create_payment", "outcome": "2xx"}
    assert 1 == value(samples, "ledger_provider_calls_total", **call)
    latency = {"provider": "coincoin", "operation": "create_payment"}
    assert 1 == value(samples, "ledger_provider_call_seconds_count", **latency)
    assert 1 == value(samples, "ledger_reconciliation_open_items", reason="underpaid")
    assert 1 == value(samples, "ledger_scrape_database_up")
    lags = {k: v for k, v in samples.items() if k[0] == "ledger_projection_lag_events"}
    assert lags, "no projection reported"
    # Caught up before the scrape; the scrape's own requests append nothing.
    assert {0.0} == set(lags.values())
    positions = [v for k, v in samples.items() if k[0] == "ledger_projection_position"]
    assert all(position > 0 for position in positions)
