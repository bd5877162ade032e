"""Every read query of the read models, in one place: the lists of payments and withdrawals,
balances ("available" is defined here, once), the journal, reconciliation, the projections'
positions, and the candidates the sweeper and recovery re-check on their own streams.

HTTP, the CLI, the background work and the funds guard call these; none of them writes its own
SQL against a read model. All of them read the projections' indexed tables (never replay
streams) and page by keyset, so a page costs the same at row 10 or 10 million. Each takes the
pool (or connection) to read with, so a caller decides which one.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import asyncpg

from adapters.storage.postgres_store import AnyConnection
from projections.postings import provider_funds

if TYPE_CHECKING:  # the parsed query parameters; their shapes only, no import at run time
    from adapters.http.query_params import (
        JournalQuery,
        PaymentListQuery,
        ReconciliationFilters,
        ReconciliationItemsQuery,
        WithdrawalListQuery,
    )

Source = asyncpg.Pool | AnyConnection

# What may be spent at an account: posted, less what is reserved (reservations are negative).
# The withdrawal check (funds guard) and /v1/balances both read it from here.
AVAILABLE = "posted + reserved"


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
    source: Source,
    table: str,
    id_column: str,
    query: PaymentListQuery | WithdrawalListQuery,
    equal: tuple[str, ...],
) -> tuple[list[asyncpg.Record], bool]:
    """A page of (view, created_at, id) rows, newest first, and whether more follow."""
    limit = query.limit
    filters = Filters()
    for column in equal:  # each named as its query parameter
        filters.add(f"{column} = ?", getattr(query, column))
    filters.add("created_at >= ?", query.created_from)
    filters.add("created_at < ?", query.created_to)
    if query.cursor is not None:
        filters.add(f"(created_at, {id_column}) < (?, ?)", *query.cursor)
    rows = await source.fetch(
        f"SELECT view, created_at, {id_column} AS id FROM {table}{filters.where()}"  # noqa: S608 - fixed columns
        f" ORDER BY created_at DESC, {id_column} DESC LIMIT {limit + 1}",
        *filters.values,
    )
    return rows[:limit], len(rows) > limit


async def payments_page(
    source: Source, query: PaymentListQuery
) -> tuple[list[asyncpg.Record], bool]:
    equal = ("provider", "status", "coverage", "order_id", "provider_ref", "customer_id")
    return await _subject_page(source, "payments_view", "payment_id", query, equal)


async def withdrawals_page(
    source: Source, query: WithdrawalListQuery
) -> tuple[list[asyncpg.Record], bool]:
    equal = ("provider", "status", "request_id", "provider_ref", "customer_id")
    return await _subject_page(source, "withdrawals_view", "withdrawal_id", query, equal)


# ---------------------------------------------------------------- balances and journal


async def balance_rows(
    source: Source, *, account: str | None = None, currency: str | None = None
) -> list[asyncpg.Record]:
    """Balances by account and currency, each with its `available`."""
    filters = Filters()
    filters.add("account = ?", account)
    filters.add("currency = ?", currency)
    return await source.fetch(
        f"SELECT *, {AVAILABLE} AS available FROM account_balances{filters.where()}"  # noqa: S608 - built from fixed clauses
        " ORDER BY account, currency",
        *filters.values,
    )


async def available_funds(source: Source, provider: str, currency: str) -> Decimal:
    """What a withdrawal at `provider` may reserve in `currency`, as the journal says."""
    row = await source.fetchrow(
        f"SELECT {AVAILABLE} AS available FROM account_balances"  # noqa: S608 - fixed expression
        " WHERE account = $1 AND currency = $2",
        provider_funds(provider),
        currency,
    )
    return Decimal(row["available"]) if row else Decimal(0)


async def journal_page(
    source: Source, query: JournalQuery
) -> tuple[list[asyncpg.Record], bool, list[asyncpg.Record]]:
    """A page of journal entries in log order, whether more follow, and the page's postings."""
    limit = query.limit
    filters = Filters()
    touching = "EXISTS (SELECT 1 FROM journal_postings p WHERE p.partition = e.partition"
    touching += " AND p.position = e.position AND p.{} = ?)"
    filters.add(touching.format("account"), query.account)
    filters.add(touching.format("currency"), query.currency)
    filters.add("e.subject_id = ?", query.subject_id)
    filters.add("e.provider = ?", query.provider)
    filters.add("e.position > ?", query.cursor[0] if query.cursor else None)
    entries = await source.fetch(
        "SELECT * FROM journal_entries e"  # noqa: S608 - built from fixed clauses
        f"{filters.where()} ORDER BY e.partition, e.position LIMIT {limit + 1}",
        *filters.values,
    )
    page, more = entries[:limit], len(entries) > limit
    postings = await source.fetch(
        "SELECT * FROM journal_postings WHERE position = any($1::bigint[]) ORDER BY position, line",
        [e["position"] for e in page],
    )
    return page, more, postings


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


