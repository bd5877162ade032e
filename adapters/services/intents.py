"""Intent before every provider call: what the create of a payment or withdrawal shares.

A subject is recorded, with its order or request id and its Idempotency-Key claimed, in the same
transaction, before the provider is called. Concurrent identical requests therefore make one
call: the others find the claims taken. What the call then ends as decides the subject's state:

- an answer: the subject is submitted;
- a refusal (the provider answered 4xx), or a call that never went out: the subject ends failed,
  holding nothing at the provider, so its order or request id may be asked for again;
- no answer (timeout, dropped connection, 5xx after retries, a crash): the provider may hold
  the subject or not; it stays `submitting` until the recovery loop asks the provider, or,
  where the provider offers no lookup, reconciliation lists it as `provider_outcome_unknown`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import secrets
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

from adapters.config import Settings
from adapters.ingestion.text import token_hash
from adapters.providers.contract import (
    ProviderAdapter,
    ProviderCallFailed,
    ProviderExchange,
    TokenScope,
)
from adapters.providers.http_client import NOT_ACTED_ON_STATUSES
from adapters.storage.postgres_store import PostgresEventStore
from ledger.ports import Claim, ClaimTaken

Answer = TypeVar("Answer")

IDEMPOTENCY = "idempotency"
# 4xx answers that do not say the provider holds nothing: 408 (it gave up waiting, perhaps after
# doing the work) and 409 (it already holds something under this id).
_MAYBE_HELD = frozenset({408, 409})


class CallOutcome(StrEnum):
    REFUSED = "refused"  # the provider holds nothing: release what the subject holds
    UNKNOWN = "unknown"  # the provider may hold it: keep everything, ask later


@dataclass(frozen=True, slots=True)
class IdempotencyClaim:
    """An Idempotency-Key as the caller sent it, scoped to caller and route, with the hash of
    the request's canonical JSON: the same key with another request is refused."""

    key: str
    request_hash: str

    def claim(self, stream_id: str) -> Claim:
        return Claim(IDEMPOTENCY, self.key, stream_id, self.request_hash)


class UnknownProvider(Exception):
    """No adapter is configured under this name (the request layer refuses it first)."""


def adapter_for(adapters: Mapping[str, ProviderAdapter], provider: str) -> ProviderAdapter:
    if provider not in adapters:
        raise UnknownProvider(provider)
    return adapters[provider]


def callback_for(adapter: ProviderAdapter, settings: Settings) -> tuple[str, str | None]:
    """The callback URL to hand the provider, and the per-subject token in it (if any)."""
    scope = adapter.webhooks.token_scope
    if scope is TokenScope.PER_SUBJECT:
        token = secrets.token_urlsafe(32)
        return settings.webhook_url(adapter.name, token), token
    if scope is TokenScope.PROVIDER:
        configured = str(adapter.settings.get("webhook_token", ""))
        return settings.webhook_url(adapter.name, configured or None), None
    return settings.webhook_url(adapter.name), None


class SubjectAlreadyExists(Exception):
    """The order id (payment) or request id (withdrawal) is held by another subject."""

    def __init__(self, existing_stream: str) -> None:
        super().__init__(f"already exists as {existing_stream}")
        self.existing_stream = existing_stream


class IdempotencyKeyTaken(Exception):
    """A concurrent request with the same Idempotency-Key recorded its subject first."""

    def __init__(self, existing_stream: str) -> None:
        super().__init__(f"idempotency key already names {existing_stream}")
        self.existing_stream = existing_stream


class SubmissionFailed(Exception):
    """The provider call of a recorded subject ended without a result: `outcome` says whether
    the subject was released (refused) or is left for recovery (unknown)."""

    def __init__(self, subject_id: str, outcome: CallOutcome, cause: Exception) -> None:
        super().__init__(f"{subject_id}: {outcome} ({cause})")
        self.subject_id = subject_id
        self.outcome = outcome
        self.cause = cause


