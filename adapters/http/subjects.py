"""Payments and withdrawals over HTTP: create (intent first, idempotent), read, their events.

A create's answer is read off the subject's recorded state, so that the first answer and every
replay of it (the same Idempotency-Key with the same request) say the same thing:

| subject state                                   | answer                                   |
| ----------------------------------------------- | ---------------------------------------- |
| submitted (the provider took it), and later     | 201 with the view                        |
| refused by the provider, or never sent          | 502 naming it (it ended failed)          |
| the provider's answer was lost                  | 504 naming it (status `submitting`)      |
| its create still in flight (a concurrent twin)  | 409 `idempotency-key-in-progress`        |
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Awaitable, Callable, Container
from typing import Any

from aiohttp import web

from adapters.http.auth import authorize
from adapters.http.keys import ADAPTERS, PAYMENTS, STORE, WITHDRAWALS
from adapters.http.problems import ProblemError, problem
from adapters.http.requests import read_payment_request, read_withdrawal_request
from adapters.providers.contract import OperationNotSupported
from adapters.services.intents import (
    IDEMPOTENCY,
    IdempotencyClaim,
    IdempotencyKeyTaken,
    SubjectAlreadyExists,
    SubmissionFailed,
    UnknownProvider,
)
from adapters.storage.repository import AggregateRepository
from ledger.codec import dumps_canonical
from ledger.errors import LedgerError
from ledger.money import loads_exact
from ledger.payment import Payment, Submission
from ledger.withdrawal import Withdrawal, WithdrawalStatus
from projections.views import event_view, payment_view, withdrawal_view

# How long a request that finds its twin's create still in flight waits for its answer.
REPLAY_WAIT_SECONDS = 5.0
_REPLAY_POLL_SECONDS = 0.05
_KEY_MAX_LENGTH = 255

Subject = Payment | Withdrawal


# ---------------------------------------------------------------- answers


def _awaits_answer(subject: Subject) -> bool:
    """Whether the create's state still awaits the provider's answer. It is in flight only while
    this process carries its request out (`SubmissionsInFlight`): one that nobody carries out
    lost its request and answers as after a crash."""
    if isinstance(subject, Payment):
        return subject.submission is Submission.SUBMITTING and subject.submission_unknown is None
    return subject.status is WithdrawalStatus.REQUESTED


def answer(subject: Subject) -> web.Response:
    """The create's answer, as the subject's state says it (see the module's table)."""
    kind, view = _describe(subject)
    named = {f"{kind}_id": str(subject.id), f"{kind}_status": view["status"]}
    if isinstance(subject, Payment):
        refused = subject.submission is Submission.REFUSED
        unknown = subject.submission is Submission.SUBMITTING
        reason = subject.failed_reason
    else:
        refused = not subject.holds_request_id
        unknown = subject.awaits_provider_answer
        reason = subject.failure_reason
    if refused and isinstance(subject, Withdrawal) and subject.status.value == "cancelled":
        return problem(422, "Unprocessable Entity", reason or "", code="operation-not-supported")
    if refused:
        detail = f"the provider refused the {kind}: {reason}"
        return problem(502, "Bad Gateway", detail, code="provider-refused", **named)
    if unknown:
        detail = f"the provider's answer was lost; the ledger will ask it about this {kind}"
        return problem(504, "Gateway Timeout", detail, code="provider-outcome-unknown", **named)
    return web.json_response(view, status=201)


def _describe(subject: Subject) -> tuple[str, dict[str, Any]]:
    if isinstance(subject, Payment):
        return "payment", payment_view(subject)
    return "withdrawal", withdrawal_view(subject)


# ---------------------------------------------------------------- idempotency


def _idempotency(request: web.Request, caller: str, raw: bytes) -> IdempotencyClaim | None:
    """The request's Idempotency-Key, scoped to caller and route, with the hash of the body's
    canonical JSON: the same JSON value replays whatever its spacing or key order."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not key or len(key) > _KEY_MAX_LENGTH or not key.isascii() or not key.isprintable():
        detail = f"Idempotency-Key must be 1 to {_KEY_MAX_LENGTH} printable ASCII characters"
        raise ProblemError(400, "idempotency-key-invalid", "Bad Request", detail)
    canonical = dumps_canonical(loads_exact(raw))
    return IdempotencyClaim(f"{caller}:{request.path}:{key}", hashlib.sha256(canonical).hexdigest())


async def _replay(
    request: web.Request,
    claim: IdempotencyClaim,
    load: Callable[[str], Awaitable[Subject | None]],
    carried_out: Container[str],
) -> web.Response | None:
    """The first answer for this key, None when the key is new. Another request under the
    same key is a 409; a twin still in flight is waited for, then a 409 in progress."""
    held = await request.app[STORE].find_claim(IDEMPOTENCY, claim.key)
    if held is None:
        return None
    if held.value != claim.request_hash:
        detail = "Idempotency-Key was used with another request"
        raise ProblemError(409, "idempotency-key-reused", "Conflict", detail)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + REPLAY_WAIT_SECONDS
    while True:
        # Whether its request is carried out, asked before its state is read: a request that
        # ends in between has recorded its outcome, which the state then shows.
        carried = held.stream_id in carried_out
        subject = await load(held.stream_id)
        assert subject is not None, f"idempotency claim names {held.stream_id}, never recorded"
        in_flight = carried and _awaits_answer(subject)
        if not in_flight or loop.time() >= deadline:
            break
        await asyncio.sleep(_REPLAY_POLL_SECONDS)
    if in_flight:
        detail = "a request with this Idempotency-Key is still being processed; retry later"
        response = problem(409, "Conflict", detail, code="idempotency-key-in-progress")
        response.headers["Retry-After"] = "1"
        return response
    return answer(subject)


# ---------------------------------------------------------------- create


async def _create(
    request: web.Request,
    claim: IdempotencyClaim | None,
    create: Callable[[IdempotencyClaim | None], Awaitable[Subject]],
    load: Callable[[str], Awaitable[Subject | None]],
    kind: str,
    carried_out: Container[str],
) -> web.Response:
    replay = await _replay(request, claim, load, carried_out) if claim is not None else None
    if replay is not None:
        return replay
    try:
        subject = await create(claim)
    except (IdempotencyKeyTaken, SubjectAlreadyExists) as taken:
        # A concurrent twin under the same key recorded its subject first: its answer is ours.
        replayed = await _replay(request, claim, load, carried_out) if claim is not None else None
        if replayed is None and isinstance(taken, IdempotencyKeyTaken):
            raise
        return replayed or _refusal(taken, kind)
    except SubmissionFailed as failed:
        if isinstance(failed.cause, OperationNotSupported):
            # The adapter refused the request before sending it (the request layer should
            # have): the subject ended failed, and the caller hears why.
            return _refusal(failed.cause, kind)
        recorded = await load(failed.subject_id)
        assert recorded is not None
        subject = recorded
    except (UnknownProvider, OperationNotSupported, LedgerError) as refused:
        return _refusal(refused, kind)
    return answer(subject)


def _refusal(refused: Exception, kind: str) -> web.Response:
    """A create refused before anything went to the provider."""
    if isinstance(refused, SubjectAlreadyExists):
        detail = f"{kind} already exists"
        named = {f"{kind}_id": refused.existing_stream}
        return problem(409, "Conflict", detail, code=f"{kind}-already-exists", **named)
    if isinstance(refused, UnknownProvider):
        detail = f"provider {refused} is not configured"
        return problem(422, "Unprocessable Entity", detail, code="provider-not-configured")
    if isinstance(refused, LedgerError):
        return problem(422, "Unprocessable Entity", str(refused), code=refused.code)
    return problem(422, "Unprocessable Entity", str(refused), code="operation-not-supported")


async def create_payment(request: web.Request) -> web.Response:
    caller = authorize(request, "payments:write")
    raw = await request.read()
    body = read_payment_request(raw, request.app[ADAPTERS])
    service = request.app[PAYMENTS]

    async def create(claim: IdempotencyClaim | None) -> Subject:
        return await service.create_payment(**body.model_dump(), idempotency=claim)

    async def load(stream: str) -> Subject | None:
        return await service.load_payment(stream)

    claim = _idempotency(request, caller, raw)
    return await _create(request, claim, create, load, "payment", service.in_flight)


async def create_withdrawal(request: web.Request) -> web.Response:
    caller = authorize(request, "withdrawals:write")
    raw = await request.read()
    body = read_withdrawal_request(raw, request.app[ADAPTERS])
    service = request.app[WITHDRAWALS]
    repository = AggregateRepository(request.app[STORE])

    async def create(claim: IdempotencyClaim | None) -> Subject:
        return await service.create_withdrawal(**body.model_dump(), idempotency=claim)

    async def load(stream: str) -> Subject | None:
        return await repository.load(Withdrawal, stream)

    claim = _idempotency(request, caller, raw)
    return await _create(request, claim, create, load, "withdrawal", service.in_flight)


# ---------------------------------------------------------------- read


def _id(request: web.Request, name: str) -> str:
    try:
        return str(uuid.UUID(request.match_info[name]))
    except ValueError:
        raise web.HTTPNotFound(reason="Not Found", text=f"no such {name}") from None


async def get_payment(request: web.Request) -> web.Response:
    authorize(request, "payments:read")
    payment = await request.app[PAYMENTS].load_payment(_id(request, "payment_id"))
    if payment is None:
        return problem(404, "Not Found", "no such payment")
    return web.json_response(payment_view(payment))


async def get_withdrawal(request: web.Request) -> web.Response:
    authorize(request, "withdrawals:read")
    repository = AggregateRepository(request.app[STORE])
    withdrawal = await repository.load(Withdrawal, _id(request, "withdrawal_id"))
    if withdrawal is None:
        return problem(404, "Not Found", "no such withdrawal")
    return web.json_response(withdrawal_view(withdrawal))


async def subject_events(request: web.Request) -> web.Response:
    kind = "payment" if "payment_id" in request.match_info else "withdrawal"
    authorize(request, f"{kind}s:read")
    subject_id = _id(request, f"{kind}_id")
    aggregate_type = Payment if kind == "payment" else Withdrawal
    if await AggregateRepository(request.app[STORE]).load(aggregate_type, subject_id) is None:
        return problem(404, "Not Found", f"no such {kind}")
    events = await request.app[STORE].read_stream(subject_id)
    return web.json_response({"items": [event_view(e) for e in events]})
