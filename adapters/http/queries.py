"""Finance's reads over HTTP: lists of payments and withdrawals, balances, the journal,
reconciliation, and the projections' own positions. The queries are
adapters/storage/read_models/readers.py's; here they become pages of JSON with opaque keyset
cursors. Routes (wrapped to read your writes) are listed in adapters/http/routes.py."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from adapters.http.auth import authorize
from adapters.http.cursors import encode_cursor
from adapters.http.keys import APPLIER, RUNNER
from adapters.http.query_params import (
    BalancesQuery,
    JournalQuery,
    PaymentListQuery,
    WithdrawalListQuery,
    read_query,
)
from adapters.storage.read_models import readers
from adapters.storage.read_models.items import amount_cell, balance_cells

__all__ = ["encode_cursor"]


# ---------------------------------------------------------------- payments and withdrawals


def _subject_response(read: tuple[list[Any], bool]) -> web.Response:
    page, more = read
    next_cursor = encode_cursor(page[-1]["created_at"], page[-1]["id"]) if more else None
    return web.json_response({"items": [r["view"] for r in page], "next_cursor": next_cursor})


async def list_payments(request: web.Request) -> web.Response:
    authorize(request, "payments:read")
    query = read_query(request, PaymentListQuery)
    return _subject_response(await readers.payments_page(request.app[RUNNER].pool, query))


async def list_withdrawals(request: web.Request) -> web.Response:
    authorize(request, "withdrawals:read")
    query = read_query(request, WithdrawalListQuery)
    return _subject_response(await readers.withdrawals_page(request.app[RUNNER].pool, query))


# ---------------------------------------------------------------- balances and journal


async def balances(request: web.Request) -> web.Response:
    authorize(request, "finance:read")
    query = read_query(request, BalancesQuery)
    rows = await readers.balance_rows(
        request.app[RUNNER].pool, account=query.account, currency=query.currency
    )
    items = [balance_cells(row) for row in rows]
    return web.json_response({"items": items})


async def journal(request: web.Request) -> web.Response:
    authorize(request, "finance:read")
    query = read_query(request, JournalQuery)
    page, more, postings = await readers.journal_page(request.app[RUNNER].pool, query)
    lines: dict[int, list[dict[str, str | None]]] = {}
    for p in postings:
        lines.setdefault(p["position"], []).append(
            {
                "account": p["account"],
                "currency": p["currency"],
                "kind": p["kind"],
                "amount": amount_cell(p["amount"], p["currency"]),
            }
        )
    items = [
        {
            "entry_id": f"{e['partition']}:{e['position']}",
            "position": e["position"],
            "event_type": e["event_type"],
            "subject_type": e["subject_type"],
            "subject_id": e["subject_id"],
            "provider": e["provider"],
            "recorded_at": e["recorded_at"].isoformat().replace("+00:00", "Z"),
            "postings": lines.get(e["position"], []),
        }
        for e in page
    ]
    next_cursor = encode_cursor(page[-1]["position"]) if more else None
    return web.json_response({"items": items, "next_cursor": next_cursor})


# ---------------------------------------------------------------- reconciliation


# Past this many, "how far behind" is only "far": the count stays one bounded query.
APPLIER_PENDING_COUNTED_MAX = 100_000


async def projections_status(request: web.Request) -> web.Response:
    authorize(request, "finance:read")
    statuses = await request.app[RUNNER].status()
    items = [
        {
            "name": s.name,
            "partition": s.partition,
            "position": s.position,
            "head": s.head,
            "lag": s.lag,
            "updated_at": s.updated_at.isoformat().replace("+00:00", "Z"),
            "failed_position": s.failed_position,
            "failure": s.failure,
        }
        for s in statuses
    ]
    # The applier beside them: received deliveries it has still to apply (API.md).
    applier = request.app[APPLIER]
    position, head = await applier.lag()
    pending = await applier.pending(APPLIER_PENDING_COUNTED_MAX)
    return web.json_response(
        {
            "items": items,
            "applier": {"position": position, "head": head, "pending_events": pending},
        }
    )