def claim_conflict(taken: ClaimTaken) -> Exception:
    """What a taken claim at the intent's append means for the caller."""
    if taken.claim.namespace == IDEMPOTENCY:
        return IdempotencyKeyTaken(taken.holder)
    return SubjectAlreadyExists(taken.holder)


def call_outcome(
    error: Exception, exchanges: list[ProviderExchange], operation: str
) -> CallOutcome:
    """Whether a failed create left the provider holding nothing (refused) or maybe something.

    Only a create request that never left, or that the provider answered with a 4xx, is known
    to have created nothing; anything else (no answer, a 5xx, an answer we could not read) may
    have created it, and a second create could then pay or charge twice."""
    sent = [e for e in exchanges if e.operation == operation]
    if not sent:
        return CallOutcome.REFUSED
    if isinstance(error, ProviderCallFailed) and error.status is not None:
        refused = sent[-1].status == error.status and (
            (400 <= error.status < 500 and error.status not in _MAYBE_HELD)
            or error.status in NOT_ACTED_ON_STATUSES
        )
        return CallOutcome.REFUSED if refused else CallOutcome.UNKNOWN
    return CallOutcome.UNKNOWN


async def identity_claim(
    store: PostgresEventStore,
    namespace: str,
    key: str,
    stream: str,
    still_held_by: Callable[[str], Awaitable[bool]],
) -> Claim:
    """The claim of a new subject's order or request id: new, or moved from a subject the
    provider never took (refused, or never sent: it holds nothing there, so the corrected
    request may use the id again). Raises SubjectAlreadyExists while a subject still holds it."""
    holder = await store.find_claim(namespace, key)
    if holder is None:
        return Claim(namespace, key, stream)
    if await still_held_by(holder.stream_id):
        raise SubjectAlreadyExists(holder.stream_id)
    return Claim(namespace, key, stream, replaces=holder.stream_id)


def intent_claims(
    stream: str, identity: Claim, token: str | None, idempotency: IdempotencyClaim | None
) -> list[Claim]:
    """What an intent claims with its append: its order or request id, its callback token, and
    its Idempotency-Key first, so that a concurrent twin under the same key hears of the key."""
    claims = [identity]
    if token:
        claims.append(Claim("callback_token", token_hash(token), stream))
    if idempotency is not None:
        claims.insert(0, idempotency.claim(stream))
    return claims


async def call_provider(
    stream: str,
    operation: str,
    send: Callable[[ExchangeLog], Awaitable[Answer]],
    failed: Callable[[str, ExchangeLog, CallOutcome, Exception], Awaitable[object]],
) -> tuple[Answer, ExchangeLog]:
    """Sends a recorded subject's create; a failure is recorded by `failed` (released or left
    for recovery, as `call_outcome` says) and raised as SubmissionFailed naming the subject."""
    calls = ExchangeLog()
    try:
        return await send(calls), calls
    except Exception as error:
        outcome = call_outcome(error, calls.exchanges, operation)
        await failed(stream, calls, outcome, error)
        raise SubmissionFailed(stream, outcome, error) from error


class SubmissionsInFlight:
    """The creates this process is carrying out: recorded, their provider call or its outcome not
    recorded yet. A recorded create still `submitting` that is not here lost its request (the
    process died, or the database went away while the answer was being recorded): a replay of it
    answers as after a crash (504, the ledger will ask the provider) instead of waiting for a
    request that is gone."""

    def __init__(self) -> None:
        self._streams: set[str] = set()

    def __contains__(self, stream: object) -> bool:
        return stream in self._streams

    @contextlib.contextmanager
    def holding(self, stream: str) -> Iterator[None]:
        self._streams.add(stream)
        try:
            yield
        finally:
            self._streams.discard(stream)


class ExchangeLog:
    """Collects the outbound attempts of one call, to record them with the call's outcome."""

    def __init__(self) -> None:
        self.exchanges: list[ProviderExchange] = []

    async def __call__(self, exchange: ProviderExchange) -> None:
        self.exchanges.append(exchange)

    def documents(self) -> list[dict[str, Any]]:
        return [dataclasses.asdict(exchange) for exchange in self.exchanges]
