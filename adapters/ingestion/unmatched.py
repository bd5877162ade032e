"""Deliveries naming no payment or withdrawal the ledger knows yet: each kept as one record in a
stream of its own, indexed by claims under every name it carries, found again by one keyed query
when its subject appears (the applier sees the subject's acceptance in the log)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal

from adapters.ingestion.batch import TOTAL_CLAIM, Batch
from adapters.storage.postgres_store import PostgresEventStore
from ledger.codec import decode_document
from ledger.commands import PaymentUpdate, WithdrawalUpdate
from ledger.deliveries import DeliveryOutcome, HeldFunds, ReceivedDelivery, UnmatchedDelivery
from ledger.ports import Claim

UNMATCHED_RECORD = UnmatchedDelivery.event_type
# The claim key of an unverified unmatched delivery: apart from the verified one's, so that an
# unauthenticated copy sent first cannot stop the genuine delivery of the same body.
UNVERIFIED_PREFIX = "unverified:"


def index_namespace(provider: str, kind: str, name: str) -> str:
    return f"unmatched:{provider}:{kind}:{name}"


def _names(fact: PaymentUpdate | WithdrawalUpdate) -> list[str]:
    reference = fact.reference
    names = [
        getattr(reference, "provider_ref", None),
        getattr(reference, "order_id", None) or getattr(reference, "request_id", None),
    ]
    return [name for name in dict.fromkeys(names) if name]


@dataclass(frozen=True, slots=True)
class IndexKeys:
    """The claims an unmatched delivery is looked up and indexed by."""

    kind: str  # payment or withdrawal
    names: list[str]
    namespaces: list[str]
    claim_key: str  # its own key: the dedupe key, apart for an unverified copy
    earlier_keys: list[str]  # keys whose presence makes it a duplicate
    totals: list[str]  # running totals held, one per name

    @property
    def claims(self) -> list[tuple[str, str]]:
        """Every claim `hold` reads, so that a pass can read them all in one query."""
        own = [(ns, key) for ns in self.namespaces for key in self.earlier_keys]
        return own + [(TOTAL_CLAIM, total) for total in self.totals]


def index_keys(fact: PaymentUpdate | WithdrawalUpdate, delivery: ReceivedDelivery) -> IndexKeys:
    kind = "payment" if isinstance(fact, PaymentUpdate) else "withdrawal"
    names = _names(fact)
    key = delivery.dedupe_key
    verified = delivery.verification.moves_money
    claim_key = key if verified else UNVERIFIED_PREFIX + key
    return IndexKeys(
        kind=kind,
        names=names,
        namespaces=[index_namespace(delivery.provider, kind, name) for name in names],
        claim_key=claim_key,
        # An unverified copy after the verified one, or any copy held before, is a duplicate.
        earlier_keys=[claim_key] if verified else [claim_key, key],
        totals=[f"{delivery.provider}:{kind}:{name}" for name in names],
    )


async def hold(
    batch: Batch,
    fact: PaymentUpdate | WithdrawalUpdate,
    delivery: ReceivedDelivery,
    *,
    funds_trusted: bool,
) -> DeliveryOutcome:
    """Records `delivery` unmatched under every name `fact` gives its subject."""
    keys = index_keys(fact, delivery)
    kind, names, namespaces, claim_key, totals = (
        keys.kind,
        keys.names,
        keys.namespaces,
        keys.claim_key,
        keys.totals,
    )
    for namespace in namespaces:
        for earlier in keys.earlier_keys:
            if await batch.claimed(namespace, earlier):
                return DeliveryOutcome.DUPLICATE
    held = [await batch.total_held(total) for total in totals]
    record = UnmatchedDelivery(
        delivery=delivery,
        subject_type=kind,
        references=tuple(names),
        deposits=reported_deposits(fact, max(held, default=Decimal(0))),
        funds_trusted=funds_trusted,
    )
    stream = f"unmatched-{uuid.uuid4()}"
    await batch.record(stream, UNMATCHED_RECORD, record.document(), new=True)
    batch.holds_unmatched = True
    for namespace in namespaces:
        batch.claim(Claim(namespace, claim_key, stream))
    if funds_trusted and isinstance(fact, PaymentUpdate) and fact.cumulative is not None:
        for total in totals:
            batch.hold_total(total, fact.cumulative.total)
    return DeliveryOutcome.UNMATCHED


def reported_deposits(
    fact: PaymentUpdate | WithdrawalUpdate, cumulative_held: Decimal = Decimal(0)
) -> tuple[HeldFunds, ...]:
    """The funds an update reports, held in unmatched suspense until their payment appears.
    Of a running total, only the part above what earlier unmatched deliveries for the same
    payment hold (`cumulative_held`)."""
    if not isinstance(fact, PaymentUpdate):
        return ()
    deposits = [HeldFunds(d.amount, d.currency, d.confirmed) for d in fact.deposits]
    if fact.cumulative is not None:
        total = fact.cumulative
        above = max(total.total - cumulative_held, Decimal(0))
        deposits.append(HeldFunds(above, total.currency, total.confirmed, total.total))
    return tuple(deposits)


async def waiting_for(
    store: PostgresEventStore, provider: str, kind: str, names: list[str]
) -> list[dict[str, object]]:
    """The unmatched records naming a subject, each once (a record is indexed under every name
    it carried, and a subject's names may be one string: a CoinCoin provider_ref is the order
    id), verified copies and unverified ones alike."""
    records: list[dict[str, object]] = []
    seen: set[str] = set()
    namespaces = [index_namespace(provider, kind, name) for name in dict.fromkeys(names)]
    rows = await store.pool.fetch(
        "SELECT key, stream_id FROM claims WHERE namespace = ANY($1::text[]) ORDER BY key",
        namespaces,
    )
    for key, stream in ((row["key"], row["stream_id"]) for row in rows):
        if key in seen:
            continue
        seen.add(key)
        verified = not key.startswith(UNVERIFIED_PREFIX)
        dedupe_key = key.removeprefix(UNVERIFIED_PREFIX)
        record = await _record(store, stream, dedupe_key, verified=verified)
        if record is not None:
            records.append(record)
    return records


async def _record(
    store: PostgresEventStore, stream: str, dedupe_key: str, *, verified: bool
) -> dict[str, object] | None:
    for event in await store.read_stream(stream):
        document: dict[str, object] = decode_document(event.payload)
        outcome = document["verification"]["outcome"]  # type: ignore[index]
        if document.get("dedupe_key") == dedupe_key and (outcome == "verified") == verified:
            return document
    return None
