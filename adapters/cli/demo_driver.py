"""Drives the demo's cases over real HTTP: payments and withdrawals are created through the
ledger's API (which calls the provider sandboxes), and each sandbox is then told to play a
scenario, whose webhooks it posts to the ledger. What the demo reports is read back from the API.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp

from adapters.cli.demo_plan import PaymentCase, WithdrawalCase
from adapters.cli.demo_schema import DemoDatabase
from adapters.providers.contract import ProviderCallFailed
from adapters.services.balances import BalancePoller
from adapters.storage.postgres_store import PostgresEventStore

# A withdrawal may be refused for want of funds until the balances have caught up with the
# payments just received; the demo waits that long for them before calling it a problem.
FUNDS_WAIT_SECONDS = 5.0
_FUNDS_POLL_SECONDS = 0.1


class LedgerClock:
    """The ledger's own time (expiry, lateness): the wall clock, which the demo can move ahead
    instead of waiting for a payment's lifetime to run out."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, by: timedelta) -> None:
        self.offset += by


@dataclass(frozen=True, slots=True)
class LedgerApi:
    """The running ledger's internal API, with a token that holds every scope."""

    url: str
    token: str
    http: aiohttp.ClientSession

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.token}"}
        async with self.http.request(method, self.url + path, json=body, headers=headers) as reply:
            text = await reply.text()
            try:
                return reply.status, await reply.json(content_type=None)
            except ValueError:
                return reply.status, text


@dataclass(slots=True)
class Subject:
    """One payment or withdrawal the demo asked for, and what became of the asking."""

    case: PaymentCase | WithdrawalCase
    reference: str  # our order_id or request_id
    subject_id: str | None = None
    provider_ref: str | None = None
    error: str | None = None


@dataclass(slots=True)
class DemoRun:
    """Everything the report sections get: the running ledger and what was done to it."""

    api: LedgerApi
    store: PostgresEventStore
    sandbox_urls: Mapping[str, str]
    database: DemoDatabase
    payments: list[Subject] = field(default_factory=list)
    withdrawals: list[Subject] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def failed(self, subject: Subject, step: str, detail: object) -> None:
        message = f"{subject.case.provider} {subject.case.scenario}: {step}: {detail}"
        subject.error = subject.error or message
        self.problems.append(message)


def _short(detail: object, limit: int = 300) -> str:
    text = str(detail)
    return text if len(text) <= limit else text[:limit] + "…"


