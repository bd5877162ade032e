"""Receipt: verify, read, record as one event, answer (DESIGN.md, "Acknowledge on durable receipt").

Order of checks (API.md): size and provider are checked by the HTTP layer; then signature or
token, JSON, the provider's shape. Every delivery becomes one event in a stream of its own, so
receipts never contend for a stream version: `Delivery.Received` (with its dedupe claim, taken in
the same statement), `Delivery.Duplicate` when that claim was taken before, `Delivery.Rejected`
and `Delivery.Invalid`. The applier does the rest, in log order; a receipt that got its answer is
durable, so it is applied even if the process dies right after answering.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

from adapters.ingestion.text import KEPT_HEADERS, header_text, storable, token_hash
from adapters.providers.contract import (
    ProviderAdapter,
    TokenScope,
    WebhookBodyInvalid,
    WebhookDelivery,
)
from ledger.codec import dumps_canonical
from ledger.deliveries import ReceiptKind, ReceivedDelivery, Verification, VerificationOutcome
from ledger.ports import Claim, ClaimTaken, EventStore, NewEvent

# Dedupe claims: a verified copy and an unverified one of the same body claim apart, so that an
# unauthenticated copy sent first cannot stop the genuine delivery; each is received once.
DEDUPE_CLAIM = "delivery"
DEDUPE_CLAIM_UNVERIFIED = "delivery_unverified"
RECEIPT_STREAM_PREFIX = "delivery-"


@dataclass(frozen=True, slots=True)
class Receipt:
    kind: ReceiptKind
    detail: str = ""


class DeliveryReceipt:
    def __init__(
        self,
        store: EventStore,
        adapters: Mapping[str, ProviderAdapter],
        clock: Callable[[], datetime],
        on_received: Callable[[], None] = lambda: None,
    ) -> None:
        self.store = store
        self.adapters = adapters
        self.clock = clock
        # Wakes the applier in this process (it polls the log as well).
        self.on_received = on_received

    async def receive(
        self, provider: str, body: bytes, headers: Mapping[str, str], path_token: str | None = None
    ) -> Receipt:
        adapter = self.adapters[provider]
        delivery = WebhookDelivery(
            provider=provider,
            body=body,
            headers={k.lower(): header_text(v) for k, v in headers.items()},
            path_token=path_token,
            received_at=self.clock(),
        )
        verification = Verification(VerificationOutcome.UNVERIFIED, "none", "unreadable")
        try:
            verification = adapter.webhooks.authenticate(delivery)
            if verification.outcome is VerificationOutcome.REJECTED:
                await self._record(_received(delivery, verification, reason=verification.reason))
                return Receipt(ReceiptKind.REJECTED, verification.reason)
            translation = storable(adapter.webhooks.translate(delivery), body)
        except WebhookBodyInvalid as invalid:
            await self._record(_received(delivery, verification, reason=invalid.reason))
            return Receipt(ReceiptKind.INVALID, str(invalid))
        except (RecursionError, UnicodeEncodeError) as unreadable:
            # JSON nested past Python's recursion limit (in parsing, canonical dedupe keys,
            # CoinPay's re-serialization), or a lone surrogate (a JSON escape) that a provider's
            # check had to encode: no provider's shape, so unreadable like any other body.
            reason = "too_deep" if isinstance(unreadable, RecursionError) else "unstorable_text"
            await self._record(_received(delivery, verification, reason=reason))
            return Receipt(ReceiptKind.INVALID, reason)
        received = _received(
            delivery,
            verification,
            dedupe_key=translation.dedupe_key,
            event_type=translation.event_type,
        )
        namespace = DEDUPE_CLAIM if verification.moves_money else DEDUPE_CLAIM_UNVERIFIED
        key = f"{provider}:{translation.dedupe_key}"
        if adapter.webhooks.token_scope is TokenScope.PER_SUBJECT and received.path_token_sha256:
            # The token is matched to its payment only by the applier: a copy sent first to a
            # made-up token must not take the genuine delivery's claim, so each token claims
            # apart (the applier keeps the made-up one unverified).
            key = f"{key}:{received.path_token_sha256}"
        try:
            await self._record(received, claim=(namespace, key))
        except ClaimTaken:
            await self._record(received, kind=ReceiptKind.DUPLICATE)
            return Receipt(ReceiptKind.DUPLICATE)
        self.on_received()
        return Receipt(ReceiptKind.RECEIVED)

    async def _record(
        self,
        received: ReceivedDelivery,
        *,
        kind: ReceiptKind | None = None,
        claim: tuple[str, str] | None = None,
    ) -> None:
        if kind is None:
            kind = ReceiptKind.RECEIVED if received.dedupe_key else _refusal_kind(received)
        stream = f"{RECEIPT_STREAM_PREFIX}{uuid.uuid4()}"
        await self.store.append(
            [NewEvent(stream, 1, kind.value, dumps_canonical(received.document()))],
            expected_versions={stream: 0},
            claims=[Claim(claim[0], claim[1], stream)] if claim else (),
        )


def _refusal_kind(received: ReceivedDelivery) -> ReceiptKind:
    rejected = received.verification.outcome is VerificationOutcome.REJECTED
    return ReceiptKind.REJECTED if rejected else ReceiptKind.INVALID


def _received(
    delivery: WebhookDelivery,
    verification: Verification,
    *,
    dedupe_key: str = "",
    event_type: str = "",
    reason: str = "",
) -> ReceivedDelivery:
    assert delivery.received_at is not None
    return ReceivedDelivery(
        provider=delivery.provider,
        received_at=delivery.received_at,
        body=delivery.body,
        verification=verification,
        headers={k: v for k, v in delivery.headers.items() if k in KEPT_HEADERS},
        path_token_sha256=token_hash(delivery.path_token) if delivery.path_token else None,
        dedupe_key=dedupe_key,
        event_type=event_type,
        reason=reason,
    )
