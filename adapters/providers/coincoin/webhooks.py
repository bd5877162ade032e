"""CoinCoin webhooks: unsigned, authenticated by the token in the portal-configured URL.

CoinCoin signs nothing and takes no callback URL per order: the merchant sets one URL in its
portal. The ledger hands out `{public_url}/v1/webhooks/coincoin/{webhook_token}`, so the token in
the path is the only proof a delivery came through that URL. Without it (or with a wrong one) the
delivery is UNVERIFIED, never REJECTED: an unsigned body is recorded and moves no money.

Body: {payment: {address, payment_id, network, coin, amount}, collected: {<coin>: <number>},
state}. `collected` is a running total per coin, so it becomes a CumulativeReceivedReport (the
ledger counts only what rises above the highest total seen, which makes repeated and reordered
deliveries harmless). `payment.amount` is not used as money: the document's table calls it "the
actual amount paid", its example's comment calls it the order's amount (100, with 50 collected).
Totals in coins other than the payment's coin are checked for shape but produce no fact: the
payment's address was issued for one coin, the ledger cannot add another currency to it, and the
raw body (kept verbatim with every delivery) still holds them for a human to look at.
"""

from __future__ import annotations

import hmac
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from adapters.providers.canonical import payload_dedupe_key
from adapters.providers.coincoin.protocol import PROVIDER_ID
from adapters.providers.coincoin.states import outcome_for, status_word
from adapters.providers.contract import (
    TokenScope,
    WebhookBodyInvalid,
    WebhookDelivery,
    parse_webhook_object,
)
from ledger.commands import (
    CumulativeReceivedReport,
    PaymentReference,
    PaymentStatusReport,
    PaymentUpdate,
    Translation,
)
from ledger.deliveries import Verification, VerificationOutcome

if TYPE_CHECKING:
    from collections.abc import Mapping

SCHEME = "callback-token-provider"


class CoinCoinWebhooks:
    token_scope = TokenScope.PROVIDER

    def __init__(self, webhook_token: str) -> None:
        if not webhook_token:
            raise ValueError("coincoin webhook_token must not be empty")
        self._webhook_token = webhook_token.encode()

    def authenticate(self, delivery: WebhookDelivery) -> Verification:
        if not delivery.path_token:
            return Verification(VerificationOutcome.UNVERIFIED, SCHEME, "token_missing")
        if not hmac.compare_digest(delivery.path_token.encode(), self._webhook_token):
            return Verification(VerificationOutcome.UNVERIFIED, SCHEME, "token_mismatch")
        return Verification(VerificationOutcome.VERIFIED, SCHEME)

    def translate(self, delivery: WebhookDelivery) -> Translation:
        body = parse_webhook_object(delivery.body)
        payment = _object(body, "payment")
        payment_id = _text(payment, "payment_id")
        address = _text(payment, "address")
        coin = _text(payment, "coin")
        if "amount" in payment:
            _amount(payment["amount"], "payment.amount")
        state = _state(body)
        total = _collected_total(_object(body, "collected"), coin)
        currency = coin.upper()
        word = status_word(state)
        update = PaymentUpdate(
            # payment_id is what the client sent at creation (our order id, or the id derived
            # from it), which is also the provider_ref the ledger stored.
            reference=PaymentReference(
                provider=PROVIDER_ID, provider_ref=payment_id, pay_address=address
            ),
            cumulative=(
                CumulativeReceivedReport(total=total, currency=currency, confirmed=True)
                if total is not None
                else None
            ),
            status=PaymentStatusReport(
                status_word=word, outcome=outcome_for(state, total), amount_paid_reported=total
            ),
        )
        return Translation(dedupe_key=dedupe_key(body), facts=(update,), event_type=word)


def dedupe_key(payload: Any) -> str:
    """CoinCoin deliveries carry no event id: the key is a hash of the canonical payload."""
    return payload_dedupe_key(PROVIDER_ID, payload)


def _object(body: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = body.get(key)
    if not isinstance(value, dict):
        raise WebhookBodyInvalid("wrong_shape", f"{key} must be a JSON object")
    return value


def _text(body: Mapping[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise WebhookBodyInvalid("wrong_shape", f"payment.{key} must be a non-empty string")
    return value


def _amount(value: Any, name: str) -> Decimal:
    # loads_exact yields Decimal for 50.5 and int for 50; a quoted amount is not the shape.
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise WebhookBodyInvalid("wrong_shape", f"{name} must be a JSON number")
    amount = Decimal(value)
    if amount < 0:
        raise WebhookBodyInvalid("wrong_shape", f"{name} must not be negative")
    return amount


def _state(body: Mapping[str, Any]) -> int | str:
    """The state code: a JSON integer as documented; a string is kept as an unknown word."""
    state = body.get("state")
    if isinstance(state, bool) or not isinstance(state, int | str) or state == "":
        raise WebhookBodyInvalid("wrong_shape", "state must be an integer")
    return state


def _collected_total(collected: Mapping[str, Any], coin: str) -> Decimal | None:
    """The running total for the payment's coin; None when `collected` does not mention it.

    Keys are matched without regard to case ("usdt" in the example, maybe "USDT" elsewhere);
    two keys naming the same coin would leave the total ambiguous, so that is a wrong shape.
    """
    total: Decimal | None = None
    for key, value in collected.items():
        amount = _amount(value, f"collected.{key}")
        if key.lower() != coin.lower():
            continue
        if total is not None:
            raise WebhookBodyInvalid("wrong_shape", f"collected names {coin} more than once")
        total = amount
    return total
