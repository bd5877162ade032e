"""Finance over HTTP: reconciliation items (JSON or CSV) and their summary, and finance's act on
the ledger, settling a payment (closing it, moving what it received to the merchant's payable,
and acknowledging what reconciliation flagged about it).

Items are rendered by adapters/storage/read_models/items.py's `item_cells`, the one renderer the
CLI and the console use too, so JSON, CSV, `ledger reconcile report` and the console agree
line for line.
"""

from __future__ import annotations

import csv
import io
import uuid
from decimal import Decimal
from typing import Annotated, Any

from aiohttp import web
from pydantic import BeforeValidator, Field

from adapters.http.auth import authorize
from adapters.http.cursors import encode_cursor
from adapters.http.fields import one_of
from adapters.http.keys import PAYMENTS, RUNNER
from adapters.http.problems import problem
from adapters.http.query_params import ReconciliationFilters, ReconciliationItemsQuery, read_query
from adapters.storage.read_models import readers
from adapters.storage.read_models.items import (
    ITEM_COLUMNS,
    ReconciliationItem,
    amount_cell,
    item_cells,
)
from ledger.errors import ConcurrencyConflict, LedgerError
from projections.views import payment_view

# How the summary counts, said in every answer: finance adds up `difference` per reason and
# must know that no amount is counted under two reasons for one payment.
COUNTING = (
    "one item per subject and reason; a late payment is one paid_late item, whose difference is"
    " what it holds beyond what it can take (everything once expired), never also counted as"
    " expired_with_funds, overpaid or a status_mismatch that only says it came late"
)


class ReconciliationItemsRequest(ReconciliationItemsQuery):
    """The items query, and the form of the answer: JSON (default) or CSV (RFC 4180)."""

    output: Annotated[str, BeforeValidator(one_of(["json", "csv"]))] = Field(
        default="json", alias="format"
    )


def _csv(items: list[ReconciliationItem]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(ITEM_COLUMNS)
    for item in items:
        cells = item_cells(item)
        writer.writerow([cells[column] or "" for column in ITEM_COLUMNS])
    return buffer.getvalue()


async def reconciliation_items(request: web.Request) -> web.Response:
    authorize(request, "finance:read")
    query = read_query(request, ReconciliationItemsRequest)
    page, more = await readers.reconciliation_page(request.app[RUNNER].pool, query)
    next_cursor = None
    if more:
        last = page[-1]
        next_cursor = encode_cursor(
            last["detected_at"],
            last["detected_position"],
            last["subject_type"],
            last["subject_id"],
            last["reason"],
        )
    items = [ReconciliationItem.from_row(row) for row in page]
    if query.output == "csv":
        # The next page's cursor, where JSON has it in the body.
        headers = {"Next-Cursor": next_cursor} if next_cursor else {}
        return web.Response(text=_csv(items), content_type="text/csv", headers=headers)
    body = {"items": [item_cells(item) for item in items], "next_cursor": next_cursor}
    return web.json_response(body)


async def reconciliation_summary(request: web.Request) -> web.Response:
    authorize(request, "finance:read")
    query = read_query(request, ReconciliationFilters)
    rows = await readers.reconciliation_summary_rows(request.app[RUNNER].pool, query)
    totals: list[dict[str, Any]] = [
        {
            "reason": row["reason"],
            "currency": row["currency"],
            "items": row["items"],
            "difference": amount_cell(Decimal(row["difference"]), row["currency"]),
        }
        for row in rows
    ]
    body = {"items": totals, "open_items": sum(r["items"] for r in rows), "counting": COUNTING}
    return web.json_response(body)


async def settle_payment(request: web.Request) -> web.Response:
    authorize(request, "finance:write")
    try:
        payment_id = str(uuid.UUID(request.match_info["payment_id"]))
    except ValueError:
        return problem(404, "Not Found", "no such payment")
    try:
        payment = await request.app[PAYMENTS].settle_payment(payment_id)
    except LedgerError as broken:  # a conflict outlasting the retries is the middleware's 409
        if isinstance(broken, ConcurrencyConflict):
            raise
        return problem(422, "Unprocessable Entity", str(broken), code=broken.code)
    if payment is None:
        return problem(404, "Not Found", "no such payment")
    return web.json_response(payment_view(payment))
