"""The finance console: server-rendered, read-only HTML pages under /console/ (docs/console.md).

It is a sub-application of the ledger's app, so its pages get their own guard (sign-in, the
methods they take, security headers) while the app's middlewares (request ids, access log,
metrics) still wrap them; it reads the app's runner and store through `request.config_dict`.
Templates are Jinja2 with autoescape on: every value a provider or caller sent is text.
"""

from __future__ import annotations

from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web

from adapters.http.console import reconciliation, session, views
from adapters.http.console.guard import guard

PACKAGE = Path(__file__).parent


def console_app() -> web.Application:
    """The console's pages, to be mounted at /console/ (routes.py)."""
    app = web.Application(middlewares=[guard])
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(PACKAGE / "templates"),
        # On for every template whatever its name: a payload is hostile input.
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    router = app.router
    router.add_get("/", reconciliation.items_page)
    router.add_get("/items.csv", reconciliation.items_csv)
    router.add_get("/payments/{subject_id}", views.payment_timeline)
    router.add_get("/withdrawals/{subject_id}", views.withdrawal_timeline)
    router.add_get("/balances", views.balances_page)
    router.add_get("/audit", views.audit_page)
    router.add_get("/sign-in", session.sign_in_page)
    router.add_post("/sign-in", session.sign_in)
    router.add_post("/sign-out", session.sign_out)
    router.add_static("/static/", PACKAGE / "static")
    router.add_get("/{tail:.*}", views.not_found)  # an HTML 404 with the console's headers
    return app


async def to_console(_request: web.Request) -> web.StreamResponse:
    """/console without its slash: the console's first page."""
    return web.Response(status=308, headers={"Location": "/console/"})


__all__ = ["console_app", "to_console"]
