"""Random histories of payments and withdrawals across providers and currencies, written to a real
event store through the domain, for projection properties (balancing, replay, exactly-once)."""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import strategies as st

from adapters.services.records import append_record
from adapters.storage.postgres_store import PostgresEventStore
from adapters.storage.repository import AggregateRepository
from ledger.commands import (
    DepositReport,
    PaymentReference,
    PaymentStatusReport,
    PaymentUpdate,
    ProviderPaymentOutcome,
)
from ledger.errors import LedgerError
from ledger.money import Money, currency_scale
from ledger.payment import Payment
from ledger.withdrawal import Withdrawal

START = datetime(2026, 1, 1, tzinfo=UTC)
PROVIDERS = ("coinpay", "cryptofuse", "payment_engine")
CURRENCIES = ("USDT", "ETH", "TRY", "BTC")


def amounts(currency: str) -> st.SearchStrategy[Decimal]:
    scale = currency_scale(currency)
    return st.integers(1, 5 * 10**scale).map(lambda units: Decimal(units).scaleb(-scale))


@st.composite
def step(draw: st.DrawFn) -> tuple[Any, ...]:
    kind = draw(
        st.sampled_from(
            [
                "pay",
                "deposit",
                "deposit",
                "confirm",
                "provider_word",
                "expire",
                "fail",
                "settle",
                "withdraw",
                "withdrawal_move",
                "unmatched",
                "balance",
            ]
        )
    )
    currency = draw(st.sampled_from(CURRENCIES))
    return (
        kind,
        draw(st.sampled_from(PROVIDERS)),
        currency,
        draw(amounts(currency)),
        draw(st.integers(0, 10**6)),  # picks a subject among those that exist
        draw(st.booleans()),  # confirmed / verified / completion flags
        draw(st.sampled_from(list(ProviderPaymentOutcome))),
        draw(st.sampled_from(["processing", "manual_review", "complete", "fail", "cancel"])),
    )


histories = st.lists(step(), min_size=1, max_size=40)


