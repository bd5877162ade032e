"""The reconciliation items page and its CSV download.

Items are written through read_models/items.py's `item_cells`, the one renderer the API, its CSV
and `ledger reconcile report` share, so the console agrees with them line for line.
"""

from __future__ import annotations

import csv
import io
from urllib.parse import urlencode

from aiohttp import web
from pydantic import ValidationError

from adapters.config import PROVIDER_IDS
from adapters.http.console import queries
from adapters.http.console.guard import SECURITY_HEADERS
from adapters.http.console.pages import not_fresh, page
from adapters.http.cursors import encode_cursor
from adapters.http.freshness import RECONCILIATION
from adapters.http.keys import RUNNER
from adapters.http.query_params import ReconciliationItemsQuery
from adapters.http.rules import refusal_from
from adapters.storage.read_models import readers
from adapters.storage.read_models.items import ITEM_COLUMNS, ReconciliationItem, item_cells
from projections.findings import Reason

# Cells a spreadsheet would run as a formula when they start so (CSV injection): text a
# provider or caller chose is written with a leading apostrophe. Amounts are never touched.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_AMOUNT_COLUMNS = frozenset({"expected", "received", "provider_reported", "difference"})


def _filters(request: web.Request) -> ReconciliationItemsQuery:
    """The filter form's fields as the API's query (an empty field filters nothing)."""
    given = {name: value for name, value in request.query.items() if value}
    try:
        return ReconciliationItemsQuery.model_validate(given)
    except ValidationError as error:
        raise refusal_from(error, "parameter") from None


def _timeline_path(item: ReconciliationItem) -> str | None:
    if item.subject_type in {"payment", "withdrawal"}:
        return f"/console/{item.subject_type}s/{item.subject_id}"
    return None  # e.g. an unmatched delivery or a provider's balance: no stream of its own


async def items_page(request: web.Request) -> web.Response:
    query = _filters(request)
    if (stale := await not_fresh(request, [RECONCILIATION])) is not None:
        return stale
    pool = request.config_dict[RUNNER].pool
    rows, more = await readers.reconciliation_page(pool, query)
    items = [ReconciliationItem.from_row(row) for row in rows]
    chosen = {name: value for name, value in request.query.items() if value and name != "cursor"}
    older = None
    if more:
        last = items[-1]
        key = (last.detected_at, last.detected_position, last.subject_type, last.subject_id)
        cursor = encode_cursor(*key, last.reason)
        older = "?" + urlencode({**chosen, "cursor": cursor})
    return page(
        request,
        "items.html",
        "Reconciliation items",
        columns=ITEM_COLUMNS,
        rows=[(item_cells(item), _timeline_path(item)) for item in items],
        chosen=chosen,
        reasons=[reason.value for reason in Reason],
        providers=PROVIDER_IDS,
        currencies=await queries.item_currencies(pool),
        states=("open", "cleared", "all"),
        csv_link="/console/items.csv" + ("?" + urlencode(chosen) if chosen else ""),
        older=older,
    )


def _csv_cell(column: str, value: str | None) -> str:
    if value is None:
        return ""
    if column not in _AMOUNT_COLUMNS and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


async def items_csv(request: web.Request) -> web.StreamResponse:
    """Every item the filters select (not only the page shown), written as it is read."""
    query = _filters(request)
    if (stale := await not_fresh(request, [RECONCILIATION])) is not None:
        return stale
    response = web.StreamResponse(
        headers={  # sent before the guard sees the response, so set here
            **SECURITY_HEADERS,
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": 'attachment; filename="reconciliation-items.csv"',
        }
    )
    await response.prepare(request)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")  # RFC 4180, as the API's CSV
    writer.writerow(ITEM_COLUMNS)
    async for items in queries.every_item(request.config_dict[RUNNER].pool, query):
        for item in items:
            cells = item_cells(item)
            writer.writerow([_csv_cell(c, cells[c]) for c in ITEM_COLUMNS])
        await response.write(buffer.getvalue().encode())
        buffer.seek(0)
        buffer.truncate()
    await response.write_eof()
    return response
