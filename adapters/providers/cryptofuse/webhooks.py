"""Cryptofuse webhooks: `X-Webhook-Signature` = hex HMAC-SHA256 of the raw body, keyed with the
webhook secret (the document's PHP example: `hash_hmac('sha256', $payload, $secret)`)."""

from __future__ import annotations

import hashlib
import hmac
from typing import TYPE_CHECKING

from adapters.providers.contract import TokenScope, WebhookDelivery
from ledger.deliveries import Verification, VerificationOutcome

if TYPE_CHECKING:
    from adapters.providers.cryptofuse.translate import PayloadTranslator
    from ledger.commands import Translation

SIGNATURE_HEADER = "x-webhook-signature"
SCHEME = "hmac-sha256-raw-body"


def sign(body: bytes, secret: str) -> str:
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


class CryptofuseWebhooks:
    # Deliveries are signed, so the callback URL needs no token of ours.
    token_scope: TokenScope = TokenScope.NONE

    def __init__(self, webhook_secret: str, translator: PayloadTranslator) -> None:
        if not webhook_secret:
            raise ValueError("cryptofuse webhook_secret must not be empty")
        self._secret = webhook_secret
        self._translator = translator

    def authenticate(self, delivery: WebhookDelivery) -> Verification:
        provided = delivery.headers.get(SIGNATURE_HEADER, "").strip()
        if not provided:
            return Verification(VerificationOutcome.REJECTED, SCHEME, "signature_missing")
        expected = sign(delivery.body, self._secret)
        # Hex is case-insensitive; lowering it first keeps the comparison constant-time over bytes.
        if not hmac.compare_digest(provided.lower().encode("utf-8"), expected.encode("ascii")):
            return Verification(VerificationOutcome.REJECTED, SCHEME, "signature_mismatch")
        return Verification(VerificationOutcome.VERIFIED, SCHEME)

    def translate(self, delivery: WebhookDelivery) -> Translation:
        return self._translator.translate_webhook(delivery.body)
