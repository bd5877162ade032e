"""Reconciliation items: findings of payments and withdrawals, unmatched deliveries, and provider
balances that disagree with the ledger's funds at that provider.

An item opens at the event whose state first shows its finding (detected_at is that event's
recorded time, so a rebuild gives the same rows), follows its amounts while it stays open, and is
cleared (kept, with the clearing event's time) when a later state no longer shows it.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from adapters.storage.postgres_store import AnyConnection
from adapters.storage.read_models.base import SubjectProjection
from adapters.storage.read_models.item_changes import ItemChanges, Subject
from adapters.storage.read_models.journal import (
    UNMATCHED_RECORD,
    matched_delivery,
    reported_unmatched_postings,
    subject_targets,
)
from ledger.codec import decode_document
from ledger.deliveries import ProviderBalanceReported
from ledger.payment import Payment
from ledger.ports import RecordedEvent
from projections.findings import Finding, Reason, payment_findings, withdrawal_findings
from projections.postings import Kind, provider_funds
from projections.subjects import SUBJECT_TYPE_PREFIXES, is_subject_event

BALANCE_RECORD = ProviderBalanceReported.event_type
BALANCE_STREAM_PREFIX = "provider-balances-"


@dataclass(frozen=True, slots=True)
class Derived:
    findings: dict[Reason, Finding]
    funds: dict[str, Decimal]  # posted funds at the provider, per currency
    # The merchant's reference (order id, or a withdrawal's request id) and the provider's.
    order_id: str | None
    provider_ref: str | None


def derive(aggregate: Any) -> Derived:
    if isinstance(aggregate, Payment):
        findings = payment_findings(aggregate)
        order_id = aggregate.order_id
    else:
        findings = withdrawal_findings(aggregate)
        order_id = aggregate.request_id
    account = provider_funds(aggregate.provider)
    funds = {
        key.currency: amount
        for key, amount in subject_targets(aggregate).items()
        if key.account == account and key.kind is Kind.POSTED
    }
    return Derived(findings, funds, order_id or None, aggregate.provider_ref or None)


class ReconciliationProjection(SubjectProjection):
    name: str = "reconciliation"
    tables: tuple[str, ...] = (
        "reconciliation_items",
        "reconciliation_funds",
        "reconciliation_unmatched_funds",
    )
    reads: tuple[str, ...] | None = (*SUBJECT_TYPE_PREFIXES, UNMATCHED_RECORD, BALANCE_RECORD)

    def derive(self, aggregate: Any) -> Derived:
        return derive(aggregate)

    async def apply(self, connection: AnyConnection, events: list[RecordedEvent]) -> None:
        self._connection = connection
        funds: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
        items = ItemChanges()
        for event in events:
            if is_subject_event(event):
                await self._subject_event(event, funds, items)
            elif event.type == UNMATCHED_RECORD:
                await _unmatched(connection, event, items)
                await _hold_unmatched_funds(connection, event, funds)
            elif event.type == BALANCE_RECORD:
                await _balance(connection, event, funds, items)
        await items.write(connection)
        await _add_funds(connection, funds)

    async def _subject_event(
        self,
        event: RecordedEvent,
        funds: dict[tuple[str, str], Decimal],
        items: ItemChanges,
    ) -> None:
        before, after, aggregate = await self._states.transition(event)
        subject = Subject(
            type(aggregate).__name__.lower(),
            event.stream_id,
            aggregate.provider,
            after.order_id,
            after.provider_ref,
        )
        previous = before.findings if before else {}
        refs_changed = before is not None and (before.order_id, before.provider_ref) != (
            after.order_id,
            after.provider_ref,
        )
        for reason, finding in after.findings.items():
            if reason not in previous:
                items.open(event, subject, finding)
            elif finding != previous[reason] or refs_changed:
                items.update(event, subject, finding)
        for reason in previous.keys() - after.findings.keys():
            items.clear(event, subject, reason)
        previous_funds = before.funds if before else {}
        for currency in previous_funds.keys() | after.funds.keys():
            change = after.funds.get(currency, Decimal(0)) - previous_funds.get(
                currency, Decimal(0)
            )
            funds[(aggregate.provider, currency)] += change
        matched = matched_delivery(event)
        if matched is not None:
            provider, key, outcome = matched
            delivery = Subject("delivery", f"{provider}:{key}", provider)
            items.clear(event, delivery, Reason.UNMATCHED)
            if outcome == "verified":  # as the journal does: the subject now counts them
                await _release_unmatched_funds(self._connection, provider, key, funds)


async def _unmatched(connection: AnyConnection, event: RecordedEvent, items: ItemChanges) -> None:
    document = decode_document(event.payload)
    provider = str(document["provider"])
    deposits = document.get("deposits", [])
    currency = str(deposits[0]["currency"]) if deposits else ""
    # What the delivery says arrived: a running total as reported, not the increment held.
    reported = sum((Decimal(d.get("cumulative_total", d["amount"])) for d in deposits), Decimal(0))
    finding = Finding(Reason.UNMATCHED, currency, None, None, reported, reported)
    # The names the delivery gives its subject (order id, provider reference), as it gave them.
    names = ", ".join(str(name) for name in document.get("references", [])) or None
    subject = Subject("delivery", f"{provider}:{document['dedupe_key']}", provider, None, names)
    # One delivery can be recorded unmatched twice (an unauthenticated copy, then the genuine
    # one with the same body): it stays one item, which the later record updates.
    if await _is_open(connection, items, subject, Reason.UNMATCHED):
        items.update(event, subject, finding)
    else:
        items.open(event, subject, finding)


async def _hold_unmatched_funds(
    connection: AnyConnection, event: RecordedEvent, funds: dict[tuple[str, str], Decimal]
) -> None:
    """Counts the funds the journal holds in unmatched suspense (the same rule decides)."""
    document = decode_document(event.payload)
    provider, key = str(document["provider"]), str(document["dedupe_key"])
    account = provider_funds(provider)
    held = {
        k.currency: amount
        for k, amount in reported_unmatched_postings(document).items()
        if k.account == account and k.kind is Kind.POSTED
    }
    await _release_unmatched_funds(connection, provider, key, funds)
    for currency, amount in held.items():
        funds[(provider, currency)] += amount
    await connection.executemany(
        "INSERT INTO reconciliation_unmatched_funds (provider, dedupe_key, currency, posted)"
        " VALUES ($1, $2, $3, $4)",
        [(provider, key, currency, amount) for currency, amount in held.items()],
    )


async def _release_unmatched_funds(
    connection: AnyConnection | None,
    provider: str,
    key: str,
    funds: dict[tuple[str, str], Decimal],
) -> None:
    assert connection is not None
    rows = await connection.fetch(
        "DELETE FROM reconciliation_unmatched_funds WHERE provider = $1 AND dedupe_key = $2"
        " RETURNING currency, posted",
        provider,
        key,
    )
    for row in rows:
        funds[(provider, row["currency"])] -= row["posted"]


async def _is_open(
    connection: AnyConnection, items: ItemChanges, subject: Subject, reason: Reason
) -> bool:
    """Whether the item is open as the log stands at this event (this batch's changes first)."""
    is_open = items.open_in_batch(subject, reason)
    if is_open is None:
        is_open = bool(
            await connection.fetchval(
                "SELECT 1 FROM reconciliation_items WHERE subject_type = $1 AND subject_id = $2"
                " AND reason = $3 AND cleared_at IS NULL",
                subject.type,
                subject.id,
                reason.value,
            )
        )
    return is_open


async def _balance(
    connection: AnyConnection,
    event: RecordedEvent,
    funds: dict[tuple[str, str], Decimal],
    items: ItemChanges,
) -> None:
    """Compares a provider's verified balance with the ledger's posted funds there, as the log
    stands at this event (the stored tally plus this batch's changes so far)."""
    document = decode_document(event.payload)
    if not document.get("verified", False) or document.get("available") is None:
        return  # an unauthenticated balance is kept for the record and compared with nothing
    provider = event.stream_id.removeprefix(BALANCE_STREAM_PREFIX)
    currency = str(document["currency"])
    stored = await connection.fetchval(
        "SELECT posted FROM reconciliation_funds WHERE provider = $1 AND currency = $2",
        provider,
        currency,
    )
    ledger = (stored or Decimal(0)) + funds[(provider, currency)]
    reported = Decimal(document["available"])
    subject = Subject("provider", f"{provider}:{currency}", provider)
    reason = Reason.PROVIDER_BALANCE_MISMATCH
    is_open = await _is_open(connection, items, subject, reason)
    if reported == ledger:
        if is_open:
            items.clear(event, subject, reason)
        return
    finding = Finding(reason, currency, None, ledger, reported, reported - ledger)
    if is_open:
        items.update(event, subject, finding)
    else:
        items.open(event, subject, finding)


async def _add_funds(connection: AnyConnection, funds: dict[tuple[str, str], Decimal]) -> None:
    changed = [(p, c, amount) for (p, c), amount in funds.items() if amount]
    if changed:
        await connection.execute(
            "INSERT INTO reconciliation_funds (provider, currency, posted)"
            " SELECT * FROM unnest($1::text[], $2::text[], $3::numeric[])"
            " ON CONFLICT (provider, currency) DO UPDATE"
            " SET posted = reconciliation_funds.posted + excluded.posted",
            *map(list, zip(*changed, strict=True)),
        )
