"""Cryptofuse payloads (webhooks and status answers) turned into ledger facts.

Shapes the document shows, all accepted:
- the full envelope `{transaction_id, event, status, timestamp, data: {...}}`;
- the "special cases" snippets, whose fields sit at the top level without `data` (overpayment,
  partial) or with almost nothing at all (expired: `{status, timestamp}`);
- withdrawal envelopes `{withdrawal_id, event: "withdrawal_status_update", status, data}`;
- the status answer of `POST /payments/status/`, which has the shape of a webhook's `data`.

Choices the document leaves open (see the module constants and the provider note):
- The payment reference is the envelope's `transaction_id`. The document's "confirming" example
  carries a different `transaction_id` inside `data`; the envelope's is the one the
  integration examples look payments up by, so `data.transaction_id` is only a fallback.
- Funds are counted only from `payment_history` entries (one deposit each, by `deposit_id`).
  `total_paid_amount` is recorded as what the provider reports, never as funds, so a delivery
  without history (the snippets) cannot double count a deposit another delivery listed.
- `rejected_amount` (overpayment the provider refused) is not a fact the ledger has a field for;
  it stays in the raw delivery only and is never counted as received.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from adapters.providers.canonical import canonical_json, payload_dedupe_key
from adapters.providers.contract import WebhookBodyInvalid, parse_webhook_object
from adapters.providers.cryptofuse import fields
from adapters.providers.cryptofuse.fields import PayloadShapeError
from adapters.providers.cryptofuse.settings import PROVIDER_ID
from ledger.commands import (
    DepositReport,
    PaymentReference,
    PaymentStatusReport,
    PaymentUpdate,
    ProviderPaymentOutcome,
    ProviderWithdrawalOutcome,
    Translation,
    WithdrawalReference,
    WithdrawalUpdate,
)

if TYPE_CHECKING:
    from collections.abc import Mapping
    from decimal import Decimal

PAYMENT_EVENT = "payment_status_update"
WITHDRAWAL_EVENT = "withdrawal_status_update"
STATUS_QUERY_EVENT = "payment_status_query"

_PAYMENT_OUTCOMES: dict[str, ProviderPaymentOutcome] = {
    "waiting": ProviderPaymentOutcome.PENDING,
    "confirming": ProviderPaymentOutcome.CONFIRMING,
    "partially_paid": ProviderPaymentOutcome.PARTIALLY_PAID,
    "expired": ProviderPaymentOutcome.EXPIRED,
    "failed": ProviderPaymentOutcome.FAILED,
}

# "completed" says which kind of completion in `payment_type`; absent means a plain full payment.
_COMPLETED_OUTCOMES: dict[str | None, ProviderPaymentOutcome] = {
    None: ProviderPaymentOutcome.PAID,
    "full": ProviderPaymentOutcome.PAID,
    "overpayment": ProviderPaymentOutcome.OVERPAID,
    "partial": ProviderPaymentOutcome.PARTIALLY_PAID,
}

# Words after which the provider has finished counting: their deposits are final whatever the
# confirmation count says.
_FINAL_PAYMENT_WORDS = frozenset({"completed", "partially_paid"})

_WITHDRAWAL_OUTCOMES: dict[str, ProviderWithdrawalOutcome] = {
    "pending": ProviderWithdrawalOutcome.SUBMITTED,
    "processing": ProviderWithdrawalOutcome.PROCESSING,
    "completed": ProviderWithdrawalOutcome.COMPLETED,
    "failed": ProviderWithdrawalOutcome.FAILED,
}


def payment_outcome(status_word: str, payment_type: str | None) -> ProviderPaymentOutcome:
    if status_word == "completed":
        return _COMPLETED_OUTCOMES.get(payment_type, ProviderPaymentOutcome.UNKNOWN)
    return _PAYMENT_OUTCOMES.get(status_word, ProviderPaymentOutcome.UNKNOWN)


def withdrawal_outcome(status_word: str) -> ProviderWithdrawalOutcome:
    return _WITHDRAWAL_OUTCOMES.get(status_word, ProviderWithdrawalOutcome.UNKNOWN)


def dedupe_key(parsed: Any, kind: str = "") -> str:
    """The document has no event id, so the canonical payload's hash is the key. Its `timestamp`
    makes each status update distinct while a byte-for-byte (or reformatted) redelivery repeats."""
    return payload_dedupe_key(f"{PROVIDER_ID}:{kind}" if kind else PROVIDER_ID, parsed)


class PayloadTranslator:
    def __init__(self, default_currency: str, confirmations_required: int) -> None:
        self.default_currency = default_currency
        self.confirmations_required = confirmations_required

    def translate_webhook(self, body: bytes) -> Translation:
        parsed = parse_webhook_object(body)
        try:
            return self._webhook(parsed)
        except PayloadShapeError as error:
            raise WebhookBodyInvalid("wrong_shape", str(error)) from None

    def translate_status(self, body: bytes, provider_ref: str) -> Translation:
        """The answer of `POST /payments/status/`: a webhook's `data`, or (tolerated) a whole
        envelope. Raises WebhookBodyInvalid like a delivery would."""
        parsed = parse_webhook_object(body)
        try:
            data = fields.mapping_or_empty(parsed, "data") or parsed
            envelope = parsed if data is not parsed else {}
            update = self._payment_update(envelope, data, fallback_ref=provider_ref)
        except PayloadShapeError as error:
            raise WebhookBodyInvalid("wrong_shape", str(error)) from None
        return Translation(
            dedupe_key=dedupe_key(parsed, "status"),
            facts=(update,),
            event_type=STATUS_QUERY_EVENT,
        )

    def _webhook(self, parsed: Mapping[str, Any]) -> Translation:
        data = fields.mapping_or_empty(parsed, "data")
        event = fields.word(parsed, "event")
        key = dedupe_key(parsed)
        if event is None:
            # The snippets carry no event word: a withdrawal names its withdrawal_id.
            is_withdrawal = "withdrawal_id" in parsed or "withdrawal_id" in data
            event = WITHDRAWAL_EVENT if is_withdrawal else PAYMENT_EVENT
            recorded_event = ""
        else:
            recorded_event = event
        if event == PAYMENT_EVENT:
            facts: tuple[Any, ...] = (self._payment_update(parsed, data, fallback_ref=None),)
        elif event == WITHDRAWAL_EVENT:
            facts = (self._withdrawal_update(parsed, data),)
        else:
            facts = ()  # an event word the document does not know: recorded, changes nothing
        return Translation(dedupe_key=key, facts=facts, event_type=recorded_event)

    def _payment_update(
        self, envelope: Mapping[str, Any], data: Mapping[str, Any], *, fallback_ref: str | None
    ) -> PaymentUpdate:
        status_word = fields.first(fields.word(envelope, "status"), fields.word(data, "status"))
        if status_word is None:
            raise PayloadShapeError("status is missing")
        provider_ref = fields.first(
            fields.text(envelope, "transaction_id"),
            fields.text(data, "transaction_id"),
            fallback_ref,
        )
        reference = PaymentReference(
            provider=PROVIDER_ID,
            provider_ref=provider_ref,
            order_id=fields.first(fields.text(data, "order_id"), fields.text(envelope, "order_id")),
            pay_address=fields.first(
                fields.text(data, "address"), fields.text(data, "blockchain_address")
            ),
        )
        # Snippets put data fields at the top level, so each is looked up in data first.
        payment_type = fields.first(
            fields.word(data, "payment_type"), fields.word(envelope, "payment_type")
        )
        stated = fields.first(fields.word(data, "currency"), fields.word(envelope, "currency"))
        currency = stated or self.default_currency
        status = PaymentStatusReport(
            status_word=status_word,
            outcome=payment_outcome(status_word, payment_type),
            amount_paid_reported=fields.first(
                fields.amount(data, "total_paid_amount"),
                fields.amount(envelope, "total_paid_amount"),
            ),
            reported_at=fields.first(
                fields.timestamp(envelope, "timestamp"), fields.timestamp(data, "timestamp")
            ),
        )
        history = data.get("payment_history", envelope.get("payment_history"))
        deposits = self._deposits(
            history,
            # `completed` names no currency: then the entries' own, else the payment's.
            currency=(currency, stated is not None),
            final=status_word in _FINAL_PAYMENT_WORDS,
            provider_ref=provider_ref,
        )

        return PaymentUpdate(reference=reference, deposits=deposits, status=status)

    def _deposits(
        self, history: Any, *, currency: tuple[str, bool], final: bool, provider_ref: str | None
    ) -> tuple[DepositReport, ...]:
        """`currency`: the delivery's currency, and whether it named one (or it was assumed)."""
        if history is None:
            return ()
        if not isinstance(history, list):
            raise PayloadShapeError("payment_history must be a list")
        deposits: list[DepositReport] = []
        seen: dict[str, int] = {}
        for entry in history:
            if not isinstance(entry, dict):
                raise PayloadShapeError("payment_history entries must be objects")
            deposits.append(self._deposit(entry, currency, final, provider_ref, seen))
        return tuple(deposits)

    def _deposit(
        self,
        entry: Mapping[str, Any],
        currency: tuple[str, bool],
        final: bool,  # noqa: FBT001 - internal helper
        provider_ref: str | None,
        seen: dict[str, int],
    ) -> DepositReport:
        value = fields.amount(entry, "amount")
        if value is None or value <= 0:
            raise PayloadShapeError("payment_history amount must be a positive amount")
        confirmations = fields.count(entry, "confirmations")
        tx_hash = fields.text(entry, "transaction_hash")
        observed_at = fields.timestamp(entry, "timestamp")
        deposit_id = fields.first(fields.text(entry, "deposit_id"), tx_hash)
        if not deposit_id:
            deposit_id = _derived_deposit_id(entry, value, provider_ref, seen)
        delivery_currency, delivery_named_it = currency
        own = fields.word(entry, "currency")
        return DepositReport(
            deposit_id=deposit_id,
            amount=value,
            currency=own or delivery_currency,
            currency_stated=own is not None or delivery_named_it,
            confirmed=final or confirmations >= self.confirmations_required,
            confirmations=confirmations,
            tx_hash=tx_hash,
            observed_at=observed_at,
        )

    def _withdrawal_update(
        self, envelope: Mapping[str, Any], data: Mapping[str, Any]
    ) -> WithdrawalUpdate:
        status_word = fields.first(fields.word(envelope, "status"), fields.word(data, "status"))
        if status_word is None:
            raise PayloadShapeError("status is missing")
        return WithdrawalUpdate(
            reference=WithdrawalReference(
                provider=PROVIDER_ID,
                provider_ref=fields.first(
                    fields.text(envelope, "withdrawal_id"), fields.text(data, "withdrawal_id")
                ),
            ),
            status_word=status_word,
            outcome=withdrawal_outcome(status_word),
            tx_hash=fields.first(
                fields.text(data, "transaction_hash"), fields.text(envelope, "transaction_hash")
            ),
            # `amount` is what goes out after fees ("processing" shows it; "completed" does not).
            amount_sent=fields.amount(data, "amount"),
            currency=fields.word(data, "currency"),
            reported_at=fields.first(
                fields.timestamp(envelope, "timestamp"), fields.timestamp(data, "completed_at")
            ),
        )


def _derived_deposit_id(
    entry: Mapping[str, Any], value: Decimal, provider_ref: str | None, seen: dict[str, int]
) -> str:
    """An entry with neither deposit_id nor hash: its id comes from what does not change between
    reports (not `confirmations`), and the n-th identical entry of a list gets n in its id."""
    basis = canonical_json(
        {"transaction_id": provider_ref, "amount": value, "timestamp": entry.get("timestamp")}
    )
    occurrence = seen.get(basis, 0)
    seen[basis] = occurrence + 1
    return f"{PROVIDER_ID}-deposit:" + fields.sha256_hex(f"{basis}#{occurrence}")[:40]
