"""Finance's reads: lists of payments and withdrawals, balances, the journal, reconciliation, and
the projections' own positions. All of them read the projections' indexed tables (never replay
streams) and page with opaque keyset cursors, so a page costs the same at row 10 or 10 million."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from aiohttp import web

from adapters.http.auth import SETTINGS, authorize
from adapters.http.cursors import encode_cursor
from adapters.http.freshness import JOURNAL, RECONCILIATION, SUBJECTS, FreshReads
from adapters.http.query_params import (
    BalancesQuery,
    JournalQuery,
    PaymentListQuery,
    ReconciliationFilters,
    ReconciliationItemsQuery,
    WithdrawalListQuery,
    read_query,
)
from adapters.storage.read_models.runner import ProjectionRunner
from ledger.money import currency_scale, is_registered

RUNNER = web.AppKey("projection_runner", ProjectionRunner)

__all__ = ["RUNNER", "add_query_routes", "encode_cursor"]


class Filters:
    """Builds a WHERE clause from query parameters, with numbered placeholders."""

    def __init__(self) -> None:
        self.clauses: list[str] = []
        self.values: list[Any] = []

    def add(self, clause: str, *values: Any) -> None:
        """Adds `clause` with each `?` bound to the next value; skipped when a value is None."""
        if any(v is None for v in values):
            return
        for value in values:
            self.values.append(value)
            clause = clause.replace("?", f"${len(self.values)}", 1)
        self.clauses.append(clause)

    def where(self) -> str:
        return " WHERE " + " AND ".join(self.clauses) if self.clauses else ""


# ---------------------------------------------------------------- payments and withdrawals


async def _subject_page(
    request: web.Request,
    table: str,
    id_column: str,
    query: PaymentListQuery | WithdrawalListQuery,
    equal: tuple[str, ...],
) -> web.Response:
    limit = query.limit
    filters = Filters()
    for column in equal:  # each named as its query parameter
        filters.add(f"{column} = ?", getattr(query, column))
    filters.add("created_at >= ?", query.created_from)
    filters.add("created_at < ?", query.created_to)
    if query.cursor is not None:
        filters.add(f"(created_at, {id_column}) < (?, ?)", *query.cursor)
    rows = await request.app[RUNNER].pool.fetch(
        f"SELECT view, created_at, {id_column} AS id FROM {table}{filters.where()}"  # noqa: S608 - fixed columns
        f" ORDER BY created_at DESC, {id_column} DESC LIMIT {limit + 1}",
        *filters.values,
    )
    page, more = rows[:limit], len(rows) > limit
    next_cursor = encode_cursor(page[-1]["created_at"], page[-1]["id"]) if more else None
    return web.json_response({"items": [r["view"] for r in page], "next_cursor": next_cursor})


async def list_payments(request: web.Request) -> web.Response:
    authorize(request, "payments:read")
    query = read_query(request, PaymentListQuery)
    equal = ("provider", "status", "coverage", "order_id", "provider_ref", "customer_id")
    return await _subject_page(request, "payments_view", "payment_id", query, equal)


async def list_withdrawals(request: web.Request) -> web.Response:
    authorize(request, "withdrawals:read")
    query = read_query(request, WithdrawalListQuery)
    equal = ("provider", "status", "request_id", "provider_ref", "customer_id")
    return await _subject_page(request, "withdrawals_view", "withdrawal_id", query, equal)


# ---------------------------------------------------------------- balances and journal


def _amount(value: Decimal, currency: str) -> str:
    """At the currency's scale, always: sums of NUMERIC drop trailing zeros, 0E-8 must read
    "0.00000000", and a figure finer than the scale (a provider's odd report) stays whole."""
    if is_registered(currency):
        scaled = value.quantize(Decimal(1).scaleb(-currency_scale(currency)))
        if scaled == value:
            value = scaled
    return format(value, "f")


async def balances(request: web.Request) -> web.Response:
    authorize(request, "finance:read")
    query = read_query(request, BalancesQuery)
    filters = Filters()
    filters.add("account = ?", query.account)
    filters.add("currency = ?", query.currency)
    rows = await request.app[RUNNER].pool.fetch(
        f"SELECT * FROM account_balances{filters.where()} ORDER BY account, currency",  # noqa: S608 - built from fixed clauses
        *filters.values,
    )
    items = [
        {
            "account": r["account"],
            "currency": r["currency"],
            "pending": _amount(r["pending"], r["currency"]),
            "posted": _amount(r["posted"], r["currency"]),
            "available": _amount(r["posted"] + r["reserved"], r["currency"]),
        }
        for r in rows
    ]
    return web.json_response({"items": items})


async def journal(request: web.Request) -> web.Response:
    authorize(request, "finance:read")
    query = read_query(request, JournalQuery)
    limit = query.limit
    filters = Filters()
    touching = "EXISTS (SELECT 1 FROM journal_postings p WHERE p.partition = e.partition"
    touching += " AND p.position = e.position AND p.{} = ?)"
    filters.add(touching.format("account"), query.account)
    filters.add(touching.format("currency"), query.currency)
    filters.add("e.subject_id = ?", query.subject_id)
    filters.add("e.provider = ?", query.provider)
    filters.add("e.position > ?", query.cursor[0] if query.cursor else None)
    entries = await request.app[RUNNER].pool.fetch(
        "SELECT * FROM journal_entries e"  # noqa: S608 - built from fixed clauses
        f"{filters.where()} ORDER BY e.partition, e.position LIMIT {limit + 1}",
        *filters.values,
    )
    page, more = entries[:limit], len(entries) > limit
    postings = await request.app[RUNNER].pool.fetch(
        "SELECT * FROM journal_postings WHERE position = any($1::bigint[]) ORDER BY position, line",
        [e["position"] for e in page],
    )
    lines: dict[int, list[dict[str, str]]] = {}
    for p in postings:
        lines.setdefault(p["position"], []).append(
            {
                "account": p["account"],
                "currency": p["currency"],
                "kind": p["kind"],
                "amount": _amount(p["amount"], p["currency"]),
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


def _reconciliation_filters(query: ReconciliationFilters) -> Filters:
    filters = Filters()
    if query.state != "all":
        filters.clauses.append(f"cleared_at IS {'' if query.state == 'open' else 'NOT '}NULL")
    filters.add("reason = ?", query.reason)
    filters.add("provider = ?", query.provider)
    filters.add("currency = ?", query.currency)
    filters.add("detected_at >= ?", query.detected_from)
    filters.add("detected_at < ?", query.detected_to)
    return filters


def _optional_amount(value: Decimal | None, currency: str) -> str | None:
    return None if value is None else _amount(value, currency)


def item_view(row: Any) -> dict[str, Any]:
    def instant(value: datetime | None) -> str | None:
        return value.isoformat().replace("+00:00", "Z") if value else None

    return {
        "subject_type": row["subject_type"],
        "subject_id": row["subject_id"],
        "provider": row["provider"],
        "reason": row["reason"],
        "currency": row["currency"],
        "expected": _optional_amount(row["expected"], row["currency"]),
        "received": _optional_amount(row["received"], row["currency"]),
        "provider_reported": _optional_amount(row["provider_reported"], row["currency"]),
        "difference": _amount(row["difference"], row["currency"]),
        "detected_at": instant(row["detected_at"]),
        "cleared_at": instant(row["cleared_at"]),
    }


async def reconciliation_items(request: web.Request) -> web.Response:
    authorize(request, "finance:read")
    query = read_query(request, ReconciliationItemsQuery)
    limit = query.limit
    filters = _reconciliation_filters(query)
    if query.cursor is not None:
        filters.add(
            "(detected_at, detected_position, subject_type, subject_id, reason) < (?, ?, ?, ?, ?)",
            *query.cursor,
        )
    rows = await request.app[RUNNER].pool.fetch(
        f"SELECT * FROM reconciliation_items{filters.where()}"  # noqa: S608 - fixed clauses
        " ORDER BY detected_at DESC, detected_position DESC, subject_type DESC,"
        f" subject_id DESC, reason DESC LIMIT {limit + 1}",
        *filters.values,
    )
    page, more = rows[:limit], len(rows) > limit
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
    return web.json_response({"items": [item_view(r) for r in page], "next_cursor": next_cursor})


async def reconciliation_summary(request: web.Request) -> web.Response:
    authorize(request, "finance:read")
    filters = _reconciliation_filters(read_query(request, ReconciliationFilters))
    rows = await request.app[RUNNER].pool.fetch(
        "SELECT reason, currency, count(*) AS items, sum(difference) AS difference"  # noqa: S608 - fixed clauses
        f" FROM reconciliation_items{filters.where()}"
        " GROUP BY reason, currency ORDER BY reason, currency",
        *filters.values,
    )
    items = [
        {
            "reason": r["reason"],
            "currency": r["currency"],
            "items": r["items"],
            "difference": _amount(r["difference"], r["currency"]),
        }
        for r in rows
    ]
    return web.json_response({"items": items, "open_items": sum(r["items"] for r in rows)})


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
    return web.json_response({"items": items})


def add_query_routes(app: web.Application) -> None:
    # Reading your writes (API.md): each read first waits for the projections it reads to reach
    # the log's head as it was when the request arrived (adapters/http/freshness.py).
    fresh = FreshReads(app[RUNNER], app[SETTINGS].read_your_writes_wait_seconds_max)
    app.router.add_get("/v1/payments", fresh(list_payments, "payments:read", SUBJECTS))
    app.router.add_get("/v1/withdrawals", fresh(list_withdrawals, "withdrawals:read", SUBJECTS))
    app.router.add_get("/v1/balances", fresh(balances, "finance:read", JOURNAL))
    app.router.add_get("/v1/journal", fresh(journal, "finance:read", JOURNAL))
    app.router.add_get(
        "/v1/reconciliation/items",
        fresh(reconciliation_items, "finance:read", RECONCILIATION),
    )
    app.router.add_get(
        "/v1/reconciliation/summary",
        fresh(reconciliation_summary, "finance:read", RECONCILIATION),
    )
    app.router.add_get("/v1/projections", projections_status)
