"""Finance's reads: lists of payments and withdrawals, balances, the journal, reconciliation, and
the projections' own positions. All of them read the projections' indexed tables (never replay
streams) and page with opaque keyset cursors, so a page costs the same at row 10 or 10 million."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

from aiohttp import web

from adapters.http.auth import authorize
from adapters.storage.read_models.runner import ProjectionRunner
from ledger.money import currency_scale, is_registered
from projections.findings import Reason

RUNNER = web.AppKey("projection_runner", ProjectionRunner)
DEFAULT_LIMIT = 50
MAX_LIMIT = 500


class QueryError(web.HTTPBadRequest):
    def __init__(self, detail: str) -> None:
        super().__init__(reason="Bad Request", text=detail)


def _limit(request: web.Request) -> int:
    raw = request.query.get("limit", str(DEFAULT_LIMIT))
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise QueryError(f"limit must be a whole number from 1 to {MAX_LIMIT}")
    return int(raw)


def _instant(request: web.Request, name: str) -> datetime | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise QueryError(f"{name} must be an ISO 8601 instant") from None
    if value.tzinfo is None:
        raise QueryError(f"{name} must carry a time zone (e.g. Z)")
    return value


def encode_cursor(*key: Any) -> str:
    text = json.dumps([k.isoformat() if isinstance(k, datetime) else str(k) for k in key])
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(request: web.Request, *parsers: Callable[[str], Any]) -> list[Any] | None:
    raw = request.query.get("cursor")
    if not raw:
        return None
    refused = QueryError("cursor is not one this API handed out")
    try:
        parts = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except ValueError:
        raise refused from None
    if not isinstance(parts, list) or len(parts) != len(parsers):
        raise refused
    try:
        return [parse(str(part)) for parse, part in zip(parsers, parts, strict=True)]
    except ValueError:
        raise refused from None


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
    request: web.Request, table: str, id_column: str, equal: dict[str, str]
) -> web.Response:
    limit = _limit(request)
    filters = Filters()
    for parameter, column in equal.items():
        filters.add(f"{column} = ?", request.query.get(parameter))
    filters.add("created_at >= ?", _instant(request, "created_from"))
    filters.add("created_at < ?", _instant(request, "created_to"))
    cursor = decode_cursor(request, datetime.fromisoformat, uuid.UUID)
    if cursor is not None:
        filters.add(f"(created_at, {id_column}) < (?, ?)", *cursor)
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
    equal = {p: p for p in ("provider", "status", "coverage", "order_id", "provider_ref")}
    equal["customer_id"] = "customer_id"
    return await _subject_page(request, "payments_view", "payment_id", equal)


async def list_withdrawals(request: web.Request) -> web.Response:
    authorize(request, "withdrawals:read")
    equal = {p: p for p in ("provider", "status", "request_id", "provider_ref", "customer_id")}
    return await _subject_page(request, "withdrawals_view", "withdrawal_id", equal)


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
    filters = Filters()
    filters.add("account = ?", request.query.get("account"))
    filters.add("currency = ?", request.query.get("currency"))
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
    limit = _limit(request)
    filters = Filters()
    account = request.query.get("account")
    currency = request.query.get("currency")
    touching = "EXISTS (SELECT 1 FROM journal_postings p WHERE p.partition = e.partition"
    touching += " AND p.position = e.position AND p.{} = ?)"
    filters.add(touching.format("account"), account)
    filters.add(touching.format("currency"), currency)
    filters.add("e.subject_id = ?", request.query.get("subject_id"))
    filters.add("e.provider = ?", request.query.get("provider"))
    cursor = decode_cursor(request, int)
    filters.add("e.position > ?", cursor[0] if cursor else None)
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


def _reconciliation_filters(request: web.Request) -> Filters:
    filters = Filters()
    reason = request.query.get("reason")
    if reason is not None and reason not in {r.value for r in Reason}:
        raise QueryError(f"unknown reason {reason!r}; known: {sorted(r.value for r in Reason)}")
    state = request.query.get("state", "open")
    if state not in {"open", "cleared", "all"}:
        raise QueryError("state must be open, cleared or all")
    if state != "all":
        filters.clauses.append(f"cleared_at IS {'' if state == 'open' else 'NOT '}NULL")
    filters.add("reason = ?", reason)
    filters.add("provider = ?", request.query.get("provider"))
    filters.add("currency = ?", request.query.get("currency"))
    filters.add("detected_at >= ?", _instant(request, "from"))
    filters.add("detected_at < ?", _instant(request, "to"))
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
    limit = _limit(request)
    filters = _reconciliation_filters(request)
    cursor = decode_cursor(request, datetime.fromisoformat, int, str, str, str)
    if cursor is not None:
        filters.add(
            "(detected_at, detected_position, subject_type, subject_id, reason) < (?, ?, ?, ?, ?)",
            *cursor,
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
    filters = _reconciliation_filters(request)
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
    app.router.add_get("/v1/payments", list_payments)
    app.router.add_get("/v1/withdrawals", list_withdrawals)
    app.router.add_get("/v1/balances", balances)
    app.router.add_get("/v1/journal", journal)
    app.router.add_get("/v1/reconciliation/items", reconciliation_items)
    app.router.add_get("/v1/reconciliation/summary", reconciliation_summary)
    app.router.add_get("/v1/projections", projections_status)
