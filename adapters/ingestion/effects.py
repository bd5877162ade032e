"""What applying one pass's events does to its batch: facts applied to subjects, held unmatched,
recorded as provider balances, and deliveries that waited for a subject applied once it is
accepted."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adapters.ingestion.application import apply_to_subject
from adapters.ingestion.batch import Batch
from adapters.ingestion.reading import DeliveryReading, accepted_type
from adapters.ingestion.subject_index import takes_deliveries
from adapters.ingestion.unmatched import hold, waiting_for
from adapters.providers.contract import ProviderAdapter, TokenScope
from adapters.storage.postgres_store import PostgresEventStore
from ledger.codec import decode_document
from ledger.commands import PaymentUpdate, ProviderBalanceReport, WithdrawalUpdate
from ledger.deliveries import DeliveryOutcome, ProviderBalanceReported, ReceivedDelivery
from ledger.payment import Payment
from ledger.ports import Claim, RecordedEvent
from ledger.withdrawal import Withdrawal


class PassEffects:
    def __init__(
        self,
        store: PostgresEventStore,
        adapters: Mapping[str, ProviderAdapter],
        reading: DeliveryReading,
    ) -> None:
        self.store = store
        self.adapters = adapters
        self.reading = reading

    async def apply_facts(
        self,
        facts: list[Any],
        received: ReceivedDelivery,
        document: dict[str, Any],
        batch: Batch,
        *,
        hold_unmatched: bool = True,
    ) -> None:
        for fact in facts:
            if isinstance(fact, ProviderBalanceReport):
                await self._record_balance(fact, received, document, batch)
                continue
            subject = await batch.find(fact)
            if subject is None or not takes_deliveries(subject):
                if hold_unmatched:
                    batch.outcomes.append(
                        await hold(batch, fact, received, funds_trusted=self._trusted(received))
                    )
                continue
            batch.outcomes.append(
                await apply_to_subject(
                    batch, self.adapters, subject, fact, (document, received.verification)
                )
            )

    def _trusted(self, received: ReceivedDelivery) -> bool:
        # A per-payment callback token proves nothing until it is matched to the payment it was
        # issued for: such funds are held as nothing until then.
        scope = self.adapters[received.provider].webhooks.token_scope
        return received.verification.moves_money and scope is not TokenScope.PER_SUBJECT

    async def _record_balance(
        self,
        fact: ProviderBalanceReport,
        received: ReceivedDelivery,
        document: dict[str, Any],
        batch: Batch,
    ) -> None:
        key = f"{received.provider}:{received.dedupe_key}"
        if await batch.claimed("balance_delivery", key):
            batch.outcomes.append(DeliveryOutcome.DUPLICATE)
            return
        stream = f"provider-balances-{received.provider}"
        report = ProviderBalanceReported(
            account=fact.account,
            currency=fact.currency,
            available=fact.available,
            pending=fact.pending,
            reported_at=fact.reported_at or received.received_at,
            verified=received.verification.moves_money,
            delivery=document,
        )
        await batch.record(stream, report.event_type, report.document(), new=False)
        batch.claim(Claim("balance_delivery", key, stream))
        batch.outcomes.append(DeliveryOutcome.ACCEPTED)

    async def match_waiting(
        self, event: RecordedEvent, batch: Batch
    ) -> None:
        """Applies the deliveries that arrived before their subject was accepted, each once."""
        subject = await batch.subject(accepted_type(event), event.stream_id)
        if subject is None:
            return
        provider_ref = str(decode_document(event.payload).get("provider_ref") or "")
        if isinstance(subject, Payment):
            kind, names = "payment", [provider_ref, subject.order_id]
        else:
            assert isinstance(subject, Withdrawal)
            kind, names = "withdrawal", [provider_ref, subject.request_id]
        for record in await waiting_for(
            self.store, subject.provider, kind, [n for n in names if n]
        ):
            received = ReceivedDelivery.from_document(record)
            translation = self.reading.translate(received)
            if translation is None:
                continue
            document = {**record, "received_at": received.received_at, "matched_later": True}
            facts = [
                f for f in translation.facts if isinstance(f, (PaymentUpdate, WithdrawalUpdate))
            ]
            await self.apply_facts(
                facts, received, document, batch, hold_unmatched=False
            )
