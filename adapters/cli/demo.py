"""`ledger demo`: payments and withdrawals through the domain and the store, states rebuilt.

Each scenario is driven by the facts a provider would report; the printed state is what replaying
the stored stream gives back, not the object the demo held in memory.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from adapters.storage.postgres_store import PostgresEventStore
from adapters.storage.repository import AggregateRepository
from ledger.commands import (
    DepositReport,
    PaymentReference,
    PaymentStatusReport,
    PaymentUpdate,
    ProviderPaymentOutcome,
)
from ledger.hashchain import verify_chain
from ledger.money import Money
from ledger.payment import Payment
from ledger.withdrawal import Withdrawal

NOW = datetime.now(UTC)


def _deposit(
    deposit_id: str, amount: str, currency: str, *, confirmed: bool = True, minutes: int = 1
) -> DepositReport:
    return DepositReport(
        deposit_id,
        Decimal(amount),
        currency,
        confirmed=confirmed,
        confirmations=20 if confirmed else 1,
        tx_hash=f"0x{deposit_id}",
        observed_at=NOW + timedelta(minutes=minutes),
    )


def _payment(order_id: str, expected: str, currency: str) -> Payment:
    return Payment.create(
        provider="cryptofuse",
        provider_ref=f"cf-{order_id}",
        order_id=order_id,
        expected=Money.of(expected, currency),
        price=Money.of(expected, "USD") if currency != "ETH" else Money.of("3000", "USD"),
        expires_at=NOW + timedelta(minutes=30),
    )


def _scenarios() -> list[tuple[str, Payment, list[PaymentUpdate], datetime]]:
    at = NOW + timedelta(minutes=2)
    after_expiry = NOW + timedelta(minutes=45)
    full = _payment("order-full", "100", "USDT")
    partial = _payment("order-partial", "100", "USDT")
    over = _payment("order-over", "100", "USDT")
    eth = _payment("order-eth", "1.000000000000000001", "ETH")
    late = _payment("order-late", "50", "USDT")
    failed = _payment("order-failed", "25", "USDT")

    def ref(p: Payment) -> PaymentReference:
        return PaymentReference("cryptofuse", p.provider_ref)

    return [
        (
            "full payment, reported twice",
            full,
            [PaymentUpdate(ref(full), deposits=(_deposit("a1", "100", "USDT"),))] * 2,
            at,
        ),
        (
            "partial payment",
            partial,
            [PaymentUpdate(ref(partial), deposits=(_deposit("b1", "50", "USDT"),))],
            at,
        ),
        (
            "over-payment in two deposits, one unconfirmed",
            over,
            [
                PaymentUpdate(
                    ref(over),
                    deposits=(
                        _deposit("c1", "100", "USDT"),
                        _deposit("c2", "50", "USDT", confirmed=False),
                    ),
                )
            ],
            at,
        ),
        (
            "18-decimal ETH, exact",
            eth,
            [PaymentUpdate(ref(eth), deposits=(_deposit("e1", "1.000000000000000001", "ETH"),))],
            at,
        ),
        (
            "funds after expiry",
            late,
            [PaymentUpdate(ref(late), deposits=(_deposit("l1", "50", "USDT", minutes=40),))],
            after_expiry,
        ),
        (
            "provider says failed",
            failed,
            [
                PaymentUpdate(
                    ref(failed),
                    status=PaymentStatusReport(
                        "failed", ProviderPaymentOutcome.FAILED, reported_at=at
                    ),
                )
            ],
            at,
        ),
    ]


async def run_demo(store: PostgresEventStore) -> None:
    repository = AggregateRepository(store)
    print("Payments (state rebuilt from the stored events)")
    print(
        f"{'scenario':48} {'status':10} {'coverage':8} {'late':5} {'received':>26} "
        f"{'pending':>12} {'overpaid':>12}"
    )
    for title, payment, updates, received_at in _scenarios():
        for update in updates:
            key = f"demo:{id(update)}"
            if payment.has_delivery(key):
                continue
            payment.record_delivery({"dedupe_key": key, "source": "demo"})
            payment.apply_update(update, received_at=received_at, verified=True)
        await repository.save(payment)
        rebuilt = await repository.load(Payment, payment.id)
        assert rebuilt is not None
        print(
            f"{title:48} {rebuilt.status:10} {rebuilt.coverage:8} {rebuilt.late!s:5} "
            f"{rebuilt.received!s:>26} {rebuilt.pending.to_str():>12} "
            f"{rebuilt.overpaid.to_str():>12}"
        )

    print("\nWithdrawals")
    for title, steps in (
        ("completed", ("submit", "processing", "complete")),
        ("failed (funds released)", ("submit", "fail")),
        ("manual review", ("submit", "manual_review")),
    ):
        withdrawal = Withdrawal.request(
            provider="cryptofuse",
            request_id=f"w-{title[:6]}",
            amount=Money.of("40", "USDT"),
            address="TXdemo",
        )
        for step in steps:
            if step == "submit":
                withdrawal.submit("cf-w", "pending", Decimal("0.4"), Decimal(1))
            elif step == "processing":
                withdrawal.start_processing()
            elif step == "complete":
                withdrawal.complete("0xfeed", None)
            elif step == "fail":
                withdrawal.fail("provider rejected the address")
            else:
                withdrawal.require_manual_review()
        await repository.save(withdrawal)
        rebuilt_withdrawal = await repository.load(Withdrawal, withdrawal.id)
        assert rebuilt_withdrawal is not None
        sent = rebuilt_withdrawal.sent.to_str() if rebuilt_withdrawal.sent else "-"
        print(
            f"{title:26} {rebuilt_withdrawal.status:14} requested "
            f"{rebuilt_withdrawal.requested} fee {rebuilt_withdrawal.fee.to_str()} sent {sent} "
            f"reserved {rebuilt_withdrawal.reserved.to_str()}"
        )

    checked = 0
    async for batch in store.read_log(0):
        checked += verify_chain(batch, start_hash=batch[0].prev_hash)
    head = await store.head()
    print(
        f"\nEvent log: {head.position} events, hash chain verified over {checked} "
        f"(head {head.hash.hex()[:16]}…)"
    )