async def reconciliation_page(
    source: Source, query: ReconciliationItemsQuery
) -> tuple[list[asyncpg.Record], bool]:
    """A page of reconciliation items, latest detected first, and whether more follow."""
    limit = query.limit
    filters = _reconciliation_filters(query)
    if query.cursor is not None:
        filters.add(
            "(detected_at, detected_position, subject_type, subject_id, reason) < (?, ?, ?, ?, ?)",
            *query.cursor,
        )
    rows = await source.fetch(
        f"SELECT * FROM reconciliation_items{filters.where()}"  # noqa: S608 - fixed clauses
        " ORDER BY detected_at DESC, detected_position DESC, subject_type DESC,"
        f" subject_id DESC, reason DESC LIMIT {limit + 1}",
        *filters.values,
    )
    return rows[:limit], len(rows) > limit


async def reconciliation_summary_rows(
    source: Source, query: ReconciliationFilters
) -> list[asyncpg.Record]:
    """Items and summed difference by reason and currency."""
    filters = _reconciliation_filters(query)
    return await source.fetch(
        "SELECT reason, currency, count(*) AS items, sum(difference) AS difference"  # noqa: S608 - fixed clauses
        f" FROM reconciliation_items{filters.where()}"
        " GROUP BY reason, currency ORDER BY reason, currency",
        *filters.values,
    )


async def reconciliation_items_all(
    source: Source, *, reason: str | None, provider: str | None, include_cleared: bool
) -> list[asyncpg.Record]:
    """Every item (open only unless `include_cleared`), for `ledger reconcile`."""
    return await source.fetch(
        "SELECT * FROM reconciliation_items WHERE ($1::text IS NULL OR reason = $1)"
        " AND ($2::text IS NULL OR provider = $2) AND ($3 OR cleared_at IS NULL)"
        " ORDER BY reason, detected_at, subject_id",
        reason,
        provider,
        include_cleared,
    )


async def open_items_by_reason(source: Source) -> list[asyncpg.Record]:
    """(reason, items) of the items not cleared, for /metrics."""
    return await source.fetch(
        "SELECT reason, count(*) AS items FROM reconciliation_items"
        " WHERE cleared_at IS NULL GROUP BY reason"
    )


# ---------------------------------------------------------------- projections


async def projection_positions(source: Source, names: Sequence[str]) -> list[asyncpg.Record]:
    """Each named projection's position per partition beside the log's head there."""
    return await source.fetch(
        "SELECT p.name, p.partition, p.position, h.position AS head, p.failed_position"
        " FROM projection_positions p JOIN log_heads h USING (partition)"
        " WHERE p.name = any($1::text[])",
        list(names),
    )


# ---------------------------------------------------------------- candidates for the clock


async def payments_due_to_expire(
    source: Source, now: datetime, limit: int = 1000
) -> list[asyncpg.Record]:
    """Payments still open whose deadline has passed (the sweeper expires them)."""
    return await source.fetch(
        "SELECT payment_id FROM payments_view WHERE status IN ('pending', 'confirming')"
        " AND expires_at <= $1 ORDER BY expires_at LIMIT $2",
        now,
        limit,
    )


async def withdrawals_gone_quiet(
    source: Source, since: datetime, limit: int = 1000
) -> list[asyncpg.Record]:
    """Withdrawals in flight unchanged since `since` and not yet noticed as stuck."""
    return await source.fetch(
        "SELECT withdrawal_id FROM withdrawals_view"
        " WHERE status IN ('requested', 'submitted', 'processing') AND updated_at <= $1"
        " AND view->>'stuck_since' IS NULL ORDER BY updated_at LIMIT $2",
        since,
        limit,
    )


async def payments_awaiting_answer(
    source: Source, since: datetime, limit: int
) -> list[asyncpg.Record]:
    """Payments recorded before `since` still waiting for their provider's create answer."""
    return await source.fetch(
        "SELECT payment_id FROM payments_view WHERE status = 'submitting'"
        " AND created_at <= $1 ORDER BY created_at LIMIT $2",
        since,
        limit,
    )


async def withdrawals_awaiting_answer(
    source: Source, since: datetime, limit: int
) -> list[asyncpg.Record]:
    """Withdrawals recorded before `since` still waiting for their provider's create answer."""
    return await source.fetch(
        "SELECT withdrawal_id FROM withdrawals_view"
        " WHERE status IN ('requested', 'submitting') AND provider_ref IS NULL"
        " AND created_at <= $1 ORDER BY created_at LIMIT $2",
        since,
        limit,
    )
