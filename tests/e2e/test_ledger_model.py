"""A stateful model of the whole ledger, over real HTTP and the five provider sandboxes.

Hypothesis drives a `RuleBasedStateMachine` whose rules are what the outside world does to the
ledger: create a payment at any provider; have its sandbox play a scenario (its deliveries are
captured, not sent); deliver any of a payment's captured deliveries, in any order, with
repeats, some now and some later; move the ledger's clock forward and sweep; request a
withdrawal (Payment Engine in USD, LiPayKripto in TRY) for less than, exactly, or more than the
funds available; settle a completed payment; rebuild every projection from position 0; restart
the service (a new app on the same store). The machine's methods are synchronous: each
coroutine runs on the test's event loop through `run_examples`, while hypothesis runs in a
worker thread (`in_thread`), as in test_webhook_properties.py.

After every step the ledger is held to a small model of it:
- each payment's view is self-consistent (received is the sum of its confirmed, verified
  deposits; outstanding, overpaid and coverage follow from received vs expected; `completed`
  only with exact or over coverage); received never goes down; a payment the clock expired
  stays `expired`; once all of a scenario's deliveries were delivered its money (received,
  pending, outstanding, overpaid, coverage) is what the same scenario delivered in order, once,
  gives (a reference payment in another schema), and before that never more;
- no delivery is recorded twice: its stream holds one DeliveryRecorded per distinct body
  delivered, and no dedupe key moved money twice;
- every journal entry sums to zero per currency (posted, and pending apart); over every
  currency posted and pending sum to zero; no provider's available funds are negative, and at
  the two withdrawal providers they are exactly the payments' received minus the withdrawals
  accepted; a withdrawal is accepted exactly when it fits, else 422 insufficient-funds;
- reconciliation: an open payment holding part of its price has an open `underpaid` item; an
  overpaid completed one `overpaid` (or `paid_late`); an expired or failed one holding funds
  `expired_with_funds` (or `paid_late`); a settled one none of these;
- every payment created is on GET /v1/payments.

Each example runs on a schema of its own (a fresh ledger); the sandboxes and the capturing
receiver are shared. LEDGER_TEST_LONG=1 runs more and longer examples (30 of 40 steps).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_DOWN, Decimal
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from adapters.config import Settings
from adapters.http.app import init_app
from adapters.http.keys import RUNNER
from adapters.providers.registry import build_adapters
from adapters.storage.migrate import migrate
from adapters.storage.postgres_store import PostgresEventStore, create_pool
from ledger.codec import decode_document
from tests.e2e.harness import FAST_RETRIES, TOKEN, Ledger, free_port, serve
from tests.e2e.test_webhook_properties import check_invariants
from tests.e2e.webhook_kit import (
    PROVIDERS,
    Captured,
    Rig,
    in_thread,
    provider_tables,
    rig,
    run_examples,
)

pytestmark = pytest.mark.slow

# Not LEDGER_LONG: every other LEDGER_* variable is read as configuration (and refused).
LONG = os.environ.get("LEDGER_TEST_LONG") == "1"
EXAMPLES, STEPS = (30, 40) if LONG else (8, 20)
PAYMENTS_MAX = 6
# Every scenario that sends at least one delivery at every provider (CoinPay and LiPayKripto
# have no expiry word, so their `expire_no_funds` sends nothing).
SCENARIOS = (
    "full", "partial", "over", "expire_with_funds", "late", "fail", "multiple_deposits",
    "duplicate", "out_of_order",
)  # fmt: skip
MONEY = ("received", "pending", "outstanding", "overpaid", "coverage")
OPEN = frozenset({"pending", "confirming"})
WITHDRAWALS = {
    "payment_engine": ("USD", {"address": "acct_payout_model"}),
    "lipaykripto": ("TRY", {"address": "TModelWithdrawalAddress012345678", "pay_currency": "USDT"}),
}
CENT = Decimal("0.01")


class Clock:
    """The ledger's clock: the wall clock moved forward by however much the model says."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text.removesuffix("Z") + "+00:00")


