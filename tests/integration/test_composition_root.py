"""`init_app` is the one composition root: given only settings, the app opens its database (and
builds its providers) when it starts and closes them when it stops; every route it serves is
listed in adapters/http/routes.py and documented in the OpenAPI operations."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from adapters.config import Settings
from adapters.http.app import init_app
from adapters.http.keys import ADAPTERS, PAYMENTS, RUNNER, STORE
from adapters.http.openapi.operations import OPERATIONS
from tests.e2e.harness import serve

TOKEN = "composition-root-token"


def schema_url(database_url: str, schema: str) -> str:
    return f"{database_url}{'&' if '?' in database_url else '?'}search_path={schema}"


def root_settings(database_url: str, schema: str, data_dir: Path) -> Settings:
    return Settings(
        database_url=schema_url(database_url, schema),
        data_dir=data_dir,
        api={"tokens": [{"name": "tests", "token": TOKEN, "scopes": ["admin"]}]},
        expiry_sweep_seconds=0,
        balance_poll_seconds=0,
        recovery_seconds=0,
        provider_query_seconds=0,
    )


async def test_the_app_opens_its_database_at_start_and_closes_it_at_cleanup(
    database_url, schema, tmp_path
):
    app = init_app(root_settings(database_url, schema, tmp_path))
    assert STORE not in app  # nothing is opened before the app starts
    async with serve(app) as url, aiohttp.ClientSession() as http:
        pool = app[STORE].pool
        assert app[RUNNER].pool is pool
        assert app[PAYMENTS] is not None
        assert dict(app[ADAPTERS]) == {}
        async with http.get(f"{url}/readyz") as reply:
            assert 200 == reply.status, await reply.text()
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with http.get(f"{url}/v1/payments", headers=headers) as reply:
            assert (200, []) == (reply.status, (await reply.json())["items"])
    assert pool.is_closing()


def test_every_route_is_documented_and_every_operation_routed(tmp_path):
    app = init_app(Settings(data_dir=tmp_path))  # routes are listed without a database
    # The API's description and the console's HTML pages are not operations of the API.
    description = ("/v1/openapi.json", "/v1/docs", "/console")
    routed = {
        (route.method.lower(), route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None
        and route.method != "HEAD"
        and not route.resource.canonical.startswith(description)
    }
    documented = {(operation.method, operation.path) for operation in OPERATIONS}
    assert routed == documented
