"""Applying one delivery's fact to its payment or withdrawal: keep the delivery in the subject's
stream, decide whether it may move this subject's money, apply it, or say why it did not."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adapters.ingestion.batch import Batch
from adapters.providers.contract import ProviderAdapter, TokenScope
from ledger.commands import PaymentUpdate, WithdrawalUpdate
from ledger.deliveries import DeliveryOutcome, Verification
from ledger.errors import LedgerError
from ledger.payment import Payment
from ledger.recording import ProviderRecordedAggregate
from ledger.withdrawal import Withdrawal


async def apply_to_subject(
    batch: Batch,
    adapters: Mapping[str, ProviderAdapter],
    subject: ProviderRecordedAggregate,
    fact: PaymentUpdate | WithdrawalUpdate,
    delivery: tuple[dict[str, Any], Verification],
) -> DeliveryOutcome:
    """Applies `fact` of `delivery` (its document and verification) to `subject`, one of the
    batch's subjects."""
    document, verification = delivery
    dedupe_key = str(document["dedupe_key"])
    # A key seen before is a duplicate, unless it was seen only unverified and this copy may
    # move money: an unauthenticated copy sent first must not stop the genuine delivery.
    seen = subject.has_delivery(dedupe_key)
    if seen and (not verification.moves_money or subject.has_verified_delivery(dedupe_key)):
        subject.record_delivery({**document, "outcome": "duplicate"})
        return DeliveryOutcome.DUPLICATE
    verified, reason = await _may_move_money(batch, adapters, subject, fact, delivery)
    if seen and not verified:
        subject.record_delivery({**document, "outcome": "duplicate", "subject_check": reason})
        return DeliveryOutcome.DUPLICATE
    pending_before = len(subject.pending_events)
    outcome = "verified" if verified else "unverified"
    subject.record_delivery({**document, "outcome": outcome, "subject_check": reason})
    try:
        if isinstance(subject, Payment) and isinstance(fact, PaymentUpdate):
            subject.apply_update(fact, received_at=document["received_at"], verified=verified)
        elif isinstance(subject, Withdrawal) and isinstance(fact, WithdrawalUpdate):
            subject.apply_update(fact, verified=verified)
    except LedgerError as broken:
        # Whatever it changed before the rule stopped it is dropped with the object: the batch
        # goes on from a fresh copy as it was before this delivery, which keeps the delivery
        # and says why it moved nothing.
        fresh = await batch.restore(subject, pending_before)
        fresh.record_delivery({**document, "outcome": "not_applied", "verified": verified})
        fresh.record_application_error(dedupe_key, broken.code, str(broken))
        return DeliveryOutcome.NOT_APPLIED
    return DeliveryOutcome.ACCEPTED if verified else DeliveryOutcome.UNVERIFIED


async def _may_move_money(
    batch: Batch,
    adapters: Mapping[str, ProviderAdapter],
    subject: ProviderRecordedAggregate,
    fact: PaymentUpdate | WithdrawalUpdate,
    delivery: tuple[dict[str, Any], Verification],
) -> tuple[bool, str]:
    """Whether this delivery may move this subject's money, and why not when it may not."""
    document, verification = delivery
    if not verification.moves_money:
        return False, verification.reason
    adapter = adapters[subject.provider]  # type: ignore[attr-defined]
    if adapter.webhooks.token_scope is TokenScope.PER_SUBJECT:
        presented = document.get("path_token_sha256")
        claim = await batch.find_claim("callback_token", str(presented)) if presented else None
        if claim is None or claim.stream_id != str(subject.id):
            return False, "token_not_for_this_subject"
    if isinstance(subject, Payment) and isinstance(fact, PaymentUpdate):
        address = fact.reference.pay_address
        if address and subject.pay_address and address != subject.pay_address:
            return False, "address_mismatch"
    return True, ""
