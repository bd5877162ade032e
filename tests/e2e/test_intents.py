"""Intent before every provider call, over real HTTP against the sandboxes (API.md "Intent before
every provider call", "Idempotency"): concurrent identical creates reach the provider once, a
refusal releases what the subject held, a lost answer leaves it `submitting`.
"""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from typing import Any

import pytest

from tests.e2e.ledger_world import World, balances, fund_payment_engine, open_world

PE_CREATE = "/api/v1/transactions"  # Payment Engine creates payments and withdrawals alike


@pytest.fixture
async def world(store, monkeypatch):
    async with open_world(store, monkeypatch) as opened:
        yield opened


async def provider_posts(world: World, provider: str, path: str) -> int:
    """How many POSTs to `path` the sandbox has seen (its own request log)."""
    url = f"{world.sandboxes[provider]}/_sandbox/requests"
    async with world.ledger.http.get(url) as reply:
        requests = (await reply.json(content_type=None))["requests"]
    return sum(1 for r in requests if r["path"] == path and r.get("method", "POST") == "POST")


def payment_body(order: str) -> dict[str, Any]:
    return {"provider": "payment_engine", "order_id": order, "amount": "100.00", "currency": "USD"}


def withdrawal_body(request_id: str, amount: str = "40.00") -> dict[str, Any]:
    return {
        "provider": "payment_engine",
        "request_id": request_id,
        "amount": amount,
        "currency": "USD",
        "address": "TIntentWithdrawalAddress0123456",
    }


async def at_once(world: World, path: str, body: Any, copies: int, **headers: str) -> list:
    return await asyncio.gather(
        *(world.ledger.call("POST", path, json=body, headers=headers) for _ in range(copies))
    )


async def available_usd(world: World) -> Decimal:
    return Decimal(
        (await balances(world, "USD")).get("provider:payment_engine:funds", ("0", "0", "0"))[2]
    )


# ---------------------------------------------------------------- concurrent identical creates


async def test_twenty_concurrent_creates_of_one_order_make_one_provider_call(world):
    before = await provider_posts(world, "payment_engine", PE_CREATE)
    replies = await at_once(world, "/v1/payments", payment_body("ORD_twenty_at_once"), 20)
    assert [] == [(s, b) for s, b in replies if s >= 500]
    (created,) = [b for s, b in replies if s == 201]
    refused = [b for s, b in replies if s != 201]
    assert {(409, "payment-already-exists", created["payment_id"])} == {
        (b["status"], b["type"].rsplit("/", 1)[1], b["payment_id"]) for b in refused
    }
    assert 1 == await provider_posts(world, "payment_engine", PE_CREATE) - before
    await world.ledger.caught_up()
    listed = await world.get("/v1/payments", order_id="ORD_twenty_at_once")
    assert [created["payment_id"]] == [p["payment_id"] for p in listed["items"]]


async def test_twenty_concurrent_creates_with_one_idempotency_key_answer_the_same_payment(world):
    before = await provider_posts(world, "payment_engine", PE_CREATE)
    replies = await at_once(
        world, "/v1/payments", payment_body("ORD_one_key"), 20, **{"Idempotency-Key": "k-20"}
    )
    assert [] == [(s, b) for s, b in replies if s >= 500]
    # Each waits for the first answer and replays it (or hears the key is still in progress).
    answered = {b["payment_id"] for s, b in replies if s == 201}
    in_progress = [b for s, b in replies if s == 409]
    assert 1 == len(answered)
    assert all(b["type"].endswith("/idempotency-key-in-progress") for b in in_progress)
    assert 1 == await provider_posts(world, "payment_engine", PE_CREATE) - before


