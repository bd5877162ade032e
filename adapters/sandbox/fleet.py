"""The five provider sandboxes on loopback, with the ledger's provider tables that match them.

`sandbox_fleet()` starts the sandboxes (each a real aiohttp server on its own port), gives every
one credentials (the caller's, or new random ones), and hands back their URLs and the
`[providers.<id>]` tables a ledger needs to talk to them. `SandboxFleet.send_webhooks_to()` then
points the providers whose callback URL is set once in a portal (CoinPay, CoinCoin, Payment
Engine) at the ledger; Cryptofuse and LiPayKripto take a callback URL with each request, which
the ledger supplies itself. `ledger sandbox`, `ledger demo`, the benchmarks and tests share this.
"""

from __future__ import annotations

import contextlib
import importlib
import secrets
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from adapters.config import PROVIDER_IDS, Settings

LOOPBACK = "127.0.0.1"

# Table keys that name an account rather than hold a secret: readable values are enough.
_IDENTITY_KEYS = frozenset({"username", "app_id", "client_id"})


class SandboxControlFailed(RuntimeError):
    """A sandbox refused one of its `/_sandbox/` controls."""


@dataclass(frozen=True, slots=True)
class _SandboxKind:
    """How to run one provider's sandbox from the ledger's table for it: read off the sandbox
    module itself (its SandboxConfig, create_sandbox_app, LEDGER_TABLE_KEYS and HAS_PORTAL)."""

    module: ModuleType
    fresh_options: Callable[[], dict[str, Any]] = dict  # further SandboxConfig values per start

    @property
    def credential_keys(self) -> tuple[str, ...]:
        """The keys of the ledger's table besides base_url."""
        return tuple(self.module.LEDGER_TABLE_KEYS)

    @property
    def has_portal(self) -> bool:
        """Whether the callback URL is set once, in the provider's portal (the sandbox's
        `/_sandbox/webhook_url`), rather than sent by the ledger with every request."""
        return bool(self.module.HAS_PORTAL)

    def create(self, table: Mapping[str, str]) -> web.Application:
        # The table keys the sandbox itself knows (CoinCoin's webhook_token is the ledger's
        # alone: it travels in the callback URL).
        known = {f.name for f in fields(self.module.SandboxConfig)}
        options = {key: table[key] for key in self.credential_keys if key in known}
        config = self.module.SandboxConfig(**options | self.fresh_options())
        app: web.Application = self.module.create_sandbox_app(config)
        return app


def _fresh_counters() -> dict[str, Any]:
    # LiPayKripto's ids are counters (from 505 and 123, the document's examples), and the ledger
    # claims each provider id once: a restarted sandbox in front of a ledger database that
    # outlived it would hand out ids that earlier payments hold: each start counts from a random
    # point instead.
    return {
        "first_payment_request_id": _fresh_counter_start(),
        "first_withdraw_id": _fresh_counter_start(),
    }


def _empty_account() -> dict[str, Any]:
    # Cryptofuse's sandbox opens with a float (10,000 USDTTRC20) by default. A fleet stands for
    # accounts opened for this ledger: they hold only what passed through it, so the balances the
    # ledger polls compare with what it booked, not with money it could never have known about.
    return {"initial_balances": {}}


def _fresh_counter_start() -> int:
    return 1_000_000 + secrets.randbelow(1_000_000_000)


_PORTAL_CONTROL = "/_sandbox/webhook_url"
# What a fleet does differently from a sandbox's defaults, per provider.
_FRESH_OPTIONS: dict[str, Callable[[], dict[str, Any]]] = {
    "cryptofuse": _empty_account,
    "lipaykripto": _fresh_counters,
}
_KINDS: dict[str, _SandboxKind] = {
    provider: _SandboxKind(
        importlib.import_module(f"adapters.sandbox.{provider}"),
        _FRESH_OPTIONS.get(provider, dict),
    )
    for provider in PROVIDER_IDS
}


