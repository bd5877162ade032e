"""Provider faults on every outbound call, for every provider that makes it (issue 14, item 5).

Each sandbox is told (`/_sandbox/faults`, adapters/sandbox/faults.py) to answer its next call of
one operation with a 500, to hold it unanswered past the ledger's timeout, to drop the
connection before or after doing the work, or to do the work and answer after 10 s; the
ledger's provider timeout is 1 s here, so that answer is a timeout too. Then:

- the caller hears 504 `provider-outcome-unknown` naming a subject left `submitting`, and the
  provider saw exactly one create per subject (none resent after an ambiguous failure);
- every provider-side object has a ledger subject: the creates the provider carried out are
  counted in its request log and matched against the ledger's subjects, before recovery and
  after (where the provider offers a lookup by our id, recovery finds exactly those and fails
  the rest; where it offers none, every subject stays listed as `provider_outcome_unknown`);
- a withdrawal's reservation is kept while the outcome is unknown, and released exactly when
  recovery learns the provider holds nothing (available balance read through the API);
- every call is recorded: each of the provider's calls appears as a ProviderExchangeRecorded of
  the subject in the audit export.

The status queries are faulted the same way: the recovery lookups by our id (CoinPay and
Payment Engine payments, Payment Engine withdrawals) and the query about a delivery the ledger
could not authenticate (CoinPay, Cryptofuse, Payment Engine): a failed query leaves the subject
as it was, no money moved, and the next pass asks again and resolves it.

test_intents.py covers these for Payment Engine and LiPayKripto one fault at a time; this file
covers every fault kind at every provider that makes the call.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import pytest

from adapters.http.app import init_app
from adapters.providers.http_client import RetryPolicy
from adapters.providers.registry import build_adapters
from adapters.services.provider_queries import ProviderQueries
from adapters.services.query_schedule import QueryPolicy
from tests.e2e import webhook_kit
from tests.e2e.webhook_kit import PRICES, Captured, Rig, order_id

# One second of patience, so that a sandbox answering after 10 s is a timeout; one attempt, so
# that a lookup the sandbox faults once has failed (the clients' own tests cover their retries).
PATIENT_ONE_SECOND = RetryPolicy(
    attempts=1, base_delay_seconds=0.01, max_delay_seconds=0.02, timeout_seconds=1.0
)
FAULTS: dict[str, dict[str, Any]] = {
    "answers_500": {"kind": "status", "status": 500},
    "times_out": {"kind": "timeout", "seconds": 30},
    "drops_before": {"kind": "drop_before"},
    "drops_after": {"kind": "drop_after"},
    "answers_after_10s": {"kind": "delay_after", "seconds": 10},
}
# The kinds whose work the provider carried out: it holds an object for each.
DOES_THE_WORK = {"drop_after", "delay_after"}
# Where recovery can ask the provider by our id (docs/edges.md, "How a submitting subject ends").
PAYMENT_LOOKUP = {"coinpay", "payment_engine"}
WITHDRAWAL_LOOKUP = {"payment_engine"}
WITHDRAWING = ("coinpay", "cryptofuse", "payment_engine", "lipaykripto")
WITHDRAWAL = {
    "coinpay": ("10.00", "USDT", {}),
    "cryptofuse": ("10.00", "USDTTRC20", {}),
    "payment_engine": ("10.00", "USD", {}),
    "lipaykripto": ("10.00", "TRY", {"pay_currency": "USDT"}),
}
ADDRESS = "TFaultWithdrawalAddress01234567"


@asynccontextmanager
async def opened(store, monkeypatch, provider: str) -> AsyncIterator[Rig]:
    """webhook_kit's rig for one provider, with a one-second provider timeout and its app kept
    on the ledger, so that `caught_up`, `recover` and the rest work."""
    made: list[Any] = []

    def keep(*args: Any, **kwargs: Any) -> Any:
        made.append(init_app(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(webhook_kit, "init_app", keep)
    monkeypatch.setattr(webhook_kit, "FAST_RETRIES", PATIENT_ONE_SECOND)
    async with webhook_kit.rig(store, (provider,)) as bench:
        bench.ledger.app = made[-1]
        yield bench


async def fault(bench: Rig, provider: str, operation: str, kind: dict[str, Any], times: int = 1):
    body = {"operation": operation, **kind, "times": times}
    status, answer = await bench.sandbox(provider, "/_sandbox/faults", body)
    assert 200 == status, answer


async def provider_calls(bench: Rig, provider: str, operation: str) -> list[str | None]:
    """The fault each call of `operation` met, in order (None: answered normally)."""
    url = f"{bench.sandbox_urls[provider]}/_sandbox/requests?operation={operation}"
    async with bench.ledger.http.get(url) as reply:
        return [r.get("fault") for r in (await reply.json(content_type=None))["requests"]]


async def exchanges(bench: Rig, stream: str) -> list[tuple[str, int | None]]:
    """(operation, status) of every provider call recorded in the subject's stream, read from
    the audit export (the log as an auditor gets it)."""
    status, text = await bench.ledger.call(
        "GET", "/v1/audit/events", params={"stream": stream, "format": "jsonl"}
    )
    assert 200 == status, text
    lines = text if isinstance(text, list) else str(text).splitlines()
    rows = [json.loads(line) if isinstance(line, str) else line for line in lines if line]
    found = []
    for row in rows:
        if row["type"].endswith("ProviderExchangeRecorded"):
            payload = row["payload"]
            payload = json.loads(payload) if isinstance(payload, str) else payload
            found.append((payload["exchange"]["operation"], payload["exchange"]["status"]))
    return found


async def get(bench: Rig, path: str, **params: str) -> Any:
    await bench.ledger.caught_up()
    status, body = await bench.ledger.call("GET", path, params=params)
    assert 200 == status, body
    return body


async def available(bench: Rig, provider: str, currency: str) -> Decimal:
    items = (await get(bench, "/v1/balances", currency=currency))["items"]
    funds = {i["account"]: i["available"] for i in items}
    return Decimal(funds.get(f"provider:{provider}:funds", "0"))


async def open_reasons(bench: Rig, subject_id: str) -> set[str]:
    items = (await get(bench, "/v1/reconciliation/items", limit="500"))["items"]
    return {i["reason"] for i in items if i["subject_id"] == subject_id}


def assert_outcome_unknown(status: int, problem: dict[str, Any], status_field: str) -> None:
    assert (504, "submitting") == (status, problem.get(status_field)), problem
    assert problem["type"].endswith("/provider-outcome-unknown"), problem


# ---------------------------------------------------------------- create payment


async def create_payment(bench: Rig, provider: str) -> tuple[int, dict[str, Any]]:
    amount, currency = PRICES[provider]
    body = {"provider": provider, "order_id": order_id(), "amount": amount, "currency": currency}
    return await bench.ledger.call("POST", "/v1/payments", json=body)


@pytest.mark.parametrize("provider", webhook_kit.PROVIDERS)
async def test_every_fault_on_create_payment_leaves_one_held_subject_per_provider_call(
    store, monkeypatch, provider
):
    async with opened(store, monkeypatch, provider) as bench:
        await bench.create_payment(provider)  # logged in: only the faults differ from here on
        for kind in FAULTS.values():
            await fault(bench, provider, "create_payment", kind)
        # All at once: each create meets the next queued fault.
        replies = await asyncio.gather(*(create_payment(bench, provider) for _ in FAULTS))
        for status, problem in replies:
            assert_outcome_unknown(status, problem, "payment_status")
        ids = [problem["payment_id"] for _, problem in replies]
        calls = await provider_calls(bench, provider, "create_payment")
        # One call per subject, none resent: the healthy first create and one per fault.
        assert sorted(k["kind"] for k in FAULTS.values()) == sorted(calls[1:])
        assert calls[0] is None
        held_by_provider = sum(1 for kind in calls[1:] if kind in DOES_THE_WORK)
        assert 2 == held_by_provider

        listed = await get(bench, "/v1/payments", provider=provider, limit="500")
        statuses = {p["payment_id"]: p["status"] for p in listed["items"]}
        assert {"submitting"} == {statuses[i] for i in ids}
        for payment_id in ids:
            recorded = await exchanges(bench, payment_id)
            assert 1 == sum(1 for operation, _ in recorded if operation == "create_payment")

        await bench.ledger.caught_up()  # recovery reads its candidates from the read models
        result = await bench.ledger.recover()
        await bench.ledger.caught_up()
        views = [await bench.view(i) for i in ids]
        if provider in PAYMENT_LOOKUP:
            # Found exactly what the provider holds; the rest failed (the order id free again).
            assert (held_by_provider, len(FAULTS) - held_by_provider) == (
                result.submitted,
                result.released,
            )
            found = [v for v in views if v["status"] == "pending"]
            assert held_by_provider == len(found)
            assert all(v["provider_ref"] for v in found)
            assert {"pending", "failed"} >= {v["status"] for v in views}
        else:
            assert len(FAULTS) == result.unknown
            assert {"submitting"} == {v["status"] for v in views}
            for payment_id in ids:
                assert "provider_outcome_unknown" in await open_reasons(bench, payment_id)
        # No create was ever sent again, by the ledger or its recovery.
        assert calls == await provider_calls(bench, provider, "create_payment")


# ---------------------------------------------------------------- create withdrawal


async def fund(bench: Rig, provider: str) -> tuple[str, Decimal]:
    """A completed payment at `provider`: (the currency its funds are in, the amount)."""
    payment = await bench.create_payment(provider)
    for delivery in await bench.scenario(provider, payment["provider_ref"], "full"):
        status, reply = await bench.deliver(delivery)
        assert 200 == status, reply
    await bench.ledger.caught_up()
    view = await bench.view(payment["payment_id"])
    assert "completed" == view["status"], view
    return view["expected"]["currency"], Decimal(view["received"])


async def create_withdrawal(bench: Rig, provider: str) -> tuple[int, dict[str, Any]]:
    amount, currency, extra = WITHDRAWAL[provider]
    body = {
        "provider": provider,
        "request_id": order_id("WD"),
        "amount": amount,
        "currency": currency,
        "address": ADDRESS,
        **extra,
    }
    return await bench.ledger.call("POST", "/v1/withdrawals", json=body)


@pytest.mark.parametrize("provider", WITHDRAWING)
async def test_every_fault_on_create_withdrawal_keeps_funds_reserved_until_the_outcome_is_known(
    store, monkeypatch, provider
):
    async with opened(store, monkeypatch, provider) as bench:
        currency, funded = await fund(bench, provider)
        amount = Decimal(WITHDRAWAL[provider][0])
        assert WITHDRAWAL[provider][1] == currency
        assert funded == await available(bench, provider, currency)
        for kind in FAULTS.values():
            await fault(bench, provider, "create_withdrawal", kind)
        replies = await asyncio.gather(*(create_withdrawal(bench, provider) for _ in FAULTS))
        for status, problem in replies:
            assert_outcome_unknown(status, problem, "withdrawal_status")
        ids = [problem["withdrawal_id"] for _, problem in replies]
        calls = await provider_calls(bench, provider, "create_withdrawal")
        assert sorted(k["kind"] for k in FAULTS.values()) == sorted(calls)
        held_by_provider = sum(1 for kind in calls if kind in DOES_THE_WORK)
        # The provider may be paying any of them out: every reservation is kept.
        assert funded - len(FAULTS) * amount == await available(bench, provider, currency)
        for withdrawal_id in ids:
            view = await get(bench, f"/v1/withdrawals/{withdrawal_id}")
            assert ("submitting", amount) == (view["status"], Decimal(view["reserved"])), view
            recorded = await exchanges(bench, withdrawal_id)
            assert 1 == sum(1 for operation, _ in recorded if operation == "create_withdrawal")

        await bench.ledger.caught_up()  # recovery reads its candidates from the read models
        result = await bench.ledger.recover()
        await bench.ledger.caught_up()
        views = [await get(bench, f"/v1/withdrawals/{i}") for i in ids]
        if provider in WITHDRAWAL_LOOKUP:
            assert (held_by_provider, len(FAULTS) - held_by_provider) == (
                result.submitted,
                result.released,
            )
            assert held_by_provider == sum(1 for v in views if v["status"] == "submitted")
            released = [v for v in views if v["status"] == "failed"]
            assert all(Decimal(v["reserved"]) == 0 for v in released)
            # Released exactly for the ones the provider never took.
            kept = held_by_provider * amount
            assert funded - kept == await available(bench, provider, currency)
        else:
            assert len(FAULTS) == result.unknown
            assert {"submitting"} == {v["status"] for v in views}
            assert funded - len(FAULTS) * amount == await available(bench, provider, currency)
            for withdrawal_id in ids:
                assert "provider_outcome_unknown" in await open_reasons(bench, withdrawal_id)
        assert calls == await provider_calls(bench, provider, "create_withdrawal")


# ---------------------------------------------------------------- the status query (lookups)

LOOKUPS = [
    ("coinpay", "find_payment"),
    ("payment_engine", "find_payment"),
    ("payment_engine", "find_withdrawal"),
]


async def lost_create(bench: Rig, provider: str, lookup: str) -> tuple[str, str, str]:
    """A create the provider carried out whose answer was lost: (create, subject id, its path)."""
    withdrawing = lookup == "find_withdrawal"
    create = "create_withdrawal" if withdrawing else "create_payment"
    await fault(bench, provider, create, FAULTS["drops_after"])
    status, problem = await (create_withdrawal if withdrawing else create_payment)(bench, provider)
    status_field = "withdrawal_status" if withdrawing else "payment_status"
    assert_outcome_unknown(status, problem, status_field)
    subject = problem["withdrawal_id" if withdrawing else "payment_id"]
    return create, subject, f"/v1/{'withdrawals' if withdrawing else 'payments'}/{subject}"


async def failed_pass(bench: Rig, provider: str, lookup: str, kind: dict[str, Any]) -> Any:
    """One recovery pass whose lookups all fail with `kind`. Twice as many faults as attempts
    are queued (aiohttp resends an idempotent request once on a dropped keep-alive connection,
    see the xfail below); what is left over is cleared after the pass."""
    await fault(bench, provider, lookup, kind, times=2 * PATIENT_ONE_SECOND.attempts)
    await bench.ledger.caught_up()  # recovery reads its candidates from the read models
    result = await bench.ledger.recover()
    async with bench.ledger.http.delete(bench.sandbox_urls[provider] + "/_sandbox/faults"):
        pass
    return result


@pytest.mark.parametrize(("provider", "lookup"), LOOKUPS)
async def test_a_failing_lookup_leaves_the_subject_for_the_next_pass_and_records_each_attempt(
    store, monkeypatch, provider, lookup
):
    async with opened(store, monkeypatch, provider) as bench:
        withdrawing = lookup == "find_withdrawal"
        if withdrawing:
            currency, funded = await fund(bench, provider)
            amount = Decimal(WITHDRAWAL[provider][0])
        else:
            await bench.create_payment(provider)  # logged in
        create, subject, path = await lost_create(bench, provider, lookup)
        # Every way the lookup can fail, on every attempt: the subject waits, its funds kept.
        for name, kind in FAULTS.items():
            before = len(await exchanges(bench, subject))
            result = await failed_pass(bench, provider, lookup, kind)
            assert (0, 0, 1) == (result.submitted, result.released, result.unknown), name
            assert "submitting" == (await get(bench, path))["status"], name
            if withdrawing:
                assert funded - amount == await available(bench, provider, currency), name
            recorded = (await exchanges(bench, subject))[before:]
            assert PATIENT_ONE_SECOND.attempts == len(recorded), (name, recorded)
            assert all(op == lookup and status in {None, 500} for op, status in recorded), name
        # The provider answers again: found, as the create's answer would have said.
        await bench.ledger.caught_up()
        assert 1 == (await bench.ledger.recover()).submitted
        view = await get(bench, path)
        assert ("submitted" if withdrawing else "pending") == view["status"], view
        assert view["provider_ref"], view
        if withdrawing:
            assert funded - amount == await available(bench, provider, currency)
        assert (lookup, 200) == (await exchanges(bench, subject))[-1]
        # And no create was sent twice, by the ledger or its recovery.
        creates = await provider_calls(bench, provider, create)
        assert ["drop_after"] == [kind for kind in creates if kind], creates


@pytest.mark.parametrize(("provider", "lookup"), LOOKUPS[:1])
async def test_every_lookup_call_the_provider_saw_is_recorded_even_on_a_dropped_connection(
    store, monkeypatch, provider, lookup
):
    async with opened(store, monkeypatch, provider) as bench:
        await bench.create_payment(provider)  # logged in: the connection is kept alive
        _, subject, _ = await lost_create(bench, provider, lookup)
        await failed_pass(bench, provider, lookup, FAULTS["drops_before"])
        seen = await provider_calls(bench, provider, lookup)
        recorded = [op for op, _ in await exchanges(bench, subject) if op == lookup]
        assert len(seen) == len(recorded), (seen, recorded)


# ---------------------------------------------------------------- the status query (forged copies)

ASKED = ("coinpay", "cryptofuse", "payment_engine")
# Their answers name the deposits; CoinPay's only a status word (docs/edges.md).
CONFIRMING = ("cryptofuse", "payment_engine")
# Ask at once, and again at once after a failure (production spaces them: QueryPolicy).
AT_ONCE = QueryPolicy(spacing_seconds=0, retry_first_seconds=0.05, retry_max_seconds=0.1)


def wrong_signature(delivery: Captured) -> Captured:
    headers = dict(delivery.headers)
    for name, value in headers.items():
        if "signature" in name.lower():
            headers[name] = ("sha256=" if value.startswith("sha256=") else "") + "0f" * 32
    return dataclasses.replace(delivery, headers=headers)


@pytest.mark.parametrize("provider", ASKED)
async def test_every_fault_on_the_status_query_moves_no_money_and_the_query_is_asked_again(
    store, monkeypatch, provider
):
    async with opened(store, monkeypatch, provider) as bench:
        payment = await bench.create_payment(provider)
        genuine = await bench.scenario(provider, payment["provider_ref"], "full")
        # Only a copy with a wrong signature reaches the ledger: it must ask the provider.
        assert 401 == (await bench.deliver(wrong_signature(genuine[-1])))[0]
        await bench.ledger.caught_up()
        adapters = build_adapters(webhook_kit.provider_tables(bench.sandbox_urls))
        for adapter in adapters.values():
            http = getattr(adapter.client, "_http", None) or getattr(adapter.client, "http", None)
            if http is not None and hasattr(http, "policy"):
                http.policy = PATIENT_ONE_SECOND
        queries = ProviderQueries(store, adapters, policy=AT_ONCE)
        path = f"/v1/payments/{payment['payment_id']}"
        unpaid = (await get(bench, path))["received"]
        try:
            for name, kind in FAULTS.items():
                # Twice: aiohttp resends a GET once on a dropped keep-alive connection.
                await fault(bench, provider, "query_payment", kind, times=2)
                result = await queries.run_pending()
                assert (0, 1) == (result.asked, result.failed), name
                async with bench.ledger.http.delete(
                    bench.sandbox_urls[provider] + "/_sandbox/faults"
                ):
                    pass
                assert unpaid == (await get(bench, path))["received"], name
                await asyncio.sleep(AT_ONCE.retry_max_seconds)  # the pause before asking again
            result = await queries.run_pending()
            assert (1, 0) == (result.asked, result.failed)
        finally:
            for adapter in adapters.values():
                await adapter.client.close()
        view = await get(bench, path)
        if provider in CONFIRMING:
            assert ("completed", view["expected"]["amount"]) == (view["status"], view["received"])
        else:
            assert unpaid == view["received"]  # a status word confirms no funds
        stream = await exchanges(bench, payment["payment_id"])
        recorded = [status for operation, status in stream if operation == "query_payment"]
        # One failed call per fault, then the answer, all in the payment's stream.
        assert len(FAULTS) + 1 == len(recorded), recorded
        assert 200 == recorded[-1]
