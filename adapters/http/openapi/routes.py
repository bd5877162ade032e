"""`GET /v1/openapi.json` and the browsable page at `/v1/docs/`, both without a token (the
document describes the API, it opens nothing).

The page is Swagger UI from the `swagger-ui-py` wheel's static files, served by aiohttp: no CDN,
so it works where the service has no way out to the internet.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from aiohttp import web

from adapters.http.openapi.document import openapi_document

_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Payment ledger API</title>
  <link rel="stylesheet" href="static/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="static/swagger-ui-bundle.js"></script>
  <script>
    window.ui = SwaggerUIBundle({url: "../openapi.json", dom_id: "#swagger-ui"});
  </script>
</body>
</html>
"""


def _swagger_ui_static() -> Path:
    # Located, not imported: the package's own module pulls in a template engine we never use.
    spec = importlib.util.find_spec("swagger_ui")
    assert spec is not None, "swagger-ui-py is a dependency of the service"
    assert spec.submodule_search_locations is not None
    return Path(next(iter(spec.submodule_search_locations))) / "static"


def add_openapi(app: web.Application) -> None:
    document = openapi_document()  # built once: the routes and models do not change at run time

    async def serve_document(_: web.Request) -> web.Response:
        return web.json_response(document)

    async def serve_page(_: web.Request) -> web.Response:
        return web.Response(text=_PAGE, content_type="text/html")

    async def to_page(_: web.Request) -> web.Response:
        raise web.HTTPFound("/v1/docs/")

    app.router.add_get("/v1/openapi.json", serve_document)
    app.router.add_get("/v1/docs", to_page)
    app.router.add_get("/v1/docs/", serve_page)
    app.router.add_static("/v1/docs/static/", _swagger_ui_static())
