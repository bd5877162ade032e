"""What every console page shares: rendering a template with the viewer's name, and waiting
until what the page reads is as fresh as the log was when the page was asked for."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from adapters.http import freshness
from adapters.http.console.guard import VIEWER
from adapters.http.problems import RETRY_AFTER_SECONDS


def page(request: web.Request, template: str, title: str, **context: Any) -> web.Response:
    context |= {"title": title, "viewer": request.get(VIEWER)}
    return aiohttp_jinja2.render_template(template, request, context)


async def not_fresh(request: web.Request, names: Sequence[str]) -> web.Response | None:
    """None once the deliveries received before this request are applied and the read models
    `names` reached the log's head at arrival, as the API's reads wait (freshness.py); else
    the page saying the ledger is behind."""
    if await freshness.refusal(request, names) is not None:
        return behind(request)
    return None


def behind(request: web.Request) -> web.Response:
    context = {"status": 503, "message": "The ledger is catching up; reload in a moment."}
    context |= {"title": "503", "viewer": request.get(VIEWER)}
    response = aiohttp_jinja2.render_template("error.html", request, context, status=503)
    response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response
