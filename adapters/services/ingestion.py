"""Webhook ingestion: verify, record raw, translate, apply; nothing lost, nothing twice.

Order of checks (API.md): size and provider are checked by the HTTP layer; then signature or
token, JSON, the provider's shape. Every delivery ends as an event somewhere: in the stream of the
payment or withdrawal it names (verified or not), or in a per-provider record stream (rejected,
unreadable, unmatched). A duplicate is recorded and acknowledged and changes nothing.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, is_dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from adapters.providers.contract import (
    Operation,
    ProviderAdapter,
    TokenScope,
    Verification,
    VerificationOutcome,
    WebhookBodyInvalid,
    WebhookDelivery,
)
from adapters.services.conflicts import retry_on_conflict
from adapters.services.records import append_record
from adapters.storage.postgres_store import PostgresEventStore
from adapters.storage.repository import AggregateRepository
from ledger.codec import decode_document
from ledger.commands import (
    PaymentReference,
    PaymentUpdate,
    ProviderBalanceReport,
    Translation,
    WithdrawalReference,
    WithdrawalUpdate,
)
from ledger.errors import ConcurrencyConflict, LedgerError
from ledger.payment import Payment, Submission
from ledger.ports import Claim, ClaimTaken
from ledger.recording import ProviderRecordedAggregate
from ledger.withdrawal import Withdrawal

log = logging.getLogger(__name__)

# A writer loses a race only to another commit on the same stream, so N concurrent deliveries
# for one payment cost each at most N - 1 retries; past SAVE_ATTEMPTS the delivery is a 503.
SAVE_ATTEMPTS = 30
# Prefix of the claim key of an unverified unmatched delivery (see `_record_unmatched`).
_UNVERIFIED_CLAIM = "unverified:"
# Fields of a translation that become keys (claims, read-model indexes); a btree entry holds
# about 2.7 kB, and no provider's ids come near this.
_KEY_FIELDS = frozenset(
    (
        "dedupe_key",
        "provider_ref",
        "order_id",
        "request_id",
        "pay_address",
        "deposit_id",
        "tx_hash",
        "currency",
        "account",
    )
)
_MAX_KEY_LENGTH = 256
_KEPT_HEADERS = ("content-type", "user-agent", "x-signature", "x-webhook-signature")


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def payment_ref_claims(provider: str, provider_ref: str, order_id: str) -> list[tuple[str, str]]:
    """The claim keys under which a payment can be found from a delivery."""
    return [
        ("payment_ref", f"{provider}:{provider_ref}"),
        ("payment_order", f"{provider}:{order_id}"),
    ]


def withdrawal_ref_claims(
    provider: str, provider_ref: str | None, request_id: str
) -> list[tuple[str, str]]:
    keys = [("withdrawal_request", f"{provider}:{request_id}")]
    if provider_ref:
        keys.append(("withdrawal_ref", f"{provider}:{provider_ref}"))
    return keys


@dataclass(frozen=True, slots=True)
class IngestResult:
    status: int
    outcome: str  # accepted, duplicate, unmatched, unverified, rejected, invalid
    detail: str = ""


def _header_text(value: str) -> str:
    """A header value as storable text: bytes that were not UTF-8 (kept by aiohttp as surrogate
    escapes) become U+FFFD, so a signature made of them simply does not match."""
    return value.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def _storable(translation: Translation) -> Translation:
    """The translation, unless one of its strings is text PostgreSQL or UTF-8 cannot hold (a
    NUL, or a lone surrogate from a JSON escape), or an id too long for a btree key: ids and
    words go into claims, events and read-model indexes."""

    def bad(value: object, name: str = "") -> bool:
        if isinstance(value, str):
            too_long = name in _KEY_FIELDS and len(value) > _MAX_KEY_LENGTH
            return too_long or "\x00" in value or not _encodable(value)
        if isinstance(value, tuple):
            return any(bad(item) for item in value)
        if is_dataclass(value):
            return any(bad(getattr(value, f.name), f.name) for f in fields(value))
        return False

    if bad(translation):
        detail = f"a string holds NUL or a lone surrogate, or an id is over {_MAX_KEY_LENGTH}"
        raise WebhookBodyInvalid("unstorable_text", detail)
    return translation


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _body_text(body: bytes) -> dict[str, str]:
    try:
        return {"body": body.decode("utf-8")}
    except UnicodeDecodeError:
        return {"body_base64": base64.b64encode(body).decode()}


class WebhookIngestion:
    def __init__(
        self,
        store: PostgresEventStore,
        adapters: Mapping[str, ProviderAdapter],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_unverified: Callable[[], None] = lambda: None,
    ) -> None:
        self.store = store
        self.repository = AggregateRepository(store)
        self.adapters = adapters
        self.clock = clock
        # Called once a delivery was kept unverified in a subject's stream, so that the
        # provider-query service asks about it now rather than at its next interval (only a
        # hint: the service finds the delivery in the log either way).
        self.on_unverified = on_unverified

    async def ingest(
        self, provider: str, body: bytes, headers: Mapping[str, str], path_token: str | None = None
    ) -> IngestResult:
        adapter = self.adapters[provider]
        received_at = self.clock()
        delivery = WebhookDelivery(
            provider=provider,
            body=body,
            headers={k.lower(): _header_text(v) for k, v in headers.items()},
            path_token=path_token,
            received_at=received_at,
        )
        document: dict[str, Any] = {
            "provider": provider,
            "received_at": received_at,
            "headers": {k: v for k, v in delivery.headers.items() if k in _KEPT_HEADERS},
            "path_token_sha256": token_hash(path_token) if path_token else None,
            **_body_text(body),
        }
        try:
            verification = adapter.webhooks.authenticate(delivery)
            if verification.outcome is VerificationOutcome.REJECTED:
                await self._record_attempt(provider, "rejected", document, verification.reason)
                if await self._keep_rejected(delivery, document, verification):
                    self.on_unverified()
                return IngestResult(401, "rejected", verification.reason)
            translation = _storable(adapter.webhooks.translate(delivery))
        except WebhookBodyInvalid as invalid:
            await self._record_attempt(provider, "invalid", document, invalid.reason)
            return IngestResult(400, "invalid", str(invalid))
        except (RecursionError, UnicodeEncodeError) as unreadable:
            # JSON nested past Python's recursion limit (in parsing, canonical dedupe keys,
            # CoinPay's re-serialization), or a lone surrogate (a JSON escape) that a provider's
            # check had to encode: no provider's shape, so unreadable like any other body.
            deep = isinstance(unreadable, RecursionError)
            reason = "too_deep" if deep else "unstorable_text"
            await self._record_attempt(provider, "invalid", document, reason)
            return IngestResult(400, "invalid", reason)
        document |= {
            "dedupe_key": translation.dedupe_key,
            "event_type": translation.event_type,
            "verification": _verification_document(verification),
        }
        result = await self.apply(provider, translation, document, verification)
        if result.outcome == "unverified":
            self.on_unverified()
        return result

    async def _record_attempt(
        self, provider: str, kind: str, document: dict[str, Any], reason: str
    ) -> None:
        await append_record(
            self.store,
            f"deliveries-{kind}-{provider}",
            f"Delivery.{kind.capitalize()}",
            {**document, "reason": reason},
        )

    async def _keep_rejected(
        self, delivery: WebhookDelivery, document: dict[str, Any], verification: Verification
    ) -> bool:
        """Keeps a rejected delivery, unverified, in the stream of each known payment it names,
        where the provider can be asked about it (API.md: a delivery naming a known payment is
        recorded in its stream, verified or not). It moves no money; the provider-query service
        asks the provider, whose answer may confirm its facts. Elsewhere nothing could ever
        confirm it, so it stays only a rejected attempt, as does one naming no known payment.
        Returns whether it was kept anywhere; the caller still answers 401."""
        adapter = self.adapters[delivery.provider]
        if not adapter.supports(Operation.QUERY_PAYMENT):
            return False
        try:
            translation = _storable(adapter.webhooks.translate(delivery))
        except (WebhookBodyInvalid, RecursionError, UnicodeEncodeError):
            return False
        facts = [fact for fact in translation.facts if isinstance(fact, PaymentUpdate)]
        evidence = {
            **document,
            "dedupe_key": translation.dedupe_key,
            "event_type": translation.event_type,
            "verification": _verification_document(verification),
        }

        async def keep_once() -> bool:
            touched: dict[str, ProviderRecordedAggregate] = {}
            for fact in facts:
                subject = await self._find_subject(fact)
                if isinstance(subject, Payment):
                    subject = touched.setdefault(str(subject.id), subject)
                    await self._apply_to_subject(subject, fact, evidence, verification)
            if touched:
                await self.repository.save(*touched.values())
            return bool(touched)

        try:
            return await retry_on_conflict(
                keep_once, attempts=SAVE_ATTEMPTS, what=f"rejected {translation.dedupe_key}"
            )
        except ConcurrencyConflict:
            # The attempt itself is recorded; only its copy in the payment's stream is lost.
            log.warning("rejected delivery %s not kept as evidence", translation.dedupe_key)
            return False

    async def apply(
        self,
        provider: str,
        translation: Translation,
        document: dict[str, Any],
        verification: Verification,
    ) -> IngestResult:
        """Applies a translated delivery, redone when a concurrent writer got there first."""
        return await retry_on_conflict(
            lambda: self._apply_once(provider, translation, document, verification),
            attempts=SAVE_ATTEMPTS,
            what=f"{provider} delivery {translation.dedupe_key}",
        )

    async def _apply_once(
        self,
        provider: str,
        translation: Translation,
        document: dict[str, Any],
        verification: Verification,
    ) -> IngestResult:
        touched: dict[str, ProviderRecordedAggregate] = {}
        outcomes: list[str] = []
        for fact in translation.facts:
            if isinstance(fact, ProviderBalanceReport):
                outcomes.append(await self._record_balance(provider, fact, document))
                continue
            subject = await self._find_subject(fact)
            if subject is None:
                outcome = await self._record_unmatched(provider, fact, document)
                outcomes.append(
                    await self._match_if_created_meanwhile(provider, fact, document, outcome)
                )
                continue
            subject = touched.get(str(subject.id), subject)
            touched[str(subject.id)] = subject
            outcomes.append(await self._apply_to_subject(subject, fact, document, verification))
        if not translation.facts:
            await append_record(
                self.store,
                f"deliveries-without-facts-{provider}",
                "Delivery.WithoutFacts",
                document,
            )
            outcomes.append("accepted")
        if touched:
            await self.repository.save(*touched.values())
        return IngestResult(200, _summary(outcomes))

    async def _find_subject(
        self, fact: PaymentUpdate | WithdrawalUpdate
    ) -> ProviderRecordedAggregate | None:
        reference = fact.reference
        if isinstance(reference, PaymentReference):
            keys = [
                ("payment_ref", f"{reference.provider}:{reference.provider_ref}"),
                ("payment_order", f"{reference.provider}:{reference.order_id}"),
            ]
            aggregate_type: type[ProviderRecordedAggregate] = Payment
            present = [reference.provider_ref, reference.order_id]
        else:
            assert isinstance(reference, WithdrawalReference)
            keys = [
                ("withdrawal_ref", f"{reference.provider}:{reference.provider_ref}"),
                ("withdrawal_request", f"{reference.provider}:{reference.request_id}"),
            ]
            aggregate_type = Withdrawal
            present = [reference.provider_ref, reference.request_id]
        for (namespace, key), value in zip(keys, present, strict=True):
            if value is None:
                continue
            claim = await self.store.find_claim(namespace, key)
            if claim is not None:
                subject = await self.repository.load(aggregate_type, claim.stream_id)
                # A payment the provider has not answered for yet has no expected amount to
                # count against: its deliveries wait as unmatched and apply once it is taken.
                if isinstance(subject, Payment) and subject.submission is not Submission.ACCEPTED:
                    return None
                return subject
        return None

    async def _apply_to_subject(
        self,
        subject: ProviderRecordedAggregate,
        fact: PaymentUpdate | WithdrawalUpdate,
        document: dict[str, Any],
        verification: Verification,
    ) -> str:
        key = str(document["dedupe_key"])
        # A key seen before is a duplicate, unless it was seen only unverified and this copy may
        # move money: an unauthenticated copy sent first must not stop the genuine delivery.
        seen = subject.has_delivery(key)
        if seen and (
            verification.outcome is not VerificationOutcome.VERIFIED
            or subject.has_verified_delivery(key)
        ):
            if (
                document.get("matched_later")
                and verification.outcome is VerificationOutcome.VERIFIED
                and subject.has_verified_delivery(key)
            ):
                # The subject's creation and the delivery's own second look may both match one
                # unmatched record that overtook it: it is already in the stream once.
                return "duplicate"
            subject.record_delivery({**document, "outcome": "duplicate"})
            return "duplicate"
        verified, reason = await self._verified_for(subject, fact, document, verification)
        if seen and not verified:
            subject.record_delivery({**document, "outcome": "duplicate", "subject_check": reason})
            return "duplicate"
        subject.record_delivery(
            {
                **document,
                "outcome": "verified" if verified else "unverified",
                "subject_check": reason,
            }
        )
        received_at = document["received_at"]
        try:
            if isinstance(subject, Payment) and isinstance(fact, PaymentUpdate):
                subject.apply_update(fact, received_at=received_at, verified=verified)
            elif isinstance(subject, Withdrawal) and isinstance(fact, WithdrawalUpdate):
                subject.apply_update(fact, verified=verified)
        except LedgerError as broken:
            # Undo the partial effect by starting again from the stored state; keep the
            # delivery and say why it moved nothing.
            log.warning("delivery %s not applied: %s", key, broken)
            fresh = await self.repository.load(type(subject), subject.id)
            assert fresh is not None
            subject.__dict__.clear()
            subject.__dict__.update(fresh.__dict__)
            subject.record_delivery({**document, "outcome": "not_applied", "verified": verified})
            subject.record_application_error(key, broken.code, str(broken))
            return "not_applied"
        return "accepted" if verified else "unverified"

    async def _verified_for(
        self,
        subject: ProviderRecordedAggregate,
        fact: PaymentUpdate | WithdrawalUpdate,
        document: dict[str, Any],
        verification: Verification,
    ) -> tuple[bool, str]:
        """Whether this delivery may move this subject's money, and why not when it may not."""
        if verification.outcome is not VerificationOutcome.VERIFIED:
            return False, verification.reason
        adapter = self.adapters[subject.provider]  # type: ignore[attr-defined]
        if adapter.webhooks.token_scope is TokenScope.PER_SUBJECT:
            presented = document.get("path_token_sha256")
            claim = (
                await self.store.find_claim("callback_token", str(presented)) if presented else None
            )
            if claim is None or claim.stream_id != str(subject.id):
                return False, "token_not_for_this_subject"
        if isinstance(subject, Payment) and isinstance(fact, PaymentUpdate):
            address = fact.reference.pay_address
            if address and subject.pay_address and address != subject.pay_address:
                return False, "address_mismatch"
        return True, ""

    async def _record_unmatched(
        self, provider: str, fact: PaymentUpdate | WithdrawalUpdate, document: dict[str, Any]
    ) -> str:
        reference = fact.reference
        names = [
            getattr(reference, "provider_ref", None),
            getattr(reference, "order_id", None) or getattr(reference, "request_id", None),
        ]
        kind = "payment" if isinstance(fact, PaymentUpdate) else "withdrawal"
        key = str(document["dedupe_key"])
        # The claim both dedupes the unmatched delivery and indexes it for matching later. An
        # unverified delivery claims a key of its own, so that an unauthenticated copy sent
        # first cannot stop the genuine delivery of the same body; after that one it is a
        # duplicate.
        namespaces = [
            f"unmatched:{provider}:{kind}:{name}" for name in dict.fromkeys(names) if name
        ]
        verified = document["verification"]["outcome"] == VerificationOutcome.VERIFIED.value
        if not verified:
            for namespace in namespaces:
                if await self.store.find_claim(namespace, key) is not None:
                    return "duplicate"
        claim_key = key if verified else _UNVERIFIED_CLAIM + key
        claims = [Claim(namespace, claim_key, f"unmatched-{provider}") for namespace in namespaces]
        try:
            await append_record(
                self.store,
                f"unmatched-{provider}",
                "Delivery.Unmatched",
                {
                    **document,
                    "subject_type": kind,
                    "references": [n for n in names if n],
                    "deposits": reported_deposits(
                        fact, await self._cumulative_held(provider, fact, names)
                    ),
                    # A per-payment callback token proves nothing until it is matched to the
                    # payment it was issued for: such funds are held as nothing until then.
                    "funds_trusted": verified
                    and self.adapters[provider].webhooks.token_scope is not TokenScope.PER_SUBJECT,
                },
                claims=claims,
            )
        except ClaimTaken:
            return "duplicate"
        return "unmatched"

    async def _record_balance(
        self, provider: str, fact: ProviderBalanceReport, document: dict[str, Any]
    ) -> str:
        try:
            await append_record(
                self.store,
                f"provider-balances-{provider}",
                "ProviderBalance.Reported",
                {
                    "delivery": document,
                    "account": fact.account,
                    "currency": fact.currency,
                    "available": fact.available,
                    "pending": fact.pending,
                    "reported_at": fact.reported_at or document["received_at"],
                    "verified": document["verification"]["outcome"] == "verified",
                },
                claims=[
                    Claim(
                        "balance_delivery",
                        f"{provider}:{document['dedupe_key']}",
                        f"provider-balances-{provider}",
                    )
                ],
            )
        except ClaimTaken:
            return "duplicate"
        return "accepted"

    async def _match_if_created_meanwhile(
        self,
        provider: str,
        fact: PaymentUpdate | WithdrawalUpdate,
        document: dict[str, Any],
        outcome: str,
    ) -> str:
        """Looks for the subject once more, now that the unmatched record is committed.

        A webhook can overtake the create answer: its subject may be saved after this delivery
        looked for it, yet look for unmatched deliveries (`match_unmatched`) before this record
        was committed. Each side looks after its own write, so at least the later one sees the
        other; without this second look the delivery would stay unmatched, its funds in suspense.
        """
        if await self._find_subject(fact) is None:
            return outcome
        record = await self._unmatched_record(provider, str(document["dedupe_key"]))
        if record is None:
            return outcome
        return (await self._apply_unmatched(provider, record)).outcome

    async def match_unmatched(self, provider: str, kind: str, names: list[str]) -> int:
        """Applies deliveries that arrived before their subject was known, each once: a record
        is indexed under every name it carried, and a subject's names may be one string (a
        CoinCoin provider_ref is the order id). Returns how many."""
        matched = 0
        seen: set[str] = set()
        for name in dict.fromkeys(names):
            for claim in await self.store.list_claims(f"unmatched:{provider}:{kind}:{name}"):
                if claim.key in seen:
                    continue
                seen.add(claim.key)
                verified = not claim.key.startswith(_UNVERIFIED_CLAIM)
                key = claim.key.removeprefix(_UNVERIFIED_CLAIM)
                record = await self._unmatched_record(provider, key, verified=verified)
                if record is None:
                    continue
                await self._apply_unmatched(provider, record)
                matched += 1
        return matched

    async def _apply_unmatched(self, provider: str, record: dict[str, Any]) -> IngestResult:
        adapter = self.adapters[provider]
        delivery = WebhookDelivery(
            provider=provider,
            body=str(record.get("body", "")).encode(),
            headers=record.get("headers", {}),
            received_at=datetime.fromisoformat(record["received_at"]),
        )
        translation = adapter.webhooks.translate(delivery)
        verification = Verification(
            VerificationOutcome(record["verification"]["outcome"]),
            record["verification"]["scheme"],
            record["verification"]["reason"],
        )
        document = {**record, "received_at": delivery.received_at, "matched_later": True}
        return await self.apply(provider, translation, document, verification)

    async def _cumulative_held(
        self, provider: str, fact: PaymentUpdate | WithdrawalUpdate, names: list[str | None]
    ) -> Decimal:
        """The highest running total earlier trusted unmatched deliveries naming the same
        payment hold, so that each delivery of a running total holds only its increment."""
        if not isinstance(fact, PaymentUpdate) or fact.cumulative is None:
            return Decimal(0)
        wanted = {n for n in names if n}
        held = Decimal(0)
        for event in await self.store.read_stream(f"unmatched-{provider}"):
            document = decode_document(event.payload)
            if not document.get("funds_trusted") or not wanted & set(document["references"]):
                continue
            for deposit in document.get("deposits", []):
                held = max(held, Decimal(deposit.get("cumulative_total", 0)))
        return held

    async def _unmatched_record(
        self, provider: str, dedupe_key: str, *, verified: bool = True
    ) -> dict[str, Any] | None:
        """The unmatched record of a delivery: with `verified`, the verified one (else the first,
        as records from before unverified ones had claims of their own); else an unverified one."""
        found: list[dict[str, Any]] = []
        for event in await self.store.read_stream(f"unmatched-{provider}"):
            document: dict[str, Any] = decode_document(event.payload)
            if document.get("dedupe_key") == dedupe_key:
                found.append(document)
        wanted = [d for d in found if (d["verification"]["outcome"] == "verified") == verified]
        if wanted:
            return wanted[0]
        return found[0] if verified and found else None