@dataclass
class HistoryWriter:
    store: PostgresEventStore

    def __post_init__(self) -> None:
        self.repository = AggregateRepository(self.store)
        self.payments: list[uuid.UUID] = []
        self.withdrawals: list[uuid.UUID] = []
        self.clock = START
        self.deposits = 0

    def _tick(self) -> datetime:
        self.clock += timedelta(minutes=7)
        return self.clock

    async def write(self, history: list[tuple[Any, ...]]) -> None:
        for entry in history:
            await self.write_step(entry)

    async def write_step(self, entry: tuple[Any, ...]) -> None:
        kind = entry[0]
        try:
            if kind in {"pay", "withdraw", "unmatched", "balance"}:
                await getattr(self, f"_{kind}")(*entry[1:])
            elif kind == "withdrawal_move" and self.withdrawals:
                await self._withdrawal_move(*entry[1:])
            elif kind != "withdrawal_move" and self.payments:
                await self._payment_step(kind, *entry[1:])
        except LedgerError:
            pass  # a rule said no: nothing was saved, which is what the ledger would do too

    async def _pay(self, provider: str, currency: str, amount: Decimal, *_: Any) -> None:
        payment = Payment.create(
            provider=provider,
            provider_ref=uuid.uuid4().hex,
            order_id=uuid.uuid4().hex,
            expected=Money(amount, currency),
            price=Money(amount, currency),
            expires_at=self.clock + timedelta(hours=1),
        )
        await self.repository.save(payment)
        self.payments.append(payment.id)

    async def _payment_step(
        self,
        kind: str,
        provider: str,
        currency: str,
        amount: Decimal,
        pick: int,
        flag: bool,
        outcome: ProviderPaymentOutcome,
        _move: str,
    ) -> None:
        payment = await self.repository.load(Payment, self.payments[pick % len(self.payments)])
        assert payment is not None
        at = self._tick()
        expected = payment.expected.currency
        if kind == "deposit":
            self.deposits += 1
            report = DepositReport(
                f"d{self.deposits}", _in(amount, expected), expected, confirmed=flag
            )
            update = PaymentUpdate(PaymentReference(payment.provider), deposits=(report,))
            payment.apply_update(update, received_at=at, verified=pick % 3 != 0)
        elif kind == "confirm" and payment.deposits:
            known = sorted(payment.deposits.values(), key=lambda d: d.deposit_id)[
                pick % len(payment.deposits)
            ]
            report = DepositReport(known.deposit_id, known.amount, expected, confirmed=True)
            update = PaymentUpdate(PaymentReference(payment.provider), deposits=(report,))
            payment.apply_update(update, received_at=at, verified=flag)
        elif kind == "provider_word":
            status = PaymentStatusReport(outcome.value, outcome, _in(amount, expected), at)
            update = PaymentUpdate(PaymentReference(payment.provider), status=status)
            payment.apply_update(update, received_at=at, verified=flag)
        elif kind == "expire":
            payment.expire(at, by="clock")
        elif kind == "fail":
            payment.fail("provider said no")
        elif kind == "settle":
            payment.settle()
        await self.repository.save(payment)

    async def _withdraw(self, provider: str, currency: str, amount: Decimal, *_: Any) -> None:
        withdrawal = Withdrawal.request(
            provider=provider,
            request_id=uuid.uuid4().hex,
            amount=Money(amount, currency),
            address="addr",
        )
        await self.repository.save(withdrawal)
        self.withdrawals.append(withdrawal.id)

    async def _withdrawal_move(
        self,
        _provider: str,
        _currency: str,
        _amount: Decimal,
        pick: int,
        flag: bool,
        _outcome: ProviderPaymentOutcome,
        move: str,
    ) -> None:
        withdrawal = await self.repository.load(
            Withdrawal, self.withdrawals[pick % len(self.withdrawals)]
        )
        assert withdrawal is not None
        if move == "processing":
            withdrawal.start_processing()
        elif move == "manual_review":
            withdrawal.require_manual_review()
        elif move == "complete":
            fee = withdrawal.requested.amount / 10 if flag else Decimal(0)
            withdrawal.submit(
                "ref", "accepted", fee_network=_in(fee, withdrawal.requested.currency)
            )
            withdrawal.complete("0xhash", None)
        elif move == "fail":
            withdrawal.fail("rejected")
        else:
            withdrawal.cancel("cancelled")
        await self.repository.save(withdrawal)

    async def _unmatched(
        self, provider: str, currency: str, amount: Decimal, pick: int, flag: bool, *_: Any
    ) -> None:
        # As the applier records one: an event in a stream of its own.
        await append_record(
            self.store,
            f"unmatched-{uuid.uuid4()}",
            "Delivery.Unmatched",
            {
                "provider": provider,
                "dedupe_key": uuid.uuid4().hex,
                "verification": {"outcome": "verified" if flag else "unverified"},
                "subject_type": "payment",
                "references": [f"unknown-{pick}"],
                "deposits": [{"amount": amount, "currency": currency, "confirmed": pick % 2 == 0}],
                # The providers here sign their deliveries: verified funds are trusted.
                "funds_trusted": flag,
            },
        )

    async def _balance(self, provider: str, currency: str, amount: Decimal, *_: Any) -> None:
        await append_record(
            self.store,
            f"provider-balances-{provider}",
            "ProviderBalance.Reported",
            {"currency": currency, "available": amount, "verified": True},
        )


def _in(amount: Decimal, currency: str) -> Decimal:
    """`amount` cut to the currency's scale (histories mix currencies freely)."""
    scale = currency_scale(currency)
    return max(amount.quantize(Decimal(1).scaleb(-scale)), Decimal(1).scaleb(-scale))


def seeded_history(seed: int, length: int = 40) -> list[tuple[Any, ...]]:
    """A reproducible history without hypothesis, for tests that need volume, not shrinking."""
    rng = random.Random(seed)
    kinds = ["pay", "pay", "deposit", "deposit", "deposit", "confirm", "provider_word", "expire"]
    kinds += ["fail", "settle", "withdraw", "withdrawal_move", "unmatched", "balance"]
    moves = ["processing", "manual_review", "complete", "fail", "cancel"]
    history = []
    for _ in range(length):
        currency = rng.choice(CURRENCIES)
        scale = currency_scale(currency)
        history.append(
            (
                rng.choice(kinds),
                rng.choice(PROVIDERS),
                currency,
                Decimal(rng.randint(1, 5 * 10**scale)).scaleb(-scale),
                rng.randint(0, 10**6),
                rng.random() < 0.7,
                rng.choice(list(ProviderPaymentOutcome)),
                rng.choice(moves),
            )
        )
    return history
