"""The double-entry journal and account balances, from payment, withdrawal and unmatched events.

An event gets one entry when it moves money: the difference between what its subject's state
stands for after it and before it (projections/postings.py). Entries are only ever inserted;
a correction is the next event's reversing difference. Balances are the running sums.
"""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
from typing import Any

from adapters.storage.postgres_store import AnyConnection
from adapters.storage.read_models.base import SubjectProjection
from adapters.storage.read_models.states import shared
from ledger.codec import decode_document
from ledger.deliveries import UnmatchedDelivery
from ledger.payment import Payment
from ledger.ports import RecordedEvent
from projections.postings import (
    Kind,
    PostingKey,
    Postings,
    combine,
    difference,
    payment_targets,
    unmatched_targets,
    withdrawal_targets,
)
from projections.subjects import SUBJECT_TYPE_PREFIXES, is_subject_event

UNMATCHED_RECORD = UnmatchedDelivery.event_type


def subject_targets(aggregate: Any) -> Postings:
    """The postings a state stands for; once per state when projections share a batch (the
    journal and reconciliation both read them)."""
    return shared("subject_targets", _subject_targets, aggregate)


def _subject_targets(aggregate: Any) -> Postings:
    if isinstance(aggregate, Payment):
        return payment_targets(aggregate)
    return withdrawal_targets(aggregate)


def matched_delivery(event: RecordedEvent) -> tuple[str, str, str] | None:
    """(provider, dedupe key, outcome) when `event` records an unmatched delivery now applied
    to its subject; the outcome says whether the subject counted its funds (`verified`)."""
    # Most deliveries were matched on arrival: skip parsing their (large) payload again.
    if not event.type.endswith(".DeliveryRecorded") or b'"matched_later"' not in event.payload:
        return None
    delivery = decode_document(event.payload).get("delivery", {})
    if not delivery.get("matched_later"):
        return None
    return str(delivery["provider"]), str(delivery["dedupe_key"]), str(delivery.get("outcome"))


def reported_unmatched_postings(document: dict[str, Any]) -> Postings:
    """Authenticated funds an unmatched delivery reported; nothing when it was not verified
    (or its proof, a per-payment token, cannot be checked before the payment is known)."""
    verified = document.get("verification", {}).get("outcome") == "verified"
    if not document.get("funds_trusted", verified):
        return {}
    deposits = [
        (Decimal(d["amount"]), str(d["currency"]), bool(d["confirmed"]))
        for d in document.get("deposits", [])
    ]
    return unmatched_targets(str(document["provider"]), deposits)


def _postings_json(postings: Postings) -> list[list[str]]:
    return [[k.account, k.currency, k.kind.value, format(v, "f")] for k, v in postings.items()]


def _postings_from_json(rows: list[list[str]]) -> Postings:
    return {PostingKey(a, c, Kind(k)): Decimal(v) for a, c, k, v in rows}


