"""JSON views of payments, withdrawals and events, as API.md describes them. Amounts are strings.

The HTTP API answers single subjects with them, and the query read models store them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ledger.audit_rows import payload_document
from ledger.money import Money
from ledger.payment import Payment, Submission
from ledger.ports import RecordedEvent
from ledger.withdrawal import Withdrawal


def _time(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def _amount(money: Money) -> str:
    return money.to_str()


def payment_view(payment: Payment) -> dict[str, Any]:
    accepted = payment.submission is Submission.ACCEPTED
    return {
        "payment_id": str(payment.id),
        "provider": payment.provider,
        "provider_ref": payment.provider_ref or None,
        "order_id": payment.order_id,
        "status": payment.status.value,
        "coverage": payment.coverage.value,
        "late": payment.late,
        "price": payment.price.to_json(),
        # What must arrive is the provider's word: unknown until it has taken the payment.
        "expected": payment.expected.to_json() if accepted else None,
        "received": _amount(payment.received),
        "pending": _amount(payment.pending),
        "outstanding": _amount(payment.outstanding),
        "overpaid": _amount(payment.overpaid),
        "unverified": _amount(payment.unverified),
        "provider_status": payment.provider_status,
        # Finance's settlement: what the payment received moved to the merchant's payable.
        "settled": payment.settled,
        "settled_at": _time(payment.settled_at),
        "deposits": [
            {
                "deposit_id": d.deposit_id,
                "amount": format(d.amount, "f"),
                "tx_hash": d.tx_hash,
                "confirmations": d.confirmations,
                "confirmed": d.confirmed,
                "verified": d.verified,
                "late": payment.is_late(d),
                "observed_at": _time(d.observed_at),
            }
            for d in payment.deposits.values()
        ],
        "expires_at": _time(payment.expires_at),
        "created_at": _time(payment.created_on),
        "updated_at": _time(payment.modified_on),
        "version": payment.version,
    }


def withdrawal_view(withdrawal: Withdrawal) -> dict[str, Any]:
    return {
        "withdrawal_id": str(withdrawal.id),
        "provider": withdrawal.provider,
        "provider_ref": withdrawal.provider_ref,
        "request_id": withdrawal.request_id,
        "status": withdrawal.status.value,
        "requested": withdrawal.requested.to_json(),
        "fee": _amount(withdrawal.fee),
        "sent": _amount(withdrawal.sent) if withdrawal.sent else None,
        "reserved": _amount(withdrawal.reserved),
        "tx_hash": withdrawal.tx_hash,
        "address": withdrawal.address,
        "provider_status": withdrawal.provider_status,
        "failure_reason": withdrawal.failure_reason,
        "stuck_since": _time(withdrawal.stuck_since),
        "created_at": _time(withdrawal.created_on),
        "updated_at": _time(withdrawal.modified_on),
        "version": withdrawal.version,
    }


def event_view(event: RecordedEvent) -> dict[str, Any]:
    encoding, payload = payload_document(event.payload)
    return {
        "position": event.position,
        "version": event.version,
        "type": event.type,
        "recorded_at": _time(event.recorded_at),
        # What the event says (for a delivery, what the provider sent), as the audit export
        # shows it: decoded JSON, or base64 where the bytes are not canonical JSON.
        "payload_encoding": encoding,
        "payload": payload,
        "hash": event.hash.hex(),
        "prev_hash": event.prev_hash.hex(),
    }
