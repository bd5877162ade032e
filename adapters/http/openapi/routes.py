"""`GET /v1/openapi.json` and the browsable page at `/v1/docs/`, both without a token (the
document describes the API, it opens nothing).

The page is Swagger UI from the `swagger-ui-py` wheel's static files, served by aiohttp: no CDN,
so it works where the service has no way out to the internet.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from aiohttp import web

from adapters.http.keys import OPENAPI_DOCUMENT
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


def swagger_ui_static() -> Path:
    # Located, not imported: the package's own module pulls in a template engine we never use.
    spec = importlib.util.find_spec("swagger_ui")
    assert spec is not None, "swagger-ui-py is a dependency of the service"
    assert spec.submodule_search_locations is not None
    return Path(next(iter(spec.submodule_search_locations))) / "static"


async def serve_document(request: web.Request) -> web.Response:
    # Built once by init_app: the routes and models do not change at run time.
    return web.json_response(request.app[OPENAPI_DOCUMENT])


async def serve_page(_: web.Request) -> web.Response:
    return web.Response(text=_PAGE, content_type="text/html")


async def to_page(_: web.Request) -> web.Response:
    raise web.HTTPFound("/v1/docs/")


__all__ = ["openapi_document", "serve_document", "serve_page", "swagger_ui_static", "to_page"]