class JournalBatch:
    """Entries, postings and balance changes of one batch, written together at its end."""

    def __init__(self) -> None:
        self.entries: list[tuple[Any, ...]] = []
        self.postings: list[tuple[Any, ...]] = []
        self.balances: dict[tuple[str, str], list[Decimal]] = defaultdict(
            lambda: [Decimal(0), Decimal(0), Decimal(0)]
        )

    def add(self, event: RecordedEvent, subject: tuple[str, str, str], delta: Postings) -> None:
        subject_type, subject_id, provider = subject
        self.entries.append(
            (
                event.partition,
                event.position,
                event.stream_id,
                event.type,
                subject_type,
                subject_id,
                provider,
                event.recorded_at,
            )
        )
        for line, (key, amount) in enumerate(sorted(delta.items()), start=1):
            account, currency, kind = key.account, key.currency, key.kind.value
            self.postings.append(
                (event.partition, event.position, line, account, currency, kind, amount)
            )
            sums = self.balances[(key.account, key.currency)]
            if key.kind is Kind.POSTED:
                sums[0] += amount
            else:
                sums[1] += amount
                if key.kind is Kind.RESERVED:
                    sums[2] += amount

    async def write(self, connection: AnyConnection) -> None:
        if self.entries:
            await connection.copy_records_to_table(
                "journal_entries",
                records=self.entries,
                columns=[
                    "partition",
                    "position",
                    "stream_id",
                    "event_type",
                    "subject_type",
                    "subject_id",
                    "provider",
                    "recorded_at",
                ],
            )
            await connection.copy_records_to_table(
                "journal_postings",
                records=self.postings,
                columns=["partition", "position", "line", "account", "currency", "kind", "amount"],
            )
        # Every account the batch posted to, even when its postings net to zero here: one event
        # per batch would have made its row, and a rebuild must equal the live model row for row.
        changed = [(a, c, *sums) for (a, c), sums in self.balances.items()]
        if changed:
            await connection.execute(
                "INSERT INTO account_balances (account, currency, posted, pending, reserved)"
                " SELECT * FROM unnest($1::text[], $2::text[], $3::numeric[], $4::numeric[],"
                " $5::numeric[]) ON CONFLICT (account, currency) DO UPDATE SET"
                " posted = account_balances.posted + excluded.posted,"
                " pending = account_balances.pending + excluded.pending,"
                " reserved = account_balances.reserved + excluded.reserved",
                *map(list, zip(*changed, strict=True)),
            )


class JournalProjection(SubjectProjection):
    name: str = "journal"
    tables: tuple[str, ...] = (
        "journal_postings",
        "journal_entries",
        "account_balances",
        "journal_unmatched",
    )
    reads: tuple[str, ...] | None = (*SUBJECT_TYPE_PREFIXES, UNMATCHED_RECORD)

    def derive(self, aggregate: Any) -> Postings:
        return subject_targets(aggregate)

    async def apply(self, connection: AnyConnection, events: list[RecordedEvent]) -> None:
        self._connection = connection
        batch = JournalBatch()
        for event in events:
            if is_subject_event(event):
                await self._subject_event(connection, event, batch)
            elif event.type == UNMATCHED_RECORD:
                await self._unmatched(connection, event, batch)
        await batch.write(connection)

    async def _subject_event(
        self, connection: AnyConnection, event: RecordedEvent, batch: JournalBatch
    ) -> None:
        before, after, aggregate = await self._states.transition(event)
        delta = difference(before or {}, after)
        matched = matched_delivery(event)
        if matched is not None and matched[2] == "verified":
            # The funds held in unmatched suspense now count in this subject: reverse them.
            # (Applied but not verified for this subject, they stay in suspense, and the
            # subject shows them as unverified.)
            held = await connection.fetchval(
                "UPDATE journal_unmatched SET matched = true"
                " WHERE provider = $1 AND dedupe_key = $2 AND NOT matched RETURNING postings",
                *matched[:2],
            )
            if held:
                delta = combine(delta, difference(_postings_from_json(held), {}))
        if delta:
            kind = type(aggregate).__name__.lower()
            batch.add(event, (kind, event.stream_id, aggregate.provider), delta)

    async def _unmatched(
        self, connection: AnyConnection, event: RecordedEvent, batch: JournalBatch
    ) -> None:
        """Holds the funds in unmatched suspense. The same delivery can be recorded unmatched
        twice (an unauthenticated copy, then the genuine one): the entry is the difference."""
        document = decode_document(event.payload)
        postings = reported_unmatched_postings(document)
        held = await connection.fetchval(
            "SELECT postings FROM journal_unmatched WHERE provider = $1 AND dedupe_key = $2",
            document["provider"],
            document["dedupe_key"],
        )
        delta = difference(_postings_from_json(held) if held else {}, postings)
        if not delta:
            return
        await connection.execute(
            "INSERT INTO journal_unmatched (provider, dedupe_key, postings) VALUES ($1, $2, $3)"
            " ON CONFLICT (provider, dedupe_key) DO UPDATE SET postings = excluded.postings",
            document["provider"],
            document["dedupe_key"],
            _postings_json(postings),
        )
        subject_id = f"{document['provider']}:{document['dedupe_key']}"
        batch.add(event, ("unmatched", subject_id, str(document["provider"])), delta)
