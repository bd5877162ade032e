"""The demo's report sections. Each one takes the finished `DemoRun` (the running ledger's API
and store, and what the demo asked of it) and prints one part of the report, read back from the
ledger itself rather than from what the demo remembers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from adapters.cli.demo_driver import DemoRun, Subject
from adapters.cli.demo_plan import EXCEPTIONS, LIMITS, SCENARIOS
from adapters.cli.tables import format_table
from ledger.hashchain import GENESIS_HASH, verify_chain

Section = Callable[[DemoRun], Awaitable[None]]


def _money(amount: Any, currency: str) -> str:
    return f"{amount} {currency}" if amount is not None else "-"


async def _view(run: DemoRun, kind: str, subject: Subject) -> dict[str, Any] | None:
    if subject.subject_id is None:
        return None
    status, view = await run.api.call("GET", f"/v1/{kind}/{subject.subject_id}")
    if status != 200 or not isinstance(view, dict):
        run.failed(subject, f"GET /v1/{kind}", status)
        return None
    return view


def _unavailable(subject: Subject, columns: int) -> list[str]:
    return [subject.case.provider, subject.reference, "(error)", *["-"] * (columns - 3)]


async def scenarios_section(run: DemoRun) -> None:
    """One line per scenario the run played (the order and request ids begin with its name),
    then the providers that play one their own way."""
    played = dict.fromkeys(s.case.scenario for s in [*run.payments, *run.withdrawals])
    print("\nScenarios (each order or request id begins with its scenario)")
    for scenario in played:
        print(f"  {scenario:18} {SCENARIOS.get(scenario, '')}")
    for subject in run.payments:
        explained = EXCEPTIONS.get((subject.case.provider, subject.case.scenario))
        if explained:
            print(f"  {subject.case.provider} {subject.case.scenario}: {explained}")


async def payments_section(run: DemoRun) -> None:
    headers = ("provider", "order", "status", "coverage", "late", "expected", "received",
               "overpaid", "settled")  # fmt: skip
    rows = []
    for subject in run.payments:
        view = await _view(run, "payments", subject)
        if view is None:
            rows.append(_unavailable(subject, len(headers)))
            continue
        currency = view["expected"]["currency"]
        rows.append([
            view["provider"],
            view["order_id"],
            view["status"],
            view["coverage"],
            "yes" if view["late"] else "no",
            _money(view["expected"]["amount"], currency),
            _money(view["received"], currency),
            _money(view["overpaid"], currency),
            "yes" if view.get("settled") else "no",
        ])  # fmt: skip
    print("\nPayments (as GET /v1/payments/{id} reports them)")
    right = frozenset({"expected", "received", "overpaid"})
    print("\n".join(format_table(headers, rows, right)))


async def withdrawals_section(run: DemoRun) -> None:
    headers = ("provider", "request", "status", "requested", "fee", "sent", "provider says")
    rows = []
    for subject in run.withdrawals:
        view = await _view(run, "withdrawals", subject)
        if view is None:
            rows.append(_unavailable(subject, len(headers)))
            continue
        requested = view["requested"]
        rows.append([
            view["provider"],
            view["request_id"],
            view["status"],
            _money(requested["amount"], requested["currency"]),
            view["fee"],
            view["sent"] or "-",
            view["provider_status"] or "-",
        ])  # fmt: skip
    print("\nWithdrawals (as GET /v1/withdrawals/{id} reports them)")
    print("\n".join(format_table(headers, rows, frozenset({"requested", "fee", "sent"}))))


async def notes_section(run: DemoRun) -> None:
    print("\nWhat each provider cannot say (so the demo leaves it out or approximates it)")
    providers = dict.fromkeys(s.case.provider for s in run.payments)
    for provider in providers:
        print(f"  {provider:15} {LIMITS[provider]}")
    for note in run.notes:
        print(f"  note: {note}")


async def event_log_section(run: DemoRun) -> None:
    previous, checked = GENESIS_HASH, 0
    async for batch in run.store.read_log(0):
        checked += verify_chain(batch, start_hash=previous)
        previous = batch[-1].hash
    print(f"\nEvent log: {checked} events, hash chain verified from the first (head "
          f"{previous.hex()[:16]}…)")  # fmt: skip
