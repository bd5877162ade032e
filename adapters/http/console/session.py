"""Signing in to the console with an API token, and out again.

The token itself is the session: it is kept in an HttpOnly, SameSite=Strict cookie (Secure over
https) scoped to /console/, and checked against the configured tokens on every request, so a
token removed from the configuration ends its sessions at once. It must hold `finance:read`
(or `admin`, which holds every scope, as for the API).

The two forms that POST (sign-in, sign-out) are guarded against cross-site requests twice: the
browser does not send a SameSite=Strict cookie with another site's request, and a request whose
Origin or Sec-Fetch-Site header says it came from another site is refused (`same_origin`).
"""

from __future__ import annotations

import base64
import binascii

import aiohttp_jinja2
from aiohttp import web

from adapters.http.keys import SETTINGS

COOKIE = "ledger_console"
COOKIE_PATH = "/console/"
SCOPE = "finance:read"
HOME = "/console/"
SIGN_IN = "/console/sign-in"
_TOKEN_LENGTH_MAX = 1024


def _token_holder(request: web.Request, presented: str) -> tuple[str, bool] | None:
    """(name, holds finance:read) of the configured token `presented` is; None if none."""
    for token in request.config_dict[SETTINGS].api.tokens:
        if token.matches(presented):
            return token.name, SCOPE in token.scopes or "admin" in token.scopes
    return None


def viewer(request: web.Request) -> str | None:
    """The name of the signed-in token with `finance:read`, or None (not signed in)."""
    kept = request.cookies.get(COOKIE, "")
    if not kept or len(kept) > 2 * _TOKEN_LENGTH_MAX:
        return None
    try:
        presented = base64.urlsafe_b64decode(kept.encode("ascii")).decode("utf-8")
    except (ValueError, binascii.Error, UnicodeError):
        return None
    holder = _token_holder(request, presented)
    return holder[0] if holder is not None and holder[1] else None


def same_origin(request: web.Request) -> bool:
    """False for a form posted from another site; True for one posted from the console itself,
    or by a client that is not a browser (it sends neither header below).

    Browsers say where a request comes from in Sec-Fetch-Site and Origin. Under the console's
    Referrer-Policy no-referrer, Chromium sends its own form's Origin as "null", so "null" is
    taken only beside Sec-Fetch-Site: same-origin (a sandboxed frame elsewhere sends "null"
    with cross-site)."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site not in {"same-origin", "none"}:
        return False
    origin = request.headers.get("Origin")
    if origin is None or origin == f"{request.scheme}://{request.host}":
        return True
    return origin == "null" and site == "same-origin"


def _form(request: web.Request, message: str, status: int) -> web.Response:
    context = {"message": message, "viewer": None, "title": "Sign in"}
    return aiohttp_jinja2.render_template("sign_in.html", request, context, status=status)


async def sign_in_page(request: web.Request) -> web.Response:
    return _form(request, "", 200)


async def sign_in(request: web.Request) -> web.Response:
    if not same_origin(request):
        return _form(request, "This form was sent from another site; sign in here.", 403)
    form = await request.post()
    presented = form.get("token")
    if not isinstance(presented, str) or not presented or len(presented) > _TOKEN_LENGTH_MAX:
        return _form(request, "Enter an API token.", 400)
    holder = _token_holder(request, presented)
    if holder is None:
        return _form(request, "That token is not valid.", 401)
    if not holder[1]:
        return _form(request, f"That token lacks the scope {SCOPE}.", 403)
    response = web.Response(status=303, headers={"Location": HOME})
    response.set_cookie(
        COOKIE,
        base64.urlsafe_b64encode(presented.encode("utf-8")).decode("ascii"),
        path=COOKIE_PATH,
        httponly=True,
        samesite="Strict",
        secure=request.secure,
    )
    return response


async def sign_out(request: web.Request) -> web.Response:
    if not same_origin(request):
        return _form(request, "This form was sent from another site.", 403)
    response = web.Response(status=303, headers={"Location": SIGN_IN})
    response.del_cookie(COOKIE, path=COOKIE_PATH, secure=request.secure, httponly=True)
    return response
