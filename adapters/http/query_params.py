"""Query parameters of the list endpoints, validated like request bodies.

An unknown or repeated parameter is a 400 (a misspelt filter must not silently list
everything); a value that cannot be read as its type (limit, instant, cursor) is a 400; a value
outside what the parameter takes (an unknown status, a limit out of range, text with NUL) is a
422 naming what it takes. Every text filter is bounded as the body's fields are.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, TypeVar
from uuid import UUID

from aiohttp import web
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from adapters.config import PROVIDER_IDS
from adapters.http.cursors import (
    cursor_of,
    instant_part,
    position_part,
    read_instant,
    text_part,
    uuid_part,
)
from adapters.http.fields import (
    ADDRESS_LENGTH_MAX,
    CURRENCY_LENGTH_MAX,
    IDENTIFIER_LENGTH_MAX,
    one_of,
    text,
)
from adapters.http.rules import broken, clipped, refusal_from, refuse, shown
from ledger.payment import Coverage, PaymentStatus
from ledger.withdrawal import WithdrawalStatus
from projections.findings import Reason

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
_INTEGER = re.compile(r"-?[0-9]{1,9}")


def _limit(value: Any) -> int:
    if not isinstance(value, str) or not _INTEGER.fullmatch(value):
        raise broken("limit-not-an-integer", f"limit {shown(value)} is not a whole number")
    if not 1 <= int(value) <= MAX_LIMIT:
        raise broken("limit-out-of-range", f"limit must be from 1 to {MAX_LIMIT}")
    return int(value)


def _values(enum: Any) -> list[str]:
    return [member.value for member in enum]


Limit = Annotated[int, BeforeValidator(_limit)]
Instant = Annotated[datetime, BeforeValidator(read_instant)]
Text = Annotated[str, BeforeValidator(text(IDENTIFIER_LENGTH_MAX))]
LongText = Annotated[str, BeforeValidator(text(ADDRESS_LENGTH_MAX))]
Currency = Annotated[str, BeforeValidator(text(CURRENCY_LENGTH_MAX))]
ProviderName = Annotated[str, BeforeValidator(one_of(PROVIDER_IDS))]
SubjectCursor = Annotated[
    tuple[datetime, UUID], BeforeValidator(cursor_of(instant_part, uuid_part))
]
JournalCursor = Annotated[tuple[int], BeforeValidator(cursor_of(position_part))]
ReconciliationCursor = Annotated[
    tuple[datetime, int, str, str, str],
    BeforeValidator(cursor_of(instant_part, position_part, text_part, text_part, text_part)),
]


class _Query(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class PaymentListQuery(_Query):
    provider: ProviderName | None = None
    status: Annotated[str, BeforeValidator(one_of(_values(PaymentStatus)))] | None = None
    coverage: Annotated[str, BeforeValidator(one_of(_values(Coverage)))] | None = None
    order_id: Text | None = None
    provider_ref: LongText | None = None
    customer_id: Text | None = None
    created_from: Instant | None = None
    created_to: Instant | None = None
    cursor: SubjectCursor | None = None
    limit: Limit = DEFAULT_LIMIT


class WithdrawalListQuery(_Query):
    provider: ProviderName | None = None
    status: Annotated[str, BeforeValidator(one_of(_values(WithdrawalStatus)))] | None = None
    request_id: Text | None = None
    provider_ref: LongText | None = None
    customer_id: Text | None = None
    created_from: Instant | None = None
    created_to: Instant | None = None
    cursor: SubjectCursor | None = None
    limit: Limit = DEFAULT_LIMIT


class BalancesQuery(_Query):
    account: LongText | None = None
    currency: Currency | None = None


class JournalQuery(_Query):
    account: LongText | None = None
    currency: Currency | None = None
    subject_id: Text | None = None
    provider: ProviderName | None = None
    cursor: JournalCursor | None = None
    limit: Limit = DEFAULT_LIMIT


class ReconciliationFilters(_Query):
    reason: Annotated[str, BeforeValidator(one_of(_values(Reason)))] | None = None
    state: Annotated[str, BeforeValidator(one_of(["open", "cleared", "all"]))] = "open"
    provider: ProviderName | None = None
    currency: Currency | None = None
    detected_from: Instant | None = Field(default=None, alias="from")
    detected_to: Instant | None = Field(default=None, alias="to")


class ReconciliationItemsQuery(ReconciliationFilters):
    cursor: ReconciliationCursor | None = None
    limit: Limit = DEFAULT_LIMIT


Query = TypeVar("Query", bound=_Query)


def read_query(request: web.Request, model: type[Query]) -> Query:
    """The request's query parameters as `model`, or ProblemError (see the module's doc)."""
    given: dict[str, str] = {}
    query: Mapping[str, str] = request.query
    for name in query:
        values = request.query.getall(name)
        if len(values) > 1:
            detail = f"query parameter {clipped(name)!r} is given {len(values)} times"
            raise refuse("parameter-repeated", detail, parameter=clipped(name))
        given[name] = values[0]
    try:
        return model.model_validate(given)
    except ValidationError as error:
        raise refusal_from(error, "parameter") from None
