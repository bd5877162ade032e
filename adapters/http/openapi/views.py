"""The API's answers as pydantic models, for the OpenAPI document only.

The handlers keep building their JSON as they do (projections/views.py, adapters/http/queries.py);
these models describe that JSON field for field, and schemathesis holds every live answer to
them (tests/e2e/test_openapi_e2e.py), so a field added to a view and not here is found. Amounts
are strings holding exact decimals; times are RFC 3339 UTC strings.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Amount = str
Instant = str


class _View(BaseModel):
    model_config = ConfigDict(frozen=True)


class Money(_View):
    amount: Amount
    currency: str


class DepositView(_View):
    deposit_id: str
    amount: Amount
    tx_hash: str | None
    confirmations: int
    confirmed: bool
    verified: bool
    late: bool
    observed_at: Instant | None


class PaymentView(_View):
    payment_id: str
    provider: str
    provider_ref: str | None
    order_id: str
    status: str
    coverage: str
    late: bool
    price: Money
    expected: Money | None = Field(description="what must arrive; null until the provider took it")
    received: Amount
    pending: Amount
    outstanding: Amount
    overpaid: Amount
    unverified: Amount
    provider_status: str | None
    settled: bool
    settled_at: Instant | None
    deposits: list[DepositView]
    expires_at: Instant | None
    created_at: Instant | None
    updated_at: Instant | None
    version: int


class WithdrawalView(_View):
    withdrawal_id: str
    provider: str
    provider_ref: str | None
    request_id: str
    status: str
    requested: Money
    fee: Amount
    sent: Amount | None
    reserved: Amount
    tx_hash: str | None
    address: str
    provider_status: str | None
    failure_reason: str | None
    stuck_since: Instant | None
    created_at: Instant | None
    updated_at: Instant | None
    version: int


class EventView(_View):
    position: int
    version: int
    type: str
    recorded_at: Instant | None
    payload_encoding: Literal["json", "base64"]
    payload: Any = Field(description="decoded JSON, or base64 where the bytes are not JSON")
    hash: str
    prev_hash: str


class EventList(_View):
    items: list[EventView]


class PaymentPage(_View):
    items: list[PaymentView]
    next_cursor: str | None


class WithdrawalPage(_View):
    items: list[WithdrawalView]
    next_cursor: str | None


class Balance(_View):
    account: str
    currency: str
    pending: Amount
    posted: Amount
    available: Amount


class BalanceList(_View):
    items: list[Balance]


class Posting(_View):
    account: str
    currency: str
    kind: str
    amount: Amount


class JournalEntry(_View):
    entry_id: str
    position: int
    event_type: str
    subject_type: str | None
    subject_id: str | None
    provider: str | None
    recorded_at: Instant
    postings: list[Posting]


class JournalPage(_View):
    items: list[JournalEntry]
    next_cursor: str | None


class ReconciliationItem(_View):
    """The cells of adapters/storage/read_models/items.py's `item_cells`, in its order."""

    subject_type: str
    subject_id: str
    order_id: str | None
    provider_ref: str | None
    provider: str | None
    reason: str
    state: Literal["open", "cleared"]
    currency: str
    expected: Amount | None
    received: Amount | None
    provider_reported: Amount | None
    provider_status: str | None
    difference: Amount
    detected_at: Instant | None
    cleared_at: Instant | None


class ReconciliationPage(_View):
    items: list[ReconciliationItem]
    next_cursor: str | None


class ReasonTotal(_View):
    reason: str
    currency: str
    items: int
    difference: Amount


class ReconciliationSummary(_View):
    items: list[ReasonTotal]
    open_items: int
    counting: str  # how items are counted (a late payment is one item), in words


class ProjectionView(_View):
    name: str
    partition: int
    position: int
    head: int
    lag: int
    updated_at: Instant
    failed_position: int | None
    failure: str | None


class ProjectionList(_View):
    items: list[ProjectionView]


class DeliveryReceived(_View):
    received: bool
    outcome: str


class Health(_View):
    status: str


class Readiness(_View):
    status: str
    log_position: int
    projection_lag: dict[str, int]
    projections: list[dict[str, Any]]


class Problem(_View):
    """RFC 9457 problem details; some problems add fields of their own (`payment_id`,
    `supported`, ...), so others are allowed."""

    model_config = ConfigDict(extra="allow", frozen=True)

    type: str
    title: str
    status: int
    detail: str
    request_id: str | None = Field(
        default=None, description="the X-Request-Id the request was answered with"
    )


class AuditHead(_View):
    partition: int
    position: int
    hash: str


class CheckpointView(_View):
    partition: int
    position: int
    hash: str
    signed_at: Instant
    key_id: str
    signature: str = Field(description="hex Ed25519 signature over the canonical JSON of the rest")


class CheckpointPage(_View):
    items: list[CheckpointView]
    next_cursor: str | None


class PublicKeyView(_View):
    algorithm: Literal["Ed25519"]
    key_id: str
    pem: str


# The audit handlers read their few parameters by hand (adapters/http/audit.py); these models
# state them for the document.


class AuditExportQuery(_View):
    after: int = Field(default=0, ge=0, description="continue after this log position")
    before: int | None = Field(default=None, ge=0, description="stop before this position")
    stream: str | None = Field(default=None, max_length=200, description="one stream only")
    format: Literal["jsonl", "csv"] = "jsonl"


class CheckpointListQuery(_View):
    after: int = Field(default=0, ge=0, description="checkpoints of positions after this one")
    cursor: int = Field(default=0, ge=0, description="next_cursor of the previous page")
