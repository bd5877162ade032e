"""The console's pages about one subject and about the whole ledger: a payment's or
withdrawal's timeline, balances, and the audit log's head with its signed checkpoints."""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web

from adapters.audit.signing import public_key_of_pem, signature_holds
from adapters.http.console import queries
from adapters.http.console.pages import not_fresh, page
from adapters.http.console.timeline import timeline_event
from adapters.http.freshness import JOURNAL
from adapters.http.keys import CHECKPOINTER, RUNNER, STORE
from adapters.storage.read_models import readers
from adapters.storage.read_models.items import balance_cells
from adapters.storage.repository import AggregateRepository
from ledger.payment import Payment
from ledger.withdrawal import Withdrawal
from projections.views import payment_view, withdrawal_view

CHECKPOINTS_SHOWN = 50


async def not_found(request: web.Request) -> web.Response:
    raise web.HTTPNotFound(text=f"There is no console page at {request.path}.")


# ---------------------------------------------------------------- timelines


async def _timeline(request: web.Request, kind: str) -> web.Response:
    try:
        subject_id = str(uuid.UUID(request.match_info["subject_id"]))
    except ValueError:
        raise web.HTTPNotFound(text=f"There is no such {kind}.") from None
    if (stale := await not_fresh(request, [])) is not None:
        return stale
    store = request.config_dict[STORE]
    repository = AggregateRepository(store)
    view: dict[str, Any] | None = None
    if kind == "payment" and (payment := await repository.load(Payment, subject_id)):
        view = payment_view(payment)
    if kind == "withdrawal" and (withdrawal := await repository.load(Withdrawal, subject_id)):
        view = withdrawal_view(withdrawal)
    if view is None:
        raise web.HTTPNotFound(text=f"There is no such {kind}.")
    events = [timeline_event(e) for e in await store.read_stream(subject_id)]
    title = f"{kind.capitalize()} {subject_id}"
    return page(request, "timeline.html", title, kind=kind, view=view, events=events)


async def payment_timeline(request: web.Request) -> web.Response:
    return await _timeline(request, "payment")


async def withdrawal_timeline(request: web.Request) -> web.Response:
    return await _timeline(request, "withdrawal")


# ---------------------------------------------------------------- balances and audit


async def balances_page(request: web.Request) -> web.Response:
    if (stale := await not_fresh(request, [JOURNAL])) is not None:
        return stale
    rows = await readers.balance_rows(request.config_dict[RUNNER].pool)
    balances = [balance_cells(row) for row in rows]
    return page(request, "balances.html", "Balances", balances=balances)


async def audit_page(request: web.Request) -> web.Response:
    app = request.config_dict
    head = await app[STORE].head()
    key = app[CHECKPOINTER].signer.public_key()
    public_key = public_key_of_pem(key.pem.encode("ascii"))
    recent = await queries.recent_checkpoints(app[STORE].pool, CHECKPOINTS_SHOWN)
    checkpoints = [
        {
            "checkpoint": r.checkpoint,
            "signature_holds": signature_holds(r.checkpoint, public_key),
            "log_agrees": r.log_hash == r.checkpoint.hash,
        }
        for r in recent
    ]
    return page(
        request,
        "audit.html",
        "Audit",
        head={"partition": head.partition, "position": head.position, "hash": head.hash.hex()},
        key_id=key.key_id,
        checkpoints=checkpoints,
    )
