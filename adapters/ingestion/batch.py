"""One pass of the applier as one unit of work: every subject it touched, loaded once, the records
that belong to no aggregate, their claims and the applier's new position, appended in one
statement (group commit makes that one transaction). A conflict with another writer (the sweeper
expiring a payment, finance settling one) refuses the whole append; the applier then does the
pass again from what is stored, so a pass is applied entirely or not at all."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from adapters.ingestion.subject_index import find_subject_stream
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
    # What this pass wrote and has not committed yet, read before the store.
    _claimed: set[tuple[str, str]] = field(default_factory=set)
    _totals: dict[str, Decimal] = field(default_factory=dict)
    _changed_totals: set[str] = field(default_factory=set)
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

    async def find(
        self, fact: PaymentUpdate | WithdrawalUpdate
    ) -> ProviderRecordedAggregate | None:
        found = await find_subject_stream(self.store, fact)
        if found is None:
            return None
        subject_type, stream = found
        return await self.subject(subject_type, stream)

    async def claimed(self, namespace: str, key: str) -> bool:
        if (namespace, key) in self._claimed:
            return True
        return await self.store.find_claim(namespace, key) is not None

    def claim(self, claim: Claim) -> None:
        self._claimed.add((claim.namespace, claim.key))
        self.claims.append(claim)

    async def total_held(self, key: str) -> Decimal:
        if key not in self._totals:
            claim = await self.store.find_claim(TOTAL_CLAIM, key)
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
