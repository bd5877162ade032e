"""RFC 9457 problem details."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
from aiohttp import web

PROBLEM_BASE = "https://ledger.example/problems/"
RETRY_AFTER_SECONDS = 1

# The database could not be reached or dropped the connection mid-request (refused, closed pool,
# connection lost, admin shutdown, cannot connect now, too many connections): the request's
# transaction rolled back, nothing was recorded, and the same request may simply be sent again.
DATABASE_OUTAGES: tuple[type[Exception], ...] = (
    OSError,  # also TimeoutError and ConnectionRefusedError
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.OperatorInterventionError,
    asyncpg.InsufficientResourcesError,
)


def problem(status: int, title: str, detail: str, **extra: Any) -> web.Response:
    slug = title.lower().replace(" ", "-")
    if extra.get("code"):
        slug = str(extra["code"]).replace("_", "-")
    body = {
        "type": PROBLEM_BASE + slug,
        "title": title,
        "status": status,
        "detail": detail,
        **extra,
    }
    return web.Response(
        status=status, text=json.dumps(body, default=str), content_type="application/problem+json"
    )


def unavailable(detail: str) -> web.Response:
    """503 with Retry-After: not recorded, send it again (a provider redelivers its webhook)."""
    response = problem(503, "Service Unavailable", detail)
    response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


class ProblemError(Exception):
    """A request refused with a documented problem: raised anywhere below a handler, answered
    by the `problems` middleware as problem+json. `problem_type` is the slug after PROBLEM_BASE
    (one per broken rule, e.g. `amount-too-many-fraction-digits`)."""

    def __init__(
        self, status: int, problem_type: str, title: str, detail: str, **extra: Any
    ) -> None:
        super().__init__(f"{status} {problem_type}: {detail}")
        self.status = status
        self.problem_type = problem_type
        self.title = title
        self.detail = detail
        self.extra = extra

    def response(self) -> web.Response:
        return problem(self.status, self.title, self.detail, code=self.problem_type, **self.extra)
