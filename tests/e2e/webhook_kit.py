"""Every provider sandbox, a capturing receiver and the ledger, on loopback, for webhook tests.

The ledger's `public_url` (and each portal's callback URL) points at `Capture`, a receiver that
answers 200 and keeps every delivery exactly as the sandbox sent it (path, headers, raw bytes).
A test then replays those deliveries to the ledger in whatever order it likes: the bodies and
signatures are the sandboxes' own, byte for byte, and only the order and repetition are the
test's. `run_examples` runs a hypothesis test in a worker thread whose examples are coroutines on
the test's own event loop, so the servers keep running while hypothesis draws.
"""

from __future__ import annotations

import asyncio
import dataclasses
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from adapters.config import Settings
from adapters.http.app import init_app
from adapters.providers.contract import ProviderAdapter
from adapters.providers.registry import build_adapters
from adapters.sandbox import coincoin, coinpay, cryptofuse, lipaykripto, payment_engine
from adapters.storage.postgres_store import PostgresEventStore
from tests.e2e.harness import FAST_RETRIES, TOKEN, Ledger, free_port, serve

PROVIDERS = ("coinpay", "coincoin", "cryptofuse", "payment_engine", "lipaykripto")
COINCOIN_WEBHOOK_TOKEN = "cc-portal-token-" + "x" * 16

# What each provider is asked for in the tests: the price and its currency.
PRICES = {
    "coinpay": ("100.00", "USDT"),
    "coincoin": ("100", "USDT"),
    "cryptofuse": ("100.00", "USD"),  # not a testnet amount: no webhooks by themselves
    "payment_engine": ("100.00", "USD"),
    "lipaykripto": ("100.00", "TRY"),
}

SECRETS = {
    "coinpay": coinpay.SandboxConfig(
        username="cp-user", password="cp-pass", webhook_secret="cp-webhook-secret"
    ),
    "coincoin": coincoin.SandboxConfig(app_id="cc-app", secret_key="cc-secret"),
    "cryptofuse": cryptofuse.SandboxConfig(
        client_id="cf-client", client_secret="cf-secret", webhook_secret="cf-webhook-secret"
    ),
    "payment_engine": payment_engine.SandboxConfig(
        username="pe-user", password="pe-pass", webhook_secret="pe-webhook-secret"
    ),
    "lipaykripto": lipaykripto.SandboxConfig(
        client_id="lpk-client", client_secret="lpk-secret", hmac_secret="lpk-hmac"
    ),
}

_HOP_HEADERS = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "accept-encoding", "accept"}
)


def order_id(prefix: str = "ORD") -> str:
    """Unique, and fits every provider's rules (CoinCoin: 8-32 of [A-Za-z0-9_])."""
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


@dataclass(frozen=True)
class Captured:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Capture:
    """Answers 200 to every POST and keeps it, as a provider's sender would see a healthy peer."""

    received: list[Captured] = field(default_factory=list)

    def app(self) -> web.Application:
        async def keep(request: web.Request) -> web.Response:
            headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
            self.received.append(Captured(request.path, headers, await request.read()))
            return web.json_response({"received": True})

        app = web.Application()
        app.router.add_post("/{tail:.*}", keep)
        return app

    def take(self) -> list[Captured]:
        taken, self.received = self.received, []
        return taken

    def take_naming(self, *names: str) -> list[Captured]:
        """The deliveries whose body names one of `names`, in arrival order; the rest stay."""
        encoded = [name.encode() for name in names]
        taken: list[Captured] = []
        kept: list[Captured] = []
        for delivery in self.received:
            (taken if any(name in delivery.body for name in encoded) else kept).append(delivery)
        self.received = kept
        return taken


