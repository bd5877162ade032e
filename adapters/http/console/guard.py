"""What every console response passes through: the sign-in check, read-only methods, an HTML
error page for any refusal, and the security headers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import aiohttp_jinja2
from aiohttp import web

from adapters.http.console import session
from adapters.http.problems import ProblemError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

VIEWER = web.RequestKey("console_viewer", str)

# No script at all; styles and images from the console itself; forms post only to it; never
# framed (clickjacking), no <base> rewriting.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self';"
        " frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
# The only paths a browser may POST to; every other console page is read with GET.
_FORMS = frozenset({session.SIGN_IN, "/console/sign-out"})
_OPEN = frozenset({session.SIGN_IN})  # reachable without signing in (with the stylesheet)
_READ = frozenset({"GET", "HEAD"})


def _error_page(request: web.Request, status: int, message: str) -> web.Response:
    context = {"status": status, "message": message, "viewer": request.get(VIEWER), "title": ""}
    context["title"] = f"{status}"
    return aiohttp_jinja2.render_template("error.html", request, context, status=status)


async def _answer(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.method not in _READ and request.path not in _FORMS:
        response = _error_page(request, 405, "The console only reads; this page takes GET.")
        response.headers["Allow"] = "GET, HEAD"
        return response
    if request.path not in _OPEN and not request.path.startswith("/console/static/"):
        name = session.viewer(request)
        if name is None:
            return web.Response(status=303, headers={"Location": session.SIGN_IN})
        request[VIEWER] = name
    try:
        return await handler(request)
    except ProblemError as refused:
        return _error_page(request, refused.status, refused.detail)
    except web.HTTPException as refused:
        if refused.status < 400:
            raise
        return _error_page(request, refused.status, refused.text or refused.reason)


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await _answer(request, handler)
    response.headers.update(SECURITY_HEADERS)
    return response