@dataclass(frozen=True, slots=True)
class RunningSandbox:
    provider: str
    url: str
    table: dict[str, str]  # the ledger's [providers.<id>] table for this sandbox

    @property
    def takes_callback_per_request(self) -> bool:
        return not _KINDS[self.provider].has_portal


@dataclass(frozen=True, slots=True)
class SandboxFleet:
    sandboxes: dict[str, RunningSandbox]

    def urls(self) -> dict[str, str]:
        return {provider: sandbox.url for provider, sandbox in self.sandboxes.items()}

    def provider_tables(self) -> dict[str, dict[str, str]]:
        """The `providers` part of the ledger's Settings for these sandboxes."""
        return {provider: dict(sandbox.table) for provider, sandbox in self.sandboxes.items()}

    async def send_webhooks_to(self, settings: Settings) -> dict[str, str | None]:
        """Sets the portal callback URL of each provider that has one to the ledger's webhook URL
        (from `settings.public_url`). Returns provider -> URL set (None: given per request)."""
        targets: dict[str, str | None] = {}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            for provider, sandbox in self.sandboxes.items():
                targets[provider] = None
                if sandbox.takes_callback_per_request:
                    continue
                url = settings.webhook_url(provider, sandbox.table.get("webhook_token"))
                control = sandbox.url + _PORTAL_CONTROL
                async with http.post(control, json={"webhook_url": url}) as reply:
                    if reply.status != 200:
                        detail = await reply.text()
                        raise SandboxControlFailed(f"{provider} {control}: {reply.status} {detail}")
                targets[provider] = url
        return targets


def sandbox_table(
    provider: str, base_url: str, given: Mapping[str, Any] | None = None
) -> dict[str, str]:
    """The ledger table for a sandbox at `base_url`: the credentials in `given` where it has
    them (so a sandbox can serve what a ledger's configuration already says), new ones else."""
    given = given or {}
    table = {"base_url": base_url}
    for key in _KINDS[provider].credential_keys:
        value = given.get(key)
        if value:
            table[key] = str(value)
        elif key in _IDENTITY_KEYS:
            table[key] = f"ledger-{provider}"
        else:
            table[key] = secrets.token_urlsafe(24)
    return table


def configured_port(table: Mapping[str, Any] | None) -> int:
    """The port of a table's base_url, or 0 (any free port) when it names none."""
    base_url = (table or {}).get("base_url")
    if not isinstance(base_url, str):
        return 0
    try:
        return urlsplit(base_url).port or 0
    except ValueError:
        return 0


@contextlib.asynccontextmanager
async def sandbox_fleet(
    providers: Iterable[str] = PROVIDER_IDS,
    *,
    host: str = LOOPBACK,
    ports: Mapping[str, int] | None = None,
    credentials: Mapping[str, Mapping[str, Any]] | None = None,
) -> AsyncIterator[SandboxFleet]:
    """Runs the named sandboxes for the block. `ports` maps a provider to its port (0 or absent:
    a free one); `credentials` maps a provider to a ledger table whose credentials to reuse."""
    wanted = list(dict.fromkeys(providers))
    unknown = set(wanted) - set(PROVIDER_IDS)
    if unknown:
        raise ValueError(f"unknown providers {sorted(unknown)}; known: {PROVIDER_IDS}")
    ports = ports or {}
    credentials = credentials or {}
    running: dict[str, RunningSandbox] = {}
    async with contextlib.AsyncExitStack() as stack:
        for provider in wanted:
            # The URL is known only once the port is bound, and the table's credentials must
            # exist before the app does: build the table with a placeholder, then fix its URL.
            table = sandbox_table(provider, "", credentials.get(provider))
            url = await stack.enter_async_context(
                _serve(_KINDS[provider].create(table), host, ports.get(provider, 0))
            )
            table["base_url"] = url
            running[provider] = RunningSandbox(provider, url, table)
        yield SandboxFleet(running)


@contextlib.asynccontextmanager
async def _serve(app: web.Application, host: str, port: int) -> AsyncIterator[str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_host, bound_port = runner.addresses[0][:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        yield f"http://{shown}:{bound_port}"
    finally:
        await runner.cleanup()