@dataclass
class Rig:
    ledger: Ledger
    sandbox_urls: dict[str, str]
    sandbox_apps: dict[str, web.Application]
    capture: Capture
    orders: dict[str, tuple[str, ...]] = field(default_factory=dict)  # provider_ref -> order id
    adapters: Mapping[str, ProviderAdapter] = field(default_factory=dict)  # the ledger's own

    async def sandbox(self, provider: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with (
            aiohttp.ClientSession() as http,
            http.post(self.sandbox_urls[provider] + path, json=body or {}) as reply,
        ):
            return reply.status, await reply.json(content_type=None)

    async def create_payment(self, provider: str, order: str | None = None) -> dict[str, Any]:
        amount, currency = PRICES[provider]
        status, body = await self.ledger.call(
            "POST",
            "/v1/payments",
            json={
                "provider": provider,
                "order_id": order or order_id(),
                "amount": amount,
                "currency": currency,
            },
        )
        assert 201 == status, body
        self.orders[body["provider_ref"]] = (body["order_id"],)
        return dict(body)

    async def scenario(self, provider: str, provider_ref: str, name: str) -> list[Captured]:
        """Runs a sandbox scenario; returns its deliveries as they reached the capture.

        Scenarios of different payments may run at the same time: a delivery is told apart by
        the payment's provider ref or order id, one of which every provider's body names."""
        status, body = await self.sandbox(
            provider, f"/_sandbox/payments/{provider_ref}/scenario", {"scenario": name}
        )
        assert 200 == status, body
        assert all(200 == d["status"] for d in body["deliveries"]), body
        return self.capture.take_naming(provider_ref, *self.orders.get(provider_ref, ()))

    async def deliver(self, delivery: Captured) -> tuple[int, Any]:
        """Replays one captured delivery to the ledger: same path, headers and bytes."""
        async with self.ledger.http.post(
            self.ledger.url + delivery.path, data=delivery.body, headers=delivery.headers
        ) as reply:
            return reply.status, await reply.json(content_type=None)

    async def view(self, payment_id: str) -> dict[str, Any]:
        status, body = await self.ledger.call("GET", f"/v1/payments/{payment_id}")
        assert 200 == status, body
        return dict(body)

    async def event_types(self, payment_id: str) -> list[str]:
        status, body = await self.ledger.call("GET", f"/v1/payments/{payment_id}/events")
        assert 200 == status, body
        return [e["type"] for e in body["items"]]


def provider_tables(sandbox_urls: dict[str, str]) -> dict[str, dict[str, Any]]:
    tables: dict[str, dict[str, Any]] = {}
    for provider, url in sandbox_urls.items():
        config = SECRETS[provider]
        table: dict[str, Any] = {"base_url": url}
        if isinstance(config, coinpay.SandboxConfig):
            table |= {
                "username": config.username,
                "password": config.password,
                "webhook_secret": config.webhook_secret,
            }
        elif isinstance(config, coincoin.SandboxConfig):
            table |= {
                "app_id": config.app_id,
                "secret_key": config.secret_key,
                "webhook_token": COINCOIN_WEBHOOK_TOKEN,
            }
        elif isinstance(config, cryptofuse.SandboxConfig):
            table |= {
                "client_id": config.client_id,
                "client_secret": config.client_secret,
                "webhook_secret": config.webhook_secret,
            }
        elif isinstance(config, payment_engine.SandboxConfig):
            table |= {
                "username": config.username,
                "password": config.password,
                "webhook_secret": config.webhook_secret,
            }
        else:
            table |= {
                "client_id": config.client_id,
                "client_secret": config.client_secret,
                "hmac_secret": config.hmac_secret,
            }
        tables[provider] = table
    return tables


def _sandbox_app(provider: str) -> web.Application:
    factories: dict[str, Callable[[Any], web.Application]] = {
        "coinpay": coinpay.create_sandbox_app,
        "coincoin": coincoin.create_sandbox_app,
        "cryptofuse": cryptofuse.create_sandbox_app,
        "payment_engine": payment_engine.create_sandbox_app,
        "lipaykripto": lipaykripto.create_sandbox_app,
    }
    # The portal URL is mutable state of a sandbox's config: each rig gets its own copy.
    return factories[provider](dataclasses.replace(SECRETS[provider]))


@asynccontextmanager
async def rig(
    store: PostgresEventStore, providers: tuple[str, ...] = PROVIDERS, *, background: bool = False
) -> AsyncIterator[Rig]:
    """The sandboxes of `providers`, the capture as every callback URL, and the ledger.

    Without `background` the app runs no projection runner, clock sweep or balance poll: the
    payment views these tests read are rebuilt from the payment's own stream, and the runner's
    work on every append would only slow them down."""
    capture = Capture()
    async with AsyncExitStack() as stack:
        capture_url = await stack.enter_async_context(serve(capture.app()))
        apps = {provider: _sandbox_app(provider) for provider in providers}
        urls = {p: await stack.enter_async_context(serve(app)) for p, app in apps.items()}
        settings = Settings(
            # Keys the app generates (the audit signing key) stay out of the user data folder.
            data_dir=Path(tempfile.mkdtemp(prefix="ledger-test-")),
            public_url=capture_url,
            api={"tokens": [{"name": "tests", "token": TOKEN, "scopes": ["admin"]}]},
            providers=provider_tables(urls),
            projections_worker="in_process" if background else "off",
            expiry_sweep_seconds=5.0 if background else 0,
            balance_poll_seconds=60.0 if background else 0,
            recovery_seconds=30.0 if background else 0,
            provider_query_seconds=5.0 if background else 0,
        )
        adapters = build_adapters(settings.providers)
        for adapter in adapters.values():
            http = getattr(adapter.client, "_http", None) or getattr(adapter.client, "http", None)
            if http is not None and hasattr(http, "policy"):
                http.policy = FAST_RETRIES
        ledger_url = await stack.enter_async_context(
            serve(init_app(settings, store=store, adapters=adapters), free_port())
        )
        client = await stack.enter_async_context(aiohttp.ClientSession())
        built = Rig(Ledger(ledger_url, client, store), urls, apps, capture, adapters=adapters)
        portal = {
            "coinpay": ("/_sandbox/webhook_url", "webhook_url", "/v1/webhooks/coinpay"),
            "coincoin": (
                "/_sandbox/webhook_url",
                "webhook_url",
                f"/v1/webhooks/coincoin/{COINCOIN_WEBHOOK_TOKEN}",
            ),
            "payment_engine": ("/_sandbox/portal", "webhook_url", "/v1/webhooks/payment_engine"),
        }
        for provider, (path, key, webhook_path) in portal.items():
            if provider in providers:
                status, body = await built.sandbox(
                    provider, path, {key: capture_url + webhook_path}
                )
                assert 200 == status, body
        yield built


def run_examples(
    loop: asyncio.AbstractEventLoop,
) -> Callable[[Coroutine[Any, Any, Any]], Any]:
    """Returns `call(coroutine)`: runs it on `loop` (the test's) from a hypothesis thread."""

    def call(coroutine: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result(timeout=60)

    return call


async def in_thread(test: Callable[[], None]) -> None:
    """Runs a (hypothesis-decorated) sync test off the loop, so the loop serves its examples."""
    await asyncio.to_thread(test)
