"""One pass of the applier as one unit of work: every subject it touched, loaded once, the records
that belong to no aggregate, their claims and the applier's new position, appended in one
statement (group commit makes that one transaction). A conflict with another writer (the sweeper
expiring a payment, finance settling one) refuses the whole append; the applier then does the
pass again from what is stored, so a pass is applied entirely or not at all."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from adapters.ingestion.subject_index import claims_named, streams_named, subject_keys
from adapters.storage.postgres_store import PostgresEventStore
from adapters.storage.repository import AggregateRepository
from ledger.codec import dumps_canonical
from ledger.commands import PaymentUpdate, WithdrawalUpdate
from ledger.deliveries import DeliveryOutcome
from ledger.ports import Claim, NewEvent
from ledger.recording import ProviderRecordedAggregate

# Running totals held by unmatched deliveries, one claim per (provider, payment name): its value
# is the highest total held so far, so a new delivery reads one key instead of every record.
TOTAL_CLAIM = "unmatched_total"
TOTAL_HOLDER = "unmatched-totals"


@dataclass
class Batch:
    store: PostgresEventStore
    repository: AggregateRepository
    subjects: dict[str, ProviderRecordedAggregate] = field(default_factory=dict)
    records: list[NewEvent] = field(default_factory=list)
    claims: list[Claim] = field(default_factory=list)
    outcomes: list[DeliveryOutcome] = field(default_factory=list)
    holds_unmatched: bool = False  # it records unmatched deliveries not committed yet
    # What this pass wrote and has not committed yet, read before the store.
    _claimed: set[tuple[str, str]] = field(default_factory=set)
    _totals: dict[str, Decimal] = field(default_factory=dict)
    _changed_totals: set[str] = field(default_factory=set)
    # Subject claims resolved in this pass: (namespace, key) -> holding stream, or None.
    _streams: dict[tuple[str, str], str | None] = field(default_factory=dict)
    # Other claims read in this pass (unmatched index, totals): (namespace, key) -> claim, or None.
    _known: dict[tuple[str, str], Claim | None] = field(default_factory=dict)
    _record_versions: dict[str, int] = field(default_factory=dict)

    async def subject(
        self, subject_type: type[ProviderRecordedAggregate], stream: str
    ) -> ProviderRecordedAggregate | None:
        if stream not in self.subjects:
            loaded = await self.repository.load(subject_type, stream)
            if loaded is None:
                return None
            self.subjects[stream] = loaded
        found = self.subjects[stream]
        return found if isinstance(found, subject_type) else None

    async def prefetch(
        self,
        facts: list[PaymentUpdate | WithdrawalUpdate],
        streams: Mapping[str, type[ProviderRecordedAggregate]] | None = None,
    ) -> None:
        """Resolves the subjects `facts` name in one query and loads them, and the subjects of
        `streams`, side by side, so that the pass then works from memory."""
        named = [subject_keys(fact) for fact in facts]
        keys = [key for _, fact_keys in named for key in fact_keys]
        self._streams.update(dict.fromkeys(keys))
        self._streams.update(await streams_named(self.store, keys))
        found = dict(streams or {}) | {
            stream: subject_type
            for subject_type, fact_keys in named
            for key in fact_keys
            if (stream := self._streams.get(key)) is not None
        }
        missing = {stream: kind for stream, kind in found.items() if stream not in self.subjects}
        if missing:
            loaded = await self.repository.load_many(missing, self.store)
            self.subjects.update(
                (stream, subject)
                for stream, subject in loaded.items()
                if isinstance(subject, ProviderRecordedAggregate)
            )

    def names_known_subject(self, fact: PaymentUpdate | WithdrawalUpdate) -> bool:
        """Whether `fact`'s subject was resolved to a stream by `prefetch`."""
        return any(self._streams.get(key) is not None for key in subject_keys(fact)[1])

    async def find(
        self, fact: PaymentUpdate | WithdrawalUpdate
    ) -> ProviderRecordedAggregate | None:
        """The subject `fact` names, from what this pass resolved or the store."""
        subject_type, keys = subject_keys(fact)
        for key in keys:
            if key not in self._streams:
                claim = await self.store.find_claim(*key)
                self._streams[key] = claim.stream_id if claim is not None else None
            stream = self._streams[key]
            if stream is not None:
                return await self.subject(subject_type, stream)
        return None

    async def restore(
        self, subject: ProviderRecordedAggregate, pending_before: int
    ) -> ProviderRecordedAggregate:
        """A fresh copy of `subject` as it was when it had `pending_before` new events: loaded
        from the store again, with this pass's earlier events applied to it once more. It
        replaces `subject` in the batch; the changed object is dropped, not repaired."""
        stream = str(subject.id)
        fresh = await self.repository.load(type(subject), stream)
        assert fresh is not None  # it was loaded from the store in this pass
        for event in subject.pending_events[:pending_before]:
            event.mutate(fresh)
            fresh.pending_events.append(event)
        self.subjects[stream] = fresh
        return fresh

    async def find_claim(self, namespace: str, key: str) -> Claim | None:
        return await self.store.find_claim(namespace, key)

    async def prefetch_claims(self, keys: list[tuple[str, str]]) -> None:
        """Reads the claims `keys` in one query, for `claimed` and `total_held` to answer."""
        wanted = [key for key in keys if key not in self._known]
        self._known.update(dict.fromkeys(wanted))
        self._known.update(await claims_named(self.store, wanted))

    async def _claim(self, namespace: str, key: str) -> Claim | None:
        if (namespace, key) not in self._known:
            self._known[namespace, key] = await self.store.find_claim(namespace, key)
        return self._known[namespace, key]

    async def claimed(self, namespace: str, key: str) -> bool:
        if (namespace, key) in self._claimed:
            return True
        return await self._claim(namespace, key) is not None

    def claim(self, claim: Claim) -> None:
        self._claimed.add((claim.namespace, claim.key))
        self.claims.append(claim)

    async def total_held(self, key: str) -> Decimal:
        if key not in self._totals:
            claim = await self._claim(TOTAL_CLAIM, key)
            self._totals[key] = Decimal(claim.value) if claim is not None else Decimal(0)
        return self._totals[key]

    def hold_total(self, key: str, total: Decimal) -> None:
        self._totals[key] = max(self._totals.get(key, Decimal(0)), total)
        self._changed_totals.add(key)

    async def record(self, stream: str, event_type: str, document: object, *, new: bool) -> None:
        """Appends a record to `stream`: a stream of its own (`new`), or a shared one at its
        next version."""
        if stream not in self._record_versions:
            self._record_versions[stream] = 0 if new else await self.store.stream_version(stream)
        self._record_versions[stream] += 1
        payload = dumps_canonical(document)
        version = self._record_versions[stream]
        self.records.append(NewEvent(stream, version, event_type, payload, {"record": True}))

    async def commit(self, position: Claim) -> None:
        totals = [
            Claim(TOTAL_CLAIM, key, TOTAL_HOLDER, str(self._totals[key]), replaces=TOTAL_HOLDER)
            for key in sorted(self._changed_totals)
        ]
        await self.repository.save(
            *self.subjects.values(), claims=[*self.claims, *totals, position], extra=self.records
        )
