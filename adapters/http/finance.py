"""Finance's acts on the ledger: settling a payment (closing it, moving what it received to the
merchant's payable, and acknowledging what reconciliation flagged about it)."""

from __future__ import annotations

import uuid

from aiohttp import web

from adapters.http.auth import authorize
from adapters.http.problems import problem
from adapters.services.payments import PaymentService
from adapters.storage.repository import AggregateRepository
from ledger.errors import ConcurrencyConflict, LedgerError
from projections.views import payment_view

PAYMENT_SERVICE = web.AppKey("finance_payments", PaymentService)
SETTLE_ATTEMPTS = 5


async def settle_payment(request: web.Request) -> web.Response:
    authorize(request, "finance:write")
    try:
        payment_id = str(uuid.UUID(request.match_info["payment_id"]))
    except ValueError:
        return problem(404, "Not Found", "no such payment")
    service = request.app[PAYMENT_SERVICE]
    for _ in range(SETTLE_ATTEMPTS):
        payment = await service.load_payment(payment_id)
        if payment is None:
            return problem(404, "Not Found", "no such payment")
        try:
            payment.settle()
            await AggregateRepository(service.store).save(payment)
        except ConcurrencyConflict:
            continue  # a delivery landed meanwhile: settle what the payment is now
        except LedgerError as broken:
            return problem(422, "Unprocessable Entity", str(broken), code=broken.code)
        return web.json_response(payment_view(payment))
    return problem(409, "Conflict", "the payment kept changing; try again")


def add_finance_routes(app: web.Application, payments: PaymentService) -> None:
    app[PAYMENT_SERVICE] = payments
    app.router.add_post("/v1/payments/{payment_id}/settle", settle_payment)