def reported_deposits(
    fact: PaymentUpdate | WithdrawalUpdate, cumulative_held: Decimal = Decimal(0)
) -> list[dict[str, Any]]:
    """The funds an update reports, kept with an unmatched delivery so that the journal can hold
    them in unmatched suspense until their payment appears. Of a running total, only the part
    above what earlier unmatched deliveries for the same payment hold (`cumulative_held`)."""
    if not isinstance(fact, PaymentUpdate):
        return []
    deposits = [
        {"amount": d.amount, "currency": d.currency, "confirmed": d.confirmed}
        for d in fact.deposits
    ]
    if fact.cumulative is not None:
        total = fact.cumulative
        deposits.append(
            {
                "amount": max(total.total - cumulative_held, Decimal(0)),
                "currency": total.currency,
                "confirmed": total.confirmed,
                "cumulative_total": total.total,
            }
        )
    return deposits


def _verification_document(verification: Verification) -> dict[str, str]:
    return {
        "outcome": verification.outcome.value,
        "scheme": verification.scheme,
        "reason": verification.reason,
    }


def _summary(outcomes: list[str]) -> str:
    for outcome in ("not_applied", "unverified", "unmatched", "duplicate"):
        if outcome in outcomes and all(o == outcome for o in outcomes):
            return outcome
    return "accepted" if "accepted" in outcomes else (outcomes[0] if outcomes else "accepted")