@dataclass
class ModelPayment:
    view: dict[str, Any]
    scenario: str | None = None
    deliveries: list[Captured] = field(default_factory=list)
    delivered: set[bytes] = field(default_factory=set)
    expired_by_clock: bool = False
    settled: bool = False

    @property
    def payment_id(self) -> str:
        return str(self.view["payment_id"])

    @property
    def provider(self) -> str:
        return str(self.view["provider"])

    @property
    def all_delivered(self) -> bool:
        return bool(self.deliveries) and {d.body for d in self.deliveries} <= self.delivered


@dataclass
class Service:
    """One ledger app on one store; `restart` replaces the app, keeping store and clock."""

    store: PostgresEventStore
    settings: Settings
    clock: Clock
    http: aiohttp.ClientSession
    runner: web.AppRunner | None = None
    ledger: Ledger | None = None

    async def start(self) -> Ledger:
        adapters = build_adapters(self.settings.providers)
        for adapter in adapters.values():
            http = getattr(adapter.client, "_http", None) or getattr(adapter.client, "http", None)
            if http is not None and hasattr(http, "policy"):
                http.policy = FAST_RETRIES
        app = init_app(self.settings, clock=self.clock, store=self.store, adapters=adapters)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", port).start()
        self.ledger = Ledger(f"http://127.0.0.1:{port}", self.http, self.store, app)
        return self.ledger

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


@dataclass
class Shared:
    """What every example uses: the sandboxes and capture (in `bench`), the reference ledger
    (bench.ledger, on the test's own schema), the database, the clock."""

    bench: Rig
    database_url: str
    clock: Clock
    capture_url: str  # a second address of bench.capture: what each example's ledger calls
    references: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    async def reference(self, provider: str, scenario: str) -> dict[str, Any]:
        """The money of a payment whose scenario was delivered once, in the sandbox's order."""
        key = (provider, scenario)
        if key not in self.references:
            payment = await self.bench.create_payment(provider)
            deliveries = await self.bench.scenario(provider, payment["provider_ref"], scenario)
            for delivery in deliveries:
                status, body = await self.bench.deliver(delivery)
                assert 200 == status, body
            view = await self.bench.view(payment["payment_id"])
            self.references[key] = {name: view[name] for name in MONEY}
        return self.references[key]

    async def open_service(self, example_rig: Rig) -> Service:
        schema = f"t_{uuid.uuid4().hex[:12]}"
        admin = await asyncpg.connect(self.database_url)
        try:
            await admin.execute(f'CREATE SCHEMA "{schema}"')
        finally:
            await admin.close()
        pool = await create_pool(self.database_url, schema=schema, min_size=1, max_size=10)
        async with pool.acquire() as connection:
            await migrate(connection)
        example_settings = Settings(
            data_dir=Path(tempfile.mkdtemp(prefix="ledger-test-")),
            public_url=self.capture_url,
            api={"tokens": [{"name": "tests", "token": TOKEN, "scopes": ["admin"]}]},
            providers=provider_tables(self.bench.sandbox_urls),
            projections_worker="off",
            expiry_sweep_seconds=0,
            balance_poll_seconds=0,
            recovery_seconds=0,
            provider_query_seconds=0,
        )
        service = Service(PostgresEventStore(pool), example_settings, self.clock,
                          self.bench.ledger.http)  # fmt: skip
        example_rig.ledger = await service.start()
        return service

    async def close_service(self, service: Service) -> None:
        await service.stop()
        pool = service.store.pool
        schema = await pool.fetchval("SELECT current_schema()")
        await pool.close()
        admin = await asyncpg.connect(self.database_url)
        try:
            await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await admin.close()