async def test_twenty_concurrent_identical_withdrawals_make_one_provider_call(world):
    await fund_payment_engine(world, "ORD_fund_twenty", "100.00")
    before = await provider_posts(world, "payment_engine", PE_CREATE)
    replies = await at_once(world, "/v1/withdrawals", withdrawal_body("WD_twenty"), 20)
    assert [] == [(s, b) for s, b in replies if s >= 500]
    (created,) = [b for s, b in replies if s == 201]
    assert {created["withdrawal_id"]} == {b["withdrawal_id"] for s, b in replies if s == 409}
    assert 1 == await provider_posts(world, "payment_engine", PE_CREATE) - before
    # One reservation: 100 in, 40 held.
    assert Decimal("60.00") == await available_usd(world)


# ---------------------------------------------------------------- idempotency by canonical JSON


async def test_the_same_json_in_another_spelling_replays_and_another_request_is_409(world):
    body = payment_body("ORD_canonical")
    key = {"Idempotency-Key": "canonical-1", "Content-Type": "application/json"}
    first = json.dumps(body)
    reordered = json.dumps(dict(reversed(list(body.items()))), indent=3)
    status, created = await world.ledger.call("POST", "/v1/payments", data=first, headers=key)
    assert 201 == status, created
    status, replayed = await world.ledger.call("POST", "/v1/payments", data=reordered, headers=key)
    assert (201, created["payment_id"]) == (status, replayed["payment_id"])
    other = json.dumps({**body, "amount": "100.01"})
    status, problem = await world.ledger.call("POST", "/v1/payments", data=other, headers=key)
    assert (409, True) == (status, problem["type"].endswith("/idempotency-key-reused"))


# ---------------------------------------------------------------- refusals and lost answers


async def test_a_refused_withdrawal_releases_its_funds_and_its_request_id(world):
    await fund_payment_engine(world, "ORD_fund_refused", "100.00")
    assert Decimal("100.00") == await available_usd(world)
    fault = {"operation": "create_withdrawal", "statuses": [400]}
    assert 200 == (await world.control("payment_engine", "faults", fault))[0]
    status, problem = await world.ledger.call(
        "POST", "/v1/withdrawals", json=withdrawal_body("WD_refused")
    )
    assert (502, "failed") == (status, problem["withdrawal_status"]), problem
    assert problem["type"].endswith("/provider-refused")
    failed = await world.withdrawal(problem["withdrawal_id"])
    assert ("failed", "0.00") == (failed["status"], failed["reserved"])
    assert Decimal("100.00") == await available_usd(world)
    # The corrected request, under the same request id, goes through.
    status, view = await world.ledger.call(
        "POST", "/v1/withdrawals", json=withdrawal_body("WD_refused", "30.00")
    )
    assert (201, "submitted") == (status, view["status"]), view
    assert view["withdrawal_id"] != problem["withdrawal_id"]
    assert Decimal("70.00") == await available_usd(world)


async def test_a_withdrawal_whose_answer_is_lost_keeps_its_funds_reserved(world):
    await fund_payment_engine(world, "ORD_fund_lost", "100.00")
    # A 500: the provider may have taken it, so nothing may be released (and nothing resent).
    fault = {"operation": "create_withdrawal", "statuses": [500]}
    assert 200 == (await world.control("payment_engine", "faults", fault))[0]
    status, problem = await world.ledger.call(
        "POST", "/v1/withdrawals", json=withdrawal_body("WD_lost")
    )
    assert (504, "submitting") == (status, problem["withdrawal_status"]), problem
    assert problem["type"].endswith("/provider-outcome-unknown")
    assert Decimal("60.00") == await available_usd(world)
    # The same request again never reaches the provider a second time.
    before = await provider_posts(world, "payment_engine", PE_CREATE)
    status, again = await world.ledger.call(
        "POST", "/v1/withdrawals", json=withdrawal_body("WD_lost")
    )
    assert (409, problem["withdrawal_id"]) == (status, again["withdrawal_id"])
    assert before == await provider_posts(world, "payment_engine", PE_CREATE)
    reasons = await world.reasons(problem["withdrawal_id"])
    assert {"provider_outcome_unknown"} == set(reasons)