class ScenarioDriver:
    def __init__(self, run: DemoRun, clock: LedgerClock) -> None:
        self.run = run
        self.clock = clock
        self.suffix = secrets.token_hex(3)  # order ids stay unique across runs on one database

    async def payments(self, cases: list[PaymentCase]) -> None:
        """Creates every payment, plays the scenarios due on time, moves the ledger's clock past
        the short lifetimes if any case needs it, then plays the late ones."""
        subjects = [Subject(case, f"{case.scenario}_{self.suffix}") for case in cases]
        self.run.payments.extend(subjects)
        await _per_provider(subjects, self._create_payment)
        await _per_provider(
            [s for s in subjects if not _after_expiry(s)], self._play_payment_scenario
        )
        late = [s for s in subjects if _after_expiry(s)]
        minutes = max((_lifetime(s) for s in subjects), default=0)
        if minutes:
            self.clock.advance(timedelta(minutes=minutes + 1))
            self.run.notes.append(
                f"The ledger's clock was moved {minutes + 1} min ahead (instead of waiting) so "
                f"that payments with a {minutes}-minute lifetime expire by the ledger's clock."
            )
        await _per_provider(late, self._play_payment_scenario)

    async def settle_completed(self) -> None:
        """Settles every completed payment, as finance would (POST /v1/payments/{id}/settle):
        its funds move from payments:received to merchant:payable, which withdrawals draw on."""
        settled = 0
        for subject in self.run.payments:
            if subject.subject_id is None:
                continue
            path = f"/v1/payments/{subject.subject_id}"
            status, view = await self.run.api.call("GET", path)
            if status != 200 or view.get("status") != "completed":
                continue
            status, answer = await self.run.api.call("POST", path + "/settle")
            if status != 200:
                self.run.failed(subject, f"POST {path}/settle", f"{status} {_short(answer)}")
                continue
            settled += 1
        self.run.notes.append(
            f"{settled} completed payments were settled (POST /v1/payments/{{id}}/settle): what "
            "they received is owed to the merchant (merchant:payable); settling also acknowledges "
            "an overpayment, whose excess stays in suspense:overpayment (no refunds yet)."
        )

    async def withdrawals(self, cases: list[WithdrawalCase]) -> None:
        subjects = [Subject(case, f"w_{case.scenario}_{self.suffix}") for case in cases]
        self.run.withdrawals.extend(subjects)
        await _per_provider(subjects, self._withdraw)

    async def _create_payment(self, subject: Subject) -> None:
        case = subject.case
        assert isinstance(case, PaymentCase)
        body: dict[str, Any] = {
            "provider": case.provider,
            "order_id": subject.reference,
            "amount": case.price.amount,
            "currency": case.price.currency,
        }
        if case.price.pay_currency:
            body["pay_currency"] = case.price.pay_currency
        if case.expires_in_minutes:
            body["expires_in_minutes"] = case.expires_in_minutes
        status, answer = await self.run.api.call("POST", "/v1/payments", body)
        if status != 201:
            self.run.failed(subject, "POST /v1/payments", f"{status} {_short(answer)}")
            return
        subject.subject_id, subject.provider_ref = answer["payment_id"], answer["provider_ref"]

    async def _play_payment_scenario(self, subject: Subject) -> None:
        if subject.provider_ref is not None:
            await self._play(subject, "payments")

    async def _withdraw(self, subject: Subject) -> None:
        case = subject.case
        assert isinstance(case, WithdrawalCase)
        body: dict[str, Any] = {
            "provider": case.provider,
            "request_id": subject.reference,
            "amount": case.amount,
            "currency": case.currency,
            "address": case.address,
        }
        if case.pay_currency:
            body["pay_currency"] = case.pay_currency
        deadline = asyncio.get_running_loop().time() + FUNDS_WAIT_SECONDS
        status, answer = await self.run.api.call("POST", "/v1/withdrawals", body)
        while _for_want_of_funds(status, answer) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(_FUNDS_POLL_SECONDS)
            status, answer = await self.run.api.call("POST", "/v1/withdrawals", body)
        if status != 201:
            self.run.failed(subject, "POST /v1/withdrawals", f"{status} {_short(answer)}")
            return
        subject.subject_id, subject.provider_ref = answer["withdrawal_id"], answer["provider_ref"]
        await self._play(subject, "withdrawals")

    async def _play(self, subject: Subject, kind: str) -> None:
        """Asks the sandbox to play the subject's scenario; every webhook it sends must be 200."""
        sandbox = self.run.sandbox_urls[subject.case.provider]
        path = f"/_sandbox/{kind}/{subject.provider_ref}/scenario"
        http = self.run.api.http
        async with http.post(sandbox + path, json={"scenario": subject.case.scenario}) as reply:
            answer = await reply.json(content_type=None)
            if reply.status != 200:
                self.run.failed(subject, f"sandbox {path}", f"{reply.status} {_short(answer)}")
                return
        # (A sandbox's own `note` on what it approximated is already in demo_plan.LIMITS.)
        for delivery in answer.get("deliveries", []):
            if delivery.get("status") != 200:
                self.run.failed(subject, "webhook", f"ledger answered {delivery.get('status')}")


async def poll_balances(run: DemoRun, poller: BalancePoller) -> None:
    """Asks every provider that can say what it holds, once the payments are in and before any
    withdrawal: reconciliation compares each answer with the ledger's funds at that provider."""
    polled: dict[str, int] = {}
    for provider in run.sandbox_urls:
        try:
            polled[provider] = await poller.poll(provider)
        except ProviderCallFailed as failure:
            run.problems.append(f"{provider} balances: {_short(failure)}")
    asked = ", ".join(f"{p} ({n})" for p, n in polled.items() if n) or "none"
    run.notes.append(
        f"Provider balances were polled after the payments, before any withdrawal: {asked}; "
        "reconciliation compares each with the ledger's funds at that provider."
    )


def _after_expiry(subject: Subject) -> bool:
    return isinstance(subject.case, PaymentCase) and subject.case.after_ledger_expiry


def _lifetime(subject: Subject) -> int:
    """The lifetime the demo asked for (only cases that the ledger's clock expires ask one)."""
    case = subject.case
    return (case.expires_in_minutes or 0) if isinstance(case, PaymentCase) else 0


def _for_want_of_funds(status: int, answer: Any) -> bool:
    return (
        status == 422
        and isinstance(answer, dict)
        and str(answer.get("type", "")).endswith("insufficient-funds")
    )


async def _per_provider(
    subjects: Iterable[Subject], step: Callable[[Subject], Awaitable[None]]
) -> None:
    """Providers run side by side; each provider's subjects one after the other, in order."""
    by_provider: dict[str, list[Subject]] = {}
    for subject in subjects:
        by_provider.setdefault(subject.case.provider, []).append(subject)

    async def in_order(queue: list[Subject]) -> None:
        for subject in queue:
            await step(subject)

    await asyncio.gather(*(in_order(queue) for queue in by_provider.values()))
