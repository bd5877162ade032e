"""Real servers on loopback: a provider sandbox and the ledger's HTTP app on a real database."""

from __future__ import annotations

import socket
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from adapters.config import Settings
from adapters.http.app import init_app
from adapters.http.keys import APPLIER, POLLER, QUERIES, RECOVERY, RUNNER, SWEEPER
from adapters.providers.http_client import RetryPolicy
from adapters.providers.registry import build_adapters
from adapters.storage.postgres_store import PostgresEventStore

TOKEN = "test-token"
# A short timeout too, so that a sandbox told to hold a request unanswered costs a test seconds.
FAST_RETRIES = RetryPolicy(
    attempts=3, base_delay_seconds=0.01, max_delay_seconds=0.05, timeout_seconds=3.0
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@asynccontextmanager
async def serve(app: web.Application, port: int = 0) -> AsyncIterator[str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    bound = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{bound}"
    finally:
        await runner.cleanup()


@dataclass
class Ledger:
    url: str
    http: aiohttp.ClientSession
    store: PostgresEventStore
    app: web.Application | None = None

    async def caught_up(self) -> None:
        """Applies every received delivery, then runs every projection, up to the log's head
        (the service does both in the background; a test that reads right after writing waits
        for them this way)."""
        assert self.app is not None
        await self.app[APPLIER].catch_up()
        await self.app[RUNNER].catch_up()

    async def applied(self) -> None:
        """Applies every delivery received so far (the applier's background work, done now)."""
        assert self.app is not None
        await self.app[APPLIER].catch_up()

    async def sweep(self) -> Any:
        """One pass of the ledger's clock: expiry and stuck withdrawals."""
        assert self.app is not None
        return await self.app[SWEEPER].sweep()

    async def recover(self) -> Any:
        """One pass of the recovery of creates whose answer was lost (no grace period)."""
        assert self.app is not None
        return await self.app[RECOVERY].recover(older_than=timedelta(0))

    async def ask_providers(self) -> Any:
        """One pass of the queries about deliveries the ledger could not authenticate."""
        assert self.app is not None
        return await self.app[QUERIES].run_pending()

    async def poll_balances(self, provider: str) -> int:
        assert self.app is not None
        return await self.app[POLLER].poll(provider)

    async def call(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {TOKEN}", **kwargs.pop("headers", {})}
        async with self.http.request(method, self.url + path, headers=headers, **kwargs) as reply:
            text = await reply.text()
            try:
                return reply.status, await reply.json(content_type=None)
            except ValueError:
                return reply.status, text


@asynccontextmanager
async def ledger_with(
    store: PostgresEventStore,
    providers: dict[str, dict[str, Any]],
    port: int | None = None,
    *,
    clock: Callable[[], datetime] | None = None,
) -> AsyncIterator[Ledger]:
    port = port or free_port()
    settings = Settings(
        # Keys the app generates (the audit signing key) stay out of the user data folder.
        data_dir=Path(tempfile.mkdtemp(prefix="ledger-test-")),
        public_url=f"http://127.0.0.1:{port}",
        api={"tokens": [{"name": "tests", "token": TOKEN, "scopes": ["admin"]}]},
        providers=providers,
        # Tests move the clock and poll balances themselves; projections run as in service.
        expiry_sweep_seconds=0,
        balance_poll_seconds=0,
        recovery_seconds=0,
        provider_query_seconds=0,
    )
    adapters = build_adapters(settings.providers)
    for adapter in adapters.values():
        http = getattr(adapter.client, "_http", None) or getattr(adapter.client, "http", None)
        if http is not None and hasattr(http, "policy"):
            http.policy = FAST_RETRIES
    app = init_app(settings, clock=clock, store=store, adapters=adapters)
    async with serve(app, port) as url, aiohttp.ClientSession() as http:
        yield Ledger(url, http, store, app)