async def test_a_payment_refused_by_the_provider_frees_its_order_id(world):
    fault = {"operation": "create_payment", "statuses": [422]}
    assert 200 == (await world.control("payment_engine", "faults", fault))[0]
    status, problem = await world.ledger.call(
        "POST", "/v1/payments", json=payment_body("ORD_refused")
    )
    assert (502, "failed") == (status, problem["payment_status"]), problem
    status, view = await world.ledger.call(
        "POST", "/v1/payments", json=payment_body("ORD_refused")
    )
    assert (201, "pending") == (status, view["status"]), view


# ---------------------------------------------------------------- the ledger's own clock


async def test_a_lipaykripto_payment_expires_on_the_ledgers_clock_and_late_funds_are_flagged(
    world,
):
    payment = await world.pay(
        "lipaykripto", "ORD_lpk_expiry", "250.00", "TRY", expires_in_minutes=30
    )
    assert payment["expires_at"] is not None
    world.clock.advance(minutes=31)
    assert 1 == (await world.sweep()).payments_expired
    await world.scenario("lipaykripto", payment["provider_ref"], "full")
    view = await world.payment(payment["payment_id"])
    assert ("expired", True, "250.00") == (view["status"], view["late"], view["received"])


# ---------------------------------------------------------------- answers lost on the way back


async def fault(world: World, provider: str, operation: str, kind: str, **extra: Any) -> None:
    body = {"operation": operation, "kind": kind, **extra}
    assert 200 == (await world.control(provider, "faults", body))[0]


async def test_a_payment_created_but_unanswered_is_found_by_recovery_not_created_twice(world):
    await fault(world, "payment_engine", "create_payment", "drop_after")
    before = await provider_posts(world, "payment_engine", PE_CREATE)
    status, problem = await world.ledger.call(
        "POST", "/v1/payments", json=payment_body("ORD_dropped")
    )
    assert (504, "submitting") == (status, problem["payment_status"]), problem
    # Asking again gets the recorded payment, and no second create.
    status, again = await world.ledger.call(
        "POST", "/v1/payments", json=payment_body("ORD_dropped")
    )
    assert (409, problem["payment_id"]) == (status, again["payment_id"])
    assert 1 == await provider_posts(world, "payment_engine", PE_CREATE) - before
    await world.ledger.caught_up()
    assert 1 == (await world.ledger.recover()).submitted
    view = await world.payment(problem["payment_id"])
    assert ("pending", "100.00") == (view["status"], view["expected"]["amount"]), view
    assert view["provider_ref"]
    assert 1 == await provider_posts(world, "payment_engine", PE_CREATE) - before
    await world.scenario("payment_engine", view["provider_ref"], "full")
    assert "completed" == (await world.payment(problem["payment_id"]))["status"]


async def test_a_withdrawal_never_taken_is_released_by_recovery(world):
    await fund_payment_engine(world, "ORD_fund_never", "100.00")
    await fault(world, "payment_engine", "create_withdrawal", "drop_before")
    status, problem = await world.ledger.call(
        "POST", "/v1/withdrawals", json=withdrawal_body("WD_never")
    )
    assert (504, "submitting") == (status, problem["withdrawal_status"]), problem
    assert Decimal("60.00") == await available_usd(world)
    await world.ledger.caught_up()
    assert 1 == (await world.ledger.recover()).released
    view = await world.withdrawal(problem["withdrawal_id"])
    assert ("failed", "0.00") == (view["status"], view["reserved"])
    assert Decimal("100.00") == await available_usd(world)


async def test_a_timed_out_create_at_a_provider_without_lookup_is_listed_for_a_person(world):
    await fault(world, "lipaykripto", "create_payment", "timeout", seconds=30)
    status, problem = await world.ledger.call(
        "POST",
        "/v1/payments",
        json={
            "provider": "lipaykripto",
            "order_id": "ORD_lpk_lost",
            "amount": "50.00",
            "currency": "TRY",
        },
    )
    assert (504, "submitting") == (status, problem["payment_status"]), problem
    await world.ledger.caught_up()
    assert 1 == (await world.ledger.recover()).unknown
    reasons = await world.reasons(problem["payment_id"])
    assert {"provider_outcome_unknown"} == set(reasons)
