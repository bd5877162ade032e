"""Properties of webhook ingestion over real HTTP, with hypothesis.

1. Order independence. Each sandbox runs a scenario for a fresh payment; its deliveries (bytes,
   headers and signatures exactly as the sandbox sent them) are captured, then replayed to the
   ledger in a permutation drawn by hypothesis, with any deliveries repeated. The final payment
   view must equal the one left by replaying the same scenario in the sandbox's own order.

   Where the outcome is order-independent, and where it is not:
   - Cryptofuse and Payment Engine: fully. Deposits carry their own ids (`deposit_id`,
     transaction id) and the provider's timestamps, expiry is the provider's word stamped with
     the provider's time, and the provider's status word is the newest by the provider's clock.
     So status, coverage, late, amounts, deposits and provider_status all match.
   - LiPayKripto: for everything its sandbox sends (each scenario's deliveries carry one amount).
     NOT for two confirmations with different amounts: its webhook names no deposit, so the
     deposit is named by the payment, the first confirmation fixes the amount and a later one
     with another amount is refused (DeliveryNotApplied). Tested below as what does hold.
   - CoinPay and CoinCoin report a running total (`amount` so far, `collected`): status,
     coverage and every amount match, but the deposit LIST does not: totals 50 then 100 leave
     two increments of 50, while 100 then 50 leaves one of 100 (the lower total is stale).
     Their bodies carry no timestamp, so provider_status is the last word to ARRIVE, also
     order-dependent; neither is compared.
   - CoinCoin additionally sends a terminal word, state -1 (Invalid, read as the provider's
     expiry), stamped by the ledger's receipt time. In its `late` scenario (-1, then the funds)
     the funds are late when -1 arrives first, and complete the payment when it arrives last;
     only the money (received, coverage, ...) is order-independent there. Tested below.

2. Fuzzed deliveries never answer 500 and never move money they should not: random bytes,
   JSON-ish values, and the sandboxes' own bodies mutated (keys dropped, values replaced by odd
   JSON, numbers like 1e999999, NUL and lone-surrogate strings), with signatures and tokens
   valid, wrong or missing, for every provider.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import random
from collections.abc import Iterator
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from adapters.providers.coinpay.javascript_json import JavaScriptJsonError
from adapters.providers.coinpay.webhooks import signature_for as coinpay_signature
from adapters.providers.cryptofuse.webhooks import sign as cryptofuse_sign
from adapters.providers.http_client import dumps_exact
from adapters.providers.payment_engine.webhooks import sign as payment_engine_sign
from ledger.codec import decode_document
from ledger.deliveries import ReceiptKind, ReceivedDelivery
from ledger.money import loads_exact
from tests.e2e.records import receipts, unmatched
from tests.e2e.webhook_kit import (
    COINCOIN_WEBHOOK_TOKEN,
    PROVIDERS,
    SECRETS,
    Captured,
    Rig,
    in_thread,
    order_id,
    rig,
    run_examples,
)

pytestmark = pytest.mark.slow

ALL_SCENARIOS = (
    "full",
    "partial",
    "over",
    "expire_no_funds",
    "expire_with_funds",
    "late",
    "fail",
    "multiple_deposits",
    "duplicate",
    "out_of_order",
)
# Scenarios that send at least one delivery (CoinPay and LiPayKripto have no expiry word).
SCENARIOS = {
    "coinpay": tuple(s for s in ALL_SCENARIOS if s != "expire_no_funds"),
    "coincoin": ALL_SCENARIOS,
    "cryptofuse": ALL_SCENARIOS,
    "payment_engine": ALL_SCENARIOS,
    "lipaykripto": tuple(s for s in ALL_SCENARIOS if s != "expire_no_funds"),
}
CUMULATIVE = frozenset({"coinpay", "coincoin"})
MONEY = ("coverage", "received", "pending", "outstanding", "overpaid", "unverified")
STATE = ("status", "late", *MONEY)
MOVED = tuple(key for key in STATE if key != "unverified")


def final_state(provider: str, scenario: str, view: dict[str, Any]) -> dict[str, Any]:
    """The part of the view that must not depend on the order of delivery (module docstring)."""
    if provider == "coincoin" and scenario == "late":
        return {key: view[key] for key in MONEY}
    state = {key: view[key] for key in STATE}
    deposits = view["deposits"]
    if provider in CUMULATIVE:
        # The increments depend on the order; the highest total seen and their sum do not.
        totals = [Decimal(d["deposit_id"].removeprefix("cumulative:")) for d in deposits]
        state["highest_total"] = str(max(totals, default=Decimal(0)))
        state["deposit_sum"] = str(sum((Decimal(d["amount"]) for d in deposits), Decimal(0)))
        return state
    state["provider_status"] = view["provider_status"]
    state["deposits"] = sorted(
        (d["amount"], d["confirmed"], d["verified"], d["late"], d["confirmations"])
        for d in deposits
    )
    return state


async def payment_with_deliveries(
    bench: Rig, provider: str, scenario: str
) -> tuple[dict[str, Any], list[Captured]]:
    payment = await bench.create_payment(provider)
    return payment, await bench.scenario(provider, payment["provider_ref"], scenario)


async def replay(bench: Rig, deliveries: list[Captured]) -> list[str]:
    outcomes = []
    for delivery in deliveries:
        status, reply = await bench.deliver(delivery)
        assert 200 == status, reply
        outcomes.append(reply["outcome"])
    return outcomes


async def copies_received(bench: Rig, provider: str, bodies: set[bytes]) -> int:
    """How many of `provider`'s deliveries with one of `bodies` were caught on receipt as
    copies of one received before (each a `Delivery.Duplicate` receipt of its own)."""
    copies = await receipts(bench.ledger.store, ReceiptKind.DUPLICATE, provider)
    return sum(ReceivedDelivery.from_document(copy).body in bodies for copy in copies)


async def recorded_outcomes(bench: Rig, payment_id: str) -> list[str]:
    """The outcome of each delivery recorded in a payment's stream, once applied (a read of the
    payment waits for the applier)."""
    await bench.view(payment_id)
    return [
        decode_document(e.payload)["delivery"]["outcome"]
        for e in await bench.ledger.store.read_stream(payment_id)
        if e.type == "Payment.DeliveryRecorded"
    ]


async def replayed_in_order(bench: Rig, provider: str, scenario: str) -> dict[str, Any]:
    payment, deliveries = await payment_with_deliveries(bench, provider, scenario)
    await replay(bench, deliveries)
    return final_state(provider, scenario, await bench.view(payment["payment_id"]))


def orders_for(scenarios: tuple[str, ...], counts: dict[str, int]) -> st.SearchStrategy[Any]:
    """(scenario, order): every delivery at least once, in any order, any of them again."""

    def order(scenario: str) -> st.SearchStrategy[tuple[str, list[int]]]:
        count = counts[scenario]
        again = st.lists(st.integers(0, count - 1), max_size=count)
        return st.tuples(
            st.just(scenario), again.flatmap(lambda more: st.permutations([*range(count), *more]))
        )

    return st.sampled_from(scenarios).flatmap(order)


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_any_order_with_any_repeats_ends_as_the_in_order_delivery(store, provider):
    """Every scenario is checked at least once reversed and then delivered whole again (explicit
    examples), then hypothesis draws scenarios and orders. A fresh payment per example."""
    scenarios = SCENARIOS[provider]
    async with rig(store, (provider,)) as bench:
        references, counts = {}, {}
        for scenario in scenarios:
            payment, deliveries = await payment_with_deliveries(bench, provider, scenario)
            await replay(bench, deliveries)
            view = await bench.view(payment["payment_id"])
            references[scenario] = final_state(provider, scenario, view)
            counts[scenario] = len(deliveries)
            assert counts[scenario] > 0, scenario
        call = run_examples(asyncio.get_running_loop())

        def check(drawn: tuple[str, list[int]]) -> None:
            scenario, order = drawn
            payment, deliveries = call(payment_with_deliveries(bench, provider, scenario))
            assert counts[scenario] == len(deliveries)
            outcomes = call(replay(bench, [deliveries[i] for i in order]))
            view = call(bench.view(payment["payment_id"]))
            assert references[scenario] == final_state(provider, scenario, view)
            # Nothing lost, nothing twice: exactly the repeated bodies are duplicates, each
            # recorded as a duplicate receipt; every other delivery is received, then recorded
            # in the payment's stream.
            bodies = {deliveries[i].body for i in order}
            distinct = len(bodies)
            assert len(order) - distinct == outcomes.count("duplicate"), outcomes
            assert distinct == outcomes.count("received"), outcomes
            types = call(bench.event_types(payment["payment_id"]))
            assert distinct == types.count("Payment.DeliveryRecorded")
            assert len(order) - distinct == call(copies_received(bench, provider, bodies))

        test = given(orders_for(scenarios, counts))(check)
        for scenario in scenarios:
            backwards = list(reversed(range(counts[scenario])))
            test = example((scenario, [*backwards, *range(counts[scenario])]))(test)
        test = settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))(
            test
        )
        await in_thread(test)


# ---------------------------------------------------------------- what holds where order matters


async def test_coincoin_invalid_word_before_the_funds_makes_them_late_after_it_does_not(store):
    async with rig(store, ("coincoin",)) as bench:
        first, in_order = await payment_with_deliveries(bench, "coincoin", "late")
        second, reversed_ = await payment_with_deliveries(bench, "coincoin", "late")
        assert [b'"state": -1', b'"state": 2'] == [
            next(w for w in (b'"state": -1', b'"state": 2') if w in d.body) for d in in_order
        ]
        await replay(bench, in_order)
        await replay(bench, reversed_[::-1])
        invalid_first = await bench.view(first["payment_id"])
        invalid_last = await bench.view(second["payment_id"])
    assert ("expired", True) == (invalid_first["status"], invalid_first["late"])
    assert ("completed", False) == (invalid_last["status"], invalid_last["late"])
    # The money itself does not depend on the order.
    assert [invalid_first[k] for k in MONEY] == [invalid_last[k] for k in MONEY]
    assert ("exact", "100.000000") == (invalid_last["coverage"], invalid_last["received"])


async def test_cumulative_totals_split_into_deposits_by_arrival_order(store):
    async with rig(store, ("coinpay",)) as bench:
        first, in_order = await payment_with_deliveries(bench, "coinpay", "multiple_deposits")
        second, reversed_ = await payment_with_deliveries(bench, "coinpay", "multiple_deposits")
        await replay(bench, in_order)
        await replay(bench, reversed_[::-1])
        rising = await bench.view(first["payment_id"])
        falling = await bench.view(second["payment_id"])
    assert ["50.000000", "50.000000"] == [d["amount"] for d in rising["deposits"]]
    assert ["100.000000"] == [d["amount"] for d in falling["deposits"]]
    assert [rising[k] for k in STATE] == [falling[k] for k in STATE]


async def test_lipaykripto_two_confirmations_of_different_amounts_the_first_one_counts(store):
    async with rig(store, ("lipaykripto",)) as bench:
        views = []
        for first_scenario, second_scenario in (("partial", "full"), ("full", "partial")):
            payment = await bench.create_payment("lipaykripto")
            ref = payment["provider_ref"]
            first = await bench.scenario("lipaykripto", ref, first_scenario)
            second = await bench.scenario("lipaykripto", ref, second_scenario)
            assert ["received", "received"] == await replay(bench, first + second)
            views.append(await bench.view(payment["payment_id"]))
            types = await bench.event_types(payment["payment_id"])
            assert 1 == types.count("Payment.DeliveryNotApplied")
            # Both deliveries are recorded, the refused one with outcome not_applied.
            assert 2 == types.count("Payment.DeliveryRecorded")
            outcomes = await recorded_outcomes(bench, payment["payment_id"])
            assert ["verified", "not_applied"] == outcomes
    half_first, full_first = views
    assert ("50.00", "partial") == (half_first["received"], half_first["coverage"])
    assert ("100.00", "exact") == (full_first["received"], full_first["coverage"])


# ---------------------------------------------------------------- fuzzing

ALLOWED = frozenset({200, 400, 401, 404, 413})
RECORDED = "Payment.DeliveryRecorded"
RAW_TOKENS = (
    "1e999999999",
    "1E+25",
    "1e999999",
    "-1e999999",
    "1E-999999",
    "-0.0",
    "1e400",
    "123456789012345678901234567890.123456789012345",
    "0.0000000000000000000000000001",
    '"\\u0000"',
    '"\\ud800"',
    '"\\udfff\\ud800"',
    '"1e999999"',
    '"NaN"',
    '"-5.00"',
    "[]",
    "{}",
    "null",
    "true",
    '""',
    '"2024-13-45T99:99:99Z"',
    '"2024-01-01T00:00:00"',
)
_SENTINEL = "\x01raw\x01"

json_leaves = (
    st.none()
    | st.booleans()
    | st.integers(-(10**30), 10**30)
    | st.decimals(
        min_value=-(10**12), max_value=10**12, allow_nan=False, allow_infinity=False, places=9
    )
    | st.text(max_size=12)
    | st.sampled_from(RAW_TOKENS).map(lambda token: _SENTINEL + token)
)
json_values = st.recursive(
    json_leaves,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


def render(value: Any) -> bytes:
    """JSON text with exact decimals; sentinel strings become raw, possibly hostile, tokens."""
    text = dumps_exact(value)
    for token in RAW_TOKENS:
        text = text.replace(json.dumps(_SENTINEL + token), token)
    return text.encode("utf-8", "surrogatepass")


def paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(node, dict):
        for key, child in node.items():
            yield from paths(child, (*prefix, key))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            yield from paths(child, (*prefix, index))


def mutate(data: st.DataObject, document: Any) -> Any:
    document = copy.deepcopy(document)
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        path = data.draw(st.sampled_from(list(paths(document))), label="path")
        operation = data.draw(st.sampled_from(["replace", "delete", "insert"]), label="op")
        value = data.draw(json_values, label="value")
        if not path:
            document = value if operation == "replace" else document
            continue
        parent = document
        for step in path[:-1]:
            parent = parent[step]
        if operation == "replace":
            parent[path[-1]] = value
        elif operation == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[data.draw(st.text(max_size=8), label="key")] = value
        else:
            parent.insert(path[-1], value)
    return document


def signed_headers(provider: str, body: bytes, *, valid: bool) -> dict[str, str]:
    config = SECRETS[provider]
    secret = str(getattr(config, "webhook_secret", ""))
    headers = {"Content-Type": "application/json"}
    if provider == "coinpay":
        try:
            signature = coinpay_signature(body, secret if valid else "wrong")
        except (JavaScriptJsonError, UnicodeDecodeError, RecursionError):
            signature = "0" * 64
        headers["x-signature"] = signature
    elif provider == "cryptofuse":
        headers["X-Webhook-Signature"] = cryptofuse_sign(body, secret if valid else "wrong")
    elif provider == "payment_engine":
        headers["X-Webhook-Signature"] = payment_engine_sign(secret if valid else "wrong", body)
    return headers


def webhook_path(provider: str, captured_path: str, *, valid: bool) -> str:
    if provider == "coincoin":
        return f"/v1/webhooks/coincoin/{COINCOIN_WEBHOOK_TOKEN if valid else 'not-the-token'}"
    if provider == "lipaykripto":
        return captured_path if valid else "/v1/webhooks/lipaykripto/not-a-token"
    return f"/v1/webhooks/{provider}"


async def post(bench: Rig, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any, str]:
    async with bench.ledger.http.post(bench.ledger.url + path, data=body, headers=headers) as r:
        text = await r.text()
        return r.status, text, r.headers.get("Content-Type", "")


def verified_deposits(view: dict[str, Any]) -> list[dict[str, Any]]:
    return [deposit for deposit in view["deposits"] if deposit["verified"]]


def check_invariants(view: dict[str, Any]) -> None:
    expected = Decimal(view["expected"]["amount"])
    received, pending = Decimal(view["received"]), Decimal(view["pending"])
    assert received >= 0
    assert pending >= 0
    assert Decimal(view["outstanding"]) == max(Decimal(0), expected - received - pending)
    assert Decimal(view["overpaid"]) == max(Decimal(0), received - expected)
    confirmed = sum(
        (Decimal(d["amount"]) for d in view["deposits"] if d["confirmed"] and d["verified"]),
        Decimal(0),
    )
    assert confirmed == received
    coverage = (
        "unpaid"
        if received == 0
        else "partial"
        if received < expected
        else "exact"
        if received == expected
        else "over"
    )
    assert coverage == view["coverage"]


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_fuzzed_deliveries_are_never_a_500_and_move_no_money_wrongly(store, provider):
    async with rig(store, (provider,)) as bench:
        # A victim that only hostile deliveries name; a target whose own deliveries, mutated and
        # properly signed, reach the domain; templates renamed to name no payment at all.
        victim, victim_bodies = await payment_with_deliveries(bench, provider, "full")
        target, target_bodies = await payment_with_deliveries(bench, provider, "multiple_deposits")
        before = await bench.view(victim["payment_id"])
        foreign = []
        for delivery in target_bodies:
            text = delivery.body.decode()
            for name in (target["provider_ref"], target["order_id"]):
                text = text.replace(name, order_id("NOBODY"))
            foreign.append(Captured(delivery.path, delivery.headers, text.encode()))
        call = run_examples(asyncio.get_running_loop())
        seen: set[int] = set()

        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
        @given(st.data())
        def check(data: st.DataObject) -> None:
            kind = data.draw(
                st.sampled_from(["bytes", "json", "foreign", "victim", "target"]), label="kind"
            )
            valid = data.draw(st.booleans(), label="valid auth")
            template = None
            if kind == "bytes":
                body = data.draw(st.binary(max_size=200), label="body")
            elif kind == "json":
                body = render(data.draw(json_values, label="body"))
            else:
                pool = {"foreign": foreign, "victim": victim_bodies, "target": target_bodies}[kind]
                template = data.draw(st.sampled_from(pool), label="template")
                document = loads_exact(template.body)
                if kind != "victim" or data.draw(st.booleans(), label="mutate victim"):
                    document = mutate(data, document)
                body = render(document)
            if kind == "victim":
                valid = False  # deliveries naming the victim never carry valid auth
            headers = signed_headers(provider, body, valid=valid)
            if data.draw(st.booleans(), label="odd headers"):
                headers |= data.draw(
                    st.dictionaries(
                        st.sampled_from(
                            ["Content-Type", "X-Signature", "X-Webhook-Signature", "X-Other"]
                        ),
                        st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80),
                        max_size=2,
                    ),
                    label="headers",
                )
            captured_path = template.path if template else f"/v1/webhooks/{provider}"
            path = webhook_path(provider, captured_path, valid=valid)
            subjects = (victim["payment_id"], target["payment_id"])
            recorded_before = [call(bench.event_types(p)).count(RECORDED) for p in subjects]
            status, text, content_type = call(post(bench, path, body, headers))
            seen.add(status)
            assert status in ALLOWED, (status, text)
            if status != 200:
                assert content_type.startswith("application/problem+json"), content_type
            else:
                assert json.loads(text)["outcome"] in {"received", "duplicate"}, text
            if kind in {"bytes", "json", "foreign"}:
                # Naming no payment, it is applied to none (unmatched, or nothing to apply).
                recorded_after = [call(bench.event_types(p)).count(RECORDED) for p in subjects]
                assert recorded_before == recorded_after
            after = call(bench.view(victim["payment_id"]))
            # A delivery naming the victim without a valid token or signature is at most recorded
            # in its stream as unverified (API.md, Deliveries): its funds may show as
            # `unverified`, never as received, and no verified deposit appears.
            assert [before[k] for k in MOVED] == [after[k] for k in MOVED]
            assert verified_deposits(before) == verified_deposits(after)
            check_invariants(call(bench.view(target["payment_id"])))

        await in_thread(check)
        # A well-signed foreign body gets past authentication: received and held unmatched (or
        # a duplicate, if the fuzz sent it, or a copy under the same dedupe key, already).
        renamed = foreign[0]
        headers = signed_headers(provider, renamed.body, valid=True)
        path = webhook_path(provider, renamed.path, valid=True)
        status, text, _ = await post(bench, path, renamed.body, headers)
        assert 200 == status, (seen, text)
        outcome = json.loads(text)["outcome"]
        assert outcome in {"received", "duplicate"}, text
        if outcome == "received":
            await bench.view(victim["payment_id"])  # a read of a payment waits for the applier
            held = await unmatched(bench.ledger.store, provider)
            assert renamed.body in {ReceivedDelivery.from_document(h).body for h in held}
        # And the ledger still works: the victim's own deliveries are accepted afterwards.
        for delivery in victim_bodies:
            status, reply = await bench.deliver(delivery)
            assert 200 == status, reply
        assert "completed" == (await bench.view(victim["payment_id"]))["status"]


async def test_oversized_and_deeply_nested_bodies_answer_problems_not_500(store):
    """Nesting deep enough to exhaust Python's recursion (in parsing, in canonical dedupe keys, in
    CoinPay's re-serialization) once answered 500; it is a 400 like any unreadable body. A real
    delivery carrying a deep but parseable extra key may also be accepted (Payment Engine
    dedupes by eventId and never walks the whole payload)."""
    async with rig(store, PROVIDERS) as bench:
        for provider in (*PROVIDERS, "nosuchprovider"):
            path = f"/v1/webhooks/{provider}"
            cases = [
                (b"x" * (1024 * 1024 + 1), {413}),
                (b"[" * 100_000, {400, 401}),
                (b'{"a":' * 50_000 + b"1" + b"}" * 50_000, {400, 401}),
                (b"\xff\xfe\x00", {400, 401}),
                (b"", {400, 401}),
            ]
            if provider in PROVIDERS:
                _, (real, *_) = await payment_with_deliveries(bench, provider, "full")
                path = real.path
                for depth in (600, 5000):
                    extra = b', "deep": ' + b"[" * depth + b"]" * depth + b"}"
                    cases.append((real.body[:-1] + extra, {200, 400}))
            for body, allowed in cases:
                valid = provider in PROVIDERS
                headers = signed_headers(provider, body, valid=True) if valid else {}
                status, text, _ = await post(bench, path, body, headers)
                expected = allowed if provider in PROVIDERS else {404}
                assert status in expected, (provider, len(body), status, text[:200])


# NUL and lone surrogates cannot be stored; a long incompressible id overflows a btree entry.
HOSTILE_TEXT = (
    "\x00",
    "a\x00b",
    "\ud800",
    "x\udfffy",
    "\u202e\ufeff",
    base64.b64encode(random.Random(7).randbytes(6000)).decode(),
)


def string_paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    for path in paths(node, prefix):
        value = node
        for step in path:
            value = value[step]
        if isinstance(value, str):
            yield path


def replaced(document: Any, path: tuple[Any, ...], value: Any) -> Any:
    document = copy.deepcopy(document)
    parent = document
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = value
    return document


async def test_hostile_text_in_every_string_of_a_real_delivery_is_never_a_500(store):
    """Every string of each provider's real delivery, in turn, replaced by text a database or
    UTF-8 cannot hold (NUL, lone surrogates) or merely odd, and properly signed: never a 500, and
    a string the database cannot hold never reaches it (a 400, recorded as invalid)."""
    async with rig(store, PROVIDERS) as bench:
        failures = []
        for provider in PROVIDERS:
            _, (real, *_) = await payment_with_deliveries(bench, provider, "multiple_deposits")
            document = loads_exact(real.body)
            for path in string_paths(document):
                for text in HOSTILE_TEXT:
                    body = render(replaced(document, path, text))
                    headers = signed_headers(provider, body, valid=True)
                    status, _, _ = await post(bench, real.path, body, headers)
                    if status not in ALLOWED:
                        failures.append((provider, path, repr(text[:8]), status))
            # Header bytes that are not UTF-8, which only a raw request can send.
            for name, value in RAW_HEADERS:
                status = await raw_post(bench.ledger.url, real.path, real.body, name, value)
                if status not in ALLOWED:
                    failures.append((provider, name, repr(value), status))
        assert [] == failures, "\n".join(map(str, failures))


HOSTILE_NUMBERS = ("1e999999999", "1E+25", "-1e999999", "1E-999999", "-5", "0", "1e400")


async def test_hostile_numbers_in_every_number_of_a_real_delivery_are_never_a_500(store):
    """Every number of each provider's real delivery for a known payment, in turn, replaced by
    one no amount can be (a billion-digit exponent, 26 integer digits, negative, zero) and
    properly signed: never a 500, answered at once (nothing is written out digit by digit)."""
    async with rig(store, PROVIDERS) as bench:
        failures = []
        for provider in PROVIDERS:
            _, (real, *_) = await payment_with_deliveries(bench, provider, "multiple_deposits")
            document = loads_exact(real.body)
            numbers = [
                path
                for path in paths(document)
                if isinstance(value_at(document, path), int | Decimal)
                and not isinstance(value_at(document, path), bool)
            ]
            for path in numbers:
                for token in HOSTILE_NUMBERS:
                    body = render(replaced(document, path, _SENTINEL + token))
                    headers = signed_headers(provider, body, valid=True)
                    status, _, _ = await post(bench, real.path, body, headers)
                    if status not in ALLOWED:
                        failures.append((provider, path, token, status))
        assert [] == failures, "\n".join(map(str, failures))


def value_at(document: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        document = document[step]
    return document


RAW_HEADERS = (
    (b"X-Signature", b"\xff\xfe"),
    (b"X-Webhook-Signature", b"sha256=\xc3\x28"),
    (b"User-Agent", b"\xed\xa0\x80"),
)


async def raw_post(url: str, path: str, body: bytes, name: bytes, value: bytes) -> int:
    parts = urlsplit(url)
    assert parts.hostname is not None
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    head = [
        f"POST {path} HTTP/1.1".encode(),
        f"Host: {parts.netloc}".encode(),
        b"Content-Type: application/json",
        f"Content-Length: {len(body)}".encode(),
        b"Connection: close",
        name + b": " + value,
    ]
    writer.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
    await writer.drain()
    status_line = (await reader.read()).split(b"\r\n", 1)[0]
    writer.close()
    return int(status_line.split()[1])
