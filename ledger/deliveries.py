"""What the ledger keeps of a provider's webhook: typed records and their one codec.

A delivery is received (recorded durably, then acknowledged) and applied afterwards, in log order,
by the applier (DESIGN.md, "Acknowledge on durable receipt"). The records here are what both sides
and the projections read; each turns into the stored document and back in one place
(`document()` / `from_document()`), so field names are written once.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, ClassVar


class VerificationOutcome(StrEnum):
    VERIFIED = "verified"  # signature or token checked: may move money
    UNVERIFIED = "unverified"  # recorded, moves no money until a provider query confirms it
    REJECTED = "rejected"  # signature missing or wrong, client id wrong: 401


@dataclass(frozen=True, slots=True)
class Verification:
    outcome: VerificationOutcome
    scheme: str  # e.g. "hmac-sha256-raw-body"
    reason: str = ""  # why it is not verified, e.g. "signature_mismatch"

    @property
    def moves_money(self) -> bool:
        """The rule, stated once: a delivery the ledger could not authenticate moves no money
        by itself (a provider query may confirm its facts later, as an event of its own)."""
        return self.outcome is VerificationOutcome.VERIFIED

    def document(self) -> dict[str, str]:
        return {"outcome": self.outcome.value, "scheme": self.scheme, "reason": self.reason}

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> Verification:
        return cls(
            VerificationOutcome(document["outcome"]),
            str(document.get("scheme", "")),
            str(document.get("reason", "")),
        )


class ReceiptKind(StrEnum):
    """How a webhook was recorded on arrival, one event type each."""

    RECEIVED = "Delivery.Received"  # readable, the provider's shape: the applier applies it
    DUPLICATE = "Delivery.Duplicate"  # its dedupe key was received before: changes nothing
    REJECTED = "Delivery.Rejected"  # signature or client id wrong: 401, moves no money
    INVALID = "Delivery.Invalid"  # not JSON or not the provider's shape: 400


class DeliveryOutcome(StrEnum):
    """What applying a received delivery to its subject did."""

    ACCEPTED = "accepted"  # verified and applied
    UNVERIFIED = "unverified"  # kept in its subject's stream as evidence, moved nothing
    DUPLICATE = "duplicate"  # the subject already had it
    UNMATCHED = "unmatched"  # no known subject yet: held, applied when its subject appears
    NOT_APPLIED = "not_applied"  # its facts broke a domain rule: kept, moved nothing

    @property
    def moves_money(self) -> bool:
        return self is DeliveryOutcome.ACCEPTED


@dataclass(frozen=True, slots=True)
class ReceivedDelivery:
    """A webhook as it arrived: raw body, the headers that matter, how it was authenticated.
    `dedupe_key` and `event_type` are empty for one whose body could not be read."""

    provider: str
    received_at: datetime
    body: bytes
    verification: Verification
    headers: Mapping[str, str] = field(default_factory=dict)
    path_token_sha256: str | None = None
    dedupe_key: str = ""
    event_type: str = ""
    reason: str = ""  # why it was rejected or unreadable

    def document(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "provider": self.provider,
            "received_at": self.received_at,
            "headers": dict(self.headers),
            "path_token_sha256": self.path_token_sha256,
            "verification": self.verification.document(),
            **_body_document(self.body),
        }
        if self.dedupe_key:
            document |= {"dedupe_key": self.dedupe_key, "event_type": self.event_type}
        if self.reason:
            document["reason"] = self.reason
        return document

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> ReceivedDelivery:
        received_at = document["received_at"]
        return cls(
            provider=str(document["provider"]),
            received_at=(
                received_at
                if isinstance(received_at, datetime)
                else datetime.fromisoformat(received_at)
            ),
            body=_body_bytes(document),
            verification=Verification.from_document(document["verification"]),
            headers=dict(document.get("headers") or {}),
            path_token_sha256=document.get("path_token_sha256"),
            dedupe_key=str(document.get("dedupe_key", "")),
            event_type=str(document.get("event_type", "")),
            reason=str(document.get("reason", "")),
        )


@dataclass(frozen=True, slots=True)
class HeldFunds:
    """Funds an unmatched delivery reports, held in unmatched suspense until its payment
    appears. Of a running total, only the part above what earlier deliveries already hold."""

    amount: Decimal
    currency: str
    confirmed: bool
    cumulative_total: Decimal | None = None

    def document(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "amount": self.amount,
            "currency": self.currency,
            "confirmed": self.confirmed,
        }
        if self.cumulative_total is not None:
            document["cumulative_total"] = self.cumulative_total
        return document


@dataclass(frozen=True, slots=True)
class UnmatchedDelivery:
    """A received delivery naming no payment or withdrawal the ledger knows yet."""

    event_type: ClassVar[str] = "Delivery.Unmatched"

    delivery: ReceivedDelivery
    subject_type: str  # payment or withdrawal
    references: tuple[str, ...]
    deposits: tuple[HeldFunds, ...]
    # Whether its funds may be held as received-but-unmatched: verified, and not authenticated
    # by a per-payment token, which proves nothing until matched to its payment.
    funds_trusted: bool

    def document(self) -> dict[str, Any]:
        return {
            **self.delivery.document(),
            "subject_type": self.subject_type,
            "references": list(self.references),
            "deposits": [held.document() for held in self.deposits],
            "funds_trusted": self.funds_trusted,
        }


@dataclass(frozen=True, slots=True)
class ProviderBalanceReported:
    """A provider's own statement of an account balance: in a delivery (`delivery`, its
    document), or in the answer to the ledger's own poll (`provider` and the poll's
    `exchanges`)."""

    event_type: ClassVar[str] = "ProviderBalance.Reported"

    account: str
    currency: str
    available: Decimal | None
    pending: Decimal | None
    reported_at: datetime
    verified: bool
    delivery: Mapping[str, Any] | None = None
    provider: str = ""
    exchanges: tuple[Mapping[str, Any], ...] = ()

    def document(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "account": self.account,
            "currency": self.currency,
            "available": self.available,
            "pending": self.pending,
            "reported_at": self.reported_at,
            "verified": self.verified,
        }
        if self.delivery is not None:
            return {**document, "delivery": dict(self.delivery)}
        polled = [dict(exchange) for exchange in self.exchanges]
        return {**document, "provider": self.provider, "source": "poll", "exchanges": polled}


def _body_document(body: bytes) -> dict[str, str]:
    try:
        return {"body": body.decode("utf-8")}
    except UnicodeDecodeError:
        return {"body_base64": base64.b64encode(body).decode()}


def _body_bytes(document: Mapping[str, Any]) -> bytes:
    if "body_base64" in document:
        return base64.b64decode(document["body_base64"])
    return str(document.get("body", "")).encode()