def make_machine(shared: Shared, call: Callable[[Any], Any]) -> type[RuleBasedStateMachine]:
    class LedgerModel(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.rig = Rig(shared.bench.ledger, shared.bench.sandbox_urls,
                           shared.bench.sandbox_apps, shared.bench.capture)  # fmt: skip
            self.service = call(shared.open_service(self.rig))
            self.payments: list[ModelPayment] = []
            self.reserved: dict[str, Decimal] = defaultdict(Decimal)
            self.funded = ""  # the withdrawal provider the first payment paid in full

        def teardown(self) -> None:
            call(shared.close_service(self.service))

        @property
        def ledger(self) -> Ledger:
            assert self.service.ledger is not None
            return self.service.ledger

        # ------------------------------------------------------------ rules

        @initialize(data=st.data(), funded=st.sampled_from(sorted(WITHDRAWALS)))
        def payments_with_scenarios(self, data: st.DataObject, funded: str) -> None:
            """A paid payment at a provider that pays out (so that withdrawals have funds to
            ask for), then one or two payments whose sandboxes played a scenario, none of whose
            deliveries were sent yet."""
            self.funded = funded
            self.create_payment(funded, "full")
            for delivery in self.payments[0].deliveries:
                call(self.rig.deliver(delivery))
                self.payments[0].delivered.add(delivery.body)
            for _ in range(data.draw(st.integers(1, 2), label="payments")):
                provider = data.draw(st.sampled_from(PROVIDERS), label="provider")
                self.create_payment(provider, data.draw(st.sampled_from(SCENARIOS)))

        @precondition(lambda self: len(self.payments) < PAYMENTS_MAX)
        @rule(provider=st.sampled_from(PROVIDERS), scenario=st.none() | st.sampled_from(SCENARIOS))
        def create_payment(self, provider: str, scenario: str | None) -> None:
            """A payment, and at once its sandbox's scenario, or none yet."""
            payment = ModelPayment(call(self.rig.create_payment(provider)))
            self.payments.append(payment)
            if scenario is not None:
                self.play(payment, scenario)

        @precondition(lambda self: any(p.scenario is None for p in self.payments))
        @rule(data=st.data(), scenario=st.sampled_from(SCENARIOS))
        def play_scenario(self, data: st.DataObject, scenario: str) -> None:
            waiting = [p for p in self.payments if p.scenario is None]
            self.play(data.draw(st.sampled_from(waiting), label="payment"), scenario)

        def play(self, payment: ModelPayment, scenario: str) -> None:
            payment.deliveries = call(
                self.rig.scenario(payment.provider, payment.view["provider_ref"], scenario)
            )
            payment.scenario = scenario
            assert payment.deliveries, (payment.provider, scenario)

        @precondition(lambda self: any(p.deliveries for p in self.payments))
        @rule(data=st.data())
        def deliver(self, data: st.DataObject) -> None:
            """Some of a payment's deliveries, in any order, any of them more than once."""
            payment = data.draw(
                st.sampled_from([p for p in self.payments if p.deliveries]), label="payment"
            )
            count = len(payment.deliveries)
            order = data.draw(
                st.lists(st.integers(0, count - 1), min_size=1, max_size=2 * count), label="order"
            )
            for index in order:
                delivery = payment.deliveries[index]
                status, reply = call(self.rig.deliver(delivery))
                assert 200 == status, reply
                body_seen = delivery.body in payment.delivered
                # A repeat of a body already acknowledged is caught on receipt.
                assert reply["outcome"] == ("duplicate" if body_seen else "received"), reply
                payment.delivered.add(delivery.body)

        @rule(minutes=st.sampled_from([5, 45, 24 * 60]))
        def advance_clock_and_sweep(self, minutes: int) -> None:
            shared.clock.offset += timedelta(minutes=minutes)
            now = shared.clock()
            call(self.ledger.caught_up())  # the sweep reads the read models' candidates
            call(self.ledger.sweep())
            for payment in self.payments:
                deadline = payment.view.get("expires_at")
                if payment.view["status"] in OPEN and deadline and instant(deadline) <= now:
                    payment.expired_by_clock = True

        @rule(data=st.data(), amount=st.sampled_from(["some", "all", "beyond", "one"]))
        def withdraw(self, data: st.DataObject, amount: str) -> None:
            """Mostly at the provider the first payment funded, sometimes at one with none."""
            providers = [self.funded, self.funded, *sorted(WITHDRAWALS)]
            provider = data.draw(st.sampled_from(providers), label="provider")
            currency, extra = WITHDRAWALS[provider]
            available = self.available(provider, currency)
            asked = {
                "some": (available / 3).quantize(CENT, ROUND_DOWN),
                "all": available.quantize(CENT, ROUND_DOWN),
                "beyond": available.quantize(CENT, ROUND_DOWN) + CENT,
                "one": Decimal("1.00"),
            }[amount]
            if asked <= 0:
                asked = CENT
            request = {
                "provider": provider,
                "request_id": f"WM_{uuid.uuid4().hex[:16]}",
                "amount": str(asked),
                "currency": currency,
                **extra,
            }
            status, body = call(self.ledger.call("POST", "/v1/withdrawals", json=request))
            if asked <= available:
                assert 201 == status, (asked, available, body)
                self.reserved[provider] += asked
            else:
                assert 422 == status, (asked, available, body)
                assert body["type"].endswith("insufficient-funds"), body

        @precondition(
            lambda self: any(
                p.view["status"] == "completed" and not p.settled for p in self.payments
            )
        )
        @rule(data=st.data())
        def settle(self, data: st.DataObject) -> None:
            done = [p for p in self.payments if p.view["status"] == "completed" and not p.settled]
            payment = data.draw(st.sampled_from(done), label="payment")
            path = f"/v1/payments/{payment.payment_id}/settle"
            status, view = call(self.ledger.call("POST", path))
            assert 200 == status, view
            payment.settled = True

        @rule(how=st.sampled_from(["rebuild projections", "restart"]))
        def rebuild_or_restart(self, how: str) -> None:
            """Every projection rebuilt from position 0, or the service restarted: a new app
            on the same store (nothing in memory survives)."""

            async def rebuild() -> None:
                runner = self.ledger.app[RUNNER]  # type: ignore[index]
                for name in runner.projections:
                    await runner.rebuild(name)

            async def restart() -> None:
                await self.service.stop()
                self.rig.ledger = await self.service.start()

            call(rebuild() if how == "rebuild projections" else restart())

        # ------------------------------------------------------------ the model's checks

        def available(self, provider: str, currency: str) -> Decimal:
            """Funds at `provider` in `currency` per the model: what its payments received
            there, less what its accepted withdrawals reserved."""
            received = sum(
                (
                    Decimal(p.view["received"])
                    for p in self.payments
                    if p.provider == provider and p.view["expected"]["currency"] == currency
                ),
                Decimal(0),
            )
            return received - self.reserved[provider]

        @invariant()
        def the_ledger_agrees_with_the_model(self) -> None:
            """In this order: the views first (the funds model reads them)."""
            self.payments_agree_with_the_model()
            self.journal_balances_and_funds_match()
            self.reconciliation_and_lists_agree()

        def payments_agree_with_the_model(self) -> None:
            for payment in self.payments:
                view = call(self.rig.view(payment.payment_id))
                check_invariants(view)
                assert Decimal(view["received"]) >= Decimal(payment.view["received"]), view
                if view["status"] == "completed":
                    assert view["coverage"] in {"exact", "over"}, view
                if payment.expired_by_clock:
                    assert "expired" == view["status"], view
                if payment.scenario is not None:
                    reference = call(shared.reference(payment.provider, payment.scenario))
                    if payment.all_delivered:
                        assert reference == {name: view[name] for name in MONEY}, view
                    else:
                        assert Decimal(view["received"]) <= Decimal(reference["received"])
                payment.view = view
                self.recorded_once(payment)

        def recorded_once(self, payment: ModelPayment) -> None:
            events = call(self.ledger.store.read_stream(payment.payment_id))
            recorded = [
                decode_document(e.payload) for e in events if e.type == "Payment.DeliveryRecorded"
            ]
            assert len(payment.delivered) == len(recorded), (payment.scenario, len(recorded))
            moved = [
                r["dedupe_key"]
                for r in recorded
                if r["delivery"].get("outcome") == "verified"
                or (r["delivery"].get("outcome") == "not_applied" and r["delivery"].get("verified"))
            ]
            assert len(moved) == len(set(moved)), moved

        def journal_balances_and_funds_match(self) -> None:
            entries = call(self.pages("/v1/journal", limit="500"))
            for entry in entries:
                sums: dict[tuple[str, bool], Decimal] = defaultdict(Decimal)
                for line in entry["postings"]:
                    sums[(line["currency"], line["kind"] == "posted")] += Decimal(line["amount"])
                assert all(total == 0 for total in sums.values()), entry
            balances = call(self.pages("/v1/balances"))
            totals: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
            for item in balances:
                totals[(item["currency"], "posted")] += Decimal(item["posted"])
                totals[(item["currency"], "pending")] += Decimal(item["pending"])
                if item["account"].startswith("provider:"):
                    assert Decimal(item["available"]) >= 0, item
            assert all(total == 0 for total in totals.values()), totals
            for provider, (currency, _) in WITHDRAWALS.items():
                account = f"provider:{provider}:funds"
                available = sum(
                    (
                        Decimal(i["available"])
                        for i in balances
                        if i["account"] == account and i["currency"] == currency
                    ),
                    Decimal(0),
                )
                assert self.available(provider, currency) == available, (provider, balances)

        def reconciliation_and_lists_agree(self) -> None:
            items = call(self.pages("/v1/reconciliation/items", state="open", limit="500"))
            reasons: dict[str, set[str]] = defaultdict(set)
            for item in items:
                reasons[item["subject_id"]].add(item["reason"])
            for payment in self.payments:
                view, found = payment.view, reasons[payment.payment_id]
                received = Decimal(view["received"])
                expected = Decimal(view["expected"]["amount"])
                if payment.settled:
                    assert not found & {"overpaid", "expired_with_funds", "paid_late"}, found
                elif view["status"] in OPEN and 0 < received < expected:
                    assert "underpaid" in found, (view, found)
                elif view["status"] == "completed" and view["coverage"] == "over":
                    assert found & {"overpaid", "paid_late"}, (view, found)
                elif view["status"] in {"expired", "failed"} and received > 0:
                    assert found & {"expired_with_funds", "paid_late"}, (view, found)
            listed = call(self.pages("/v1/payments", limit="500"))
            assert {p.payment_id for p in self.payments} <= {p["payment_id"] for p in listed}

        async def pages(self, path: str, **params: str) -> list[dict[str, Any]]:
            items: list[dict[str, Any]] = []
            while True:
                status, page = await self.ledger.call("GET", path, params=params)
                assert 200 == status, page
                items += page["items"]
                if not page.get("next_cursor"):
                    return items
                params["cursor"] = page["next_cursor"]

    return LedgerModel


async def test_the_ledger_behaves_as_its_model_under_any_sequence_of_operations(
    store, database_url
):
    clock = Clock()
    async with rig(store) as bench, serve(bench.capture.app()) as capture_url:
        shared = Shared(bench, database_url, clock, capture_url)
        call = run_examples(asyncio.get_running_loop())
        machine = make_machine(shared, call)
        chosen = settings(
            max_examples=EXAMPLES,
            stateful_step_count=STEPS,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        )
        await in_thread(lambda: run_state_machine_as_test(machine, settings=chosen))
