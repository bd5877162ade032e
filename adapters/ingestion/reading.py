"""What the applier reads from the log: the events it acts on, each decoded and translated once
per pass into a `ToApply`."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from adapters.ingestion.text import storable
from adapters.providers.contract import (
    Operation,
    ProviderAdapter,
    WebhookBodyInvalid,
    WebhookDelivery,
)
from ledger.codec import decode_document
from ledger.commands import PaymentUpdate, Translation, WithdrawalUpdate
from ledger.deliveries import ReceiptKind, ReceivedDelivery
from ledger.payment import Payment
from ledger.ports import RecordedEvent
from ledger.withdrawal import Withdrawal

log = logging.getLogger(__name__)

PAYMENT_ACCEPTED = "Payment.Submitted"
WITHDRAWAL_ACCEPTED = "Withdrawal.Submitted"
ACCEPTANCES = frozenset((PAYMENT_ACCEPTED, WITHDRAWAL_ACCEPTED))
READ_TYPES = [ReceiptKind.RECEIVED.value, ReceiptKind.REJECTED.value, *sorted(ACCEPTANCES)]


@dataclass(frozen=True, slots=True)
class ToApply:
    """One event of a pass: an acceptance, or a delivery with its translated facts (none when
    there is nothing to do with it)."""

    event: RecordedEvent
    received: ReceivedDelivery | None = None
    document: dict[str, Any] = field(default_factory=dict)
    facts: tuple[Any, ...] = ()
    hold_unmatched: bool = True
    acceptance: bool = False

    @property
    def subject_facts(self) -> list[PaymentUpdate | WithdrawalUpdate]:
        return [f for f in self.facts if isinstance(f, (PaymentUpdate, WithdrawalUpdate))]


class ProviderNotConfigured(Exception):
    def __init__(self, position: int, provider: str) -> None:
        super().__init__(
            f"the delivery at log position {position} is {provider}'s, which this process does"
            " not configure; the applier waits there"
        )


class DeliveryReading:
    """Turns log events into what the applier does with them, with the provider's adapter."""

    def __init__(self, adapters: Mapping[str, ProviderAdapter]) -> None:
        self.adapters = adapters

    def read(self, event: RecordedEvent) -> ToApply:
        """What an event asks of the applier, decoded and translated once per pass."""
        if event.type in ACCEPTANCES:
            return ToApply(event, acceptance=True)
        document: dict[str, Any] = decode_document(event.payload)
        received = ReceivedDelivery.from_document(document)
        adapter = self.adapters.get(received.provider)
        rejected = event.type == ReceiptKind.REJECTED.value
        if adapter is None:
            # Received while it was configured: applying nothing would lose it, so the applier
            # stops here (reads answer 503) until the provider is configured again.
            raise ProviderNotConfigured(event.position, received.provider)
        if rejected and not adapter.supports(Operation.QUERY_PAYMENT):
            return ToApply(event)  # nothing could ever confirm it: only a rejected attempt
        translation = self.translate(received)
        if translation is None:
            return ToApply(event)
        document = {**document, "received_at": received.received_at}
        facts = list(translation.facts)
        if rejected:
            # Kept, unverified, in the stream of each known payment it names, where the
            # provider can be asked about it; it moves no money and is never held unmatched.
            document |= {"dedupe_key": translation.dedupe_key, "event_type": translation.event_type}
            facts = [fact for fact in facts if isinstance(fact, PaymentUpdate)]
        return ToApply(event, received, document, tuple(facts), hold_unmatched=not rejected)

    def translate(self, received: ReceivedDelivery) -> Translation | None:
        """The delivery's translation, when it is one the ledger can store and compute with:
        rejected deliveries were never translated on receipt (they were refused first), so the
        receipt's checks are made here (a NUL, a lone surrogate, 1e999999999)."""
        delivery = WebhookDelivery(
            provider=received.provider,
            body=received.body,
            headers=received.headers,
            received_at=received.received_at,
        )
        try:
            translated = self.adapters[received.provider].webhooks.translate(delivery)
            return storable(translated, received.body)
        except (WebhookBodyInvalid, RecursionError, UnicodeEncodeError):
            # Rejected and unreadable, or readable on receipt and the adapter changed since: the
            # receipt stays, as the record of the attempt.
            log.info("%s delivery at receipt %s not applied: unreadable", received.provider,
                     received.dedupe_key or "(rejected)")
            return None


def accepted_type(event: RecordedEvent) -> type[Payment | Withdrawal]:
    return Payment if event.type == PAYMENT_ACCEPTED else Withdrawal
