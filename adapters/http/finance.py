"""Finance's acts on the ledger: settling a payment (closing it, moving what it received to the
merchant's payable, and acknowledging what reconciliation flagged about it)."""

from __future__ import annotations

import uuid

from aiohttp import web

from adapters.http.auth import authorize
from adapters.http.keys import PAYMENTS
from adapters.http.problems import problem
from ledger.errors import ConcurrencyConflict, LedgerError
from projections.views import payment_view


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
