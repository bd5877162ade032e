"""Bearer tokens and scopes from the config file."""

from __future__ import annotations

from aiohttp import web

from adapters.http.keys import SETTINGS


def authorize(request: web.Request, scope: str) -> str:
    """Returns the caller's token name, or raises 401/403 as problem+json."""
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer "):
        raise web.HTTPUnauthorized(reason="Unauthorized", text="a bearer token is required")
    presented = header.removeprefix("Bearer ").strip()
    for token in request.app[SETTINGS].api.tokens:
        if token.matches(presented):
            if scope in token.scopes or "admin" in token.scopes:
                return token.name
            raise web.HTTPForbidden(reason="Forbidden", text=f"the token lacks scope {scope}")
    raise web.HTTPUnauthorized(reason="Unauthorized", text="the bearer token is not valid")
