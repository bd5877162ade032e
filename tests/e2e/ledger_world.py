"""One ledger and four provider sandboxes on loopback, for end-to-end tests that span providers.

The ledger runs on a real PostgreSQL with Cryptofuse, Payment Engine, CoinCoin and LiPayKripto
sandboxes, all reading one test clock (real time plus an offset the test moves), so that expiry by
the ledger's clock, late funds and quiet withdrawals can be staged. `World` drives the sandboxes'
`/_sandbox/` controls and the ledger's API, and reads reconciliation items, balances and the
journal after catching the projections up. Used by test_reconciliation_e2e.py and
test_queries_e2e.py.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from adapters.providers.coincoin.protocol import signed_headers as coincoin_signed_headers
from adapters.providers.cryptofuse.webhooks import sign as cryptofuse_sign
from adapters.providers.http_client import dumps_exact
from adapters.providers.payment_engine.webhooks import sign as payment_engine_sign
from adapters.sandbox import coincoin as coincoin_sandbox
from adapters.sandbox import cryptofuse as cryptofuse_sandbox
from adapters.sandbox import lipaykripto as lipaykripto_sandbox
from adapters.sandbox import payment_engine as payment_engine_sandbox
from tests.e2e.harness import Ledger, free_port, ledger_with, serve

CRYPTOFUSE = cryptofuse_sandbox.SandboxConfig(
    client_id="rec-cf-client",
    client_secret="rec-cf-secret",
    webhook_secret="rec-cf-webhook-secret",
    # The sandbox then holds exactly what its payments brought in, as the ledger does.
    initial_balances={},
)
PAYMENT_ENGINE = payment_engine_sandbox.SandboxConfig(
    username="rec-pe-user", password="rec-pe-password", webhook_secret="rec-pe-webhook-secret"
)
COINCOIN = coincoin_sandbox.SandboxConfig(app_id="rec-cc-app", secret_key="rec-cc-secret")
COINCOIN_TOKEN = "rec-cc-portal-token-7d41c0a9"
LIPAYKRIPTO = lipaykripto_sandbox.SandboxConfig(
    client_id="rec-lpk-client", client_secret="rec-lpk-secret", hmac_secret="rec-lpk-hmac"
)


class Clock:
    """Real time plus an offset: the ledger and the sandboxes read it."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, **delta: float) -> None:
        self.offset += timedelta(**delta)


def _datetime_following(clock: Clock) -> type[datetime]:
    class FollowingDatetime(datetime):
        @classmethod
        def now(cls, tz=None):
            return clock().astimezone(tz)

    return FollowingDatetime


@dataclass
class World:
    ledger: Ledger
    sandboxes: dict[str, str]
    clock: Clock
    started: datetime = field(default_factory=lambda: datetime.now(UTC))

    # ---------------------------------------------------------------- sandbox controls

    async def control(self, provider: str, path: str, body: Any = None) -> tuple[int, Any]:
        url = f"{self.sandboxes[provider]}/_sandbox/{path}"
        async with self.ledger.http.post(url, json=body or {}) as reply:
            return reply.status, await reply.json(content_type=None)

    async def scenario(self, provider: str, ref: str, name: str) -> list[dict]:
        """Runs a payment scenario; every delivery must have reached the ledger with a 200."""
        status, sent = await self.control(provider, f"payments/{ref}/scenario", {"scenario": name})
        assert 200 == status, sent
        assert all(200 == d["status"] for d in sent["deliveries"]), sent
        return sent["deliveries"]

    async def withdrawal_scenario(self, provider: str, ref: str, name: str) -> list[dict]:
        path = f"withdrawals/{ref}/scenario"
        status, sent = await self.control(provider, path, {"scenario": name})
        assert 200 == status, sent
        assert all(200 == d["status"] for d in sent["deliveries"]), sent
        return sent["deliveries"]

    # ---------------------------------------------------------------- the ledger's API

    async def get(self, path: str, **params: str) -> Any:
        status, body = await self.ledger.call("GET", path, params=params)
        assert 200 == status, body
        return body

    async def pay(self, provider: str, order_id: str, amount: str, currency: str, **extra):
        body = {
            "provider": provider,
            "order_id": order_id,
            "amount": amount,
            "currency": currency,
            **extra,
        }
        status, view = await self.ledger.call("POST", "/v1/payments", json=body)
        assert 201 == status, view
        return view

    async def payment(self, payment_id: str) -> dict:
        return await self.get(f"/v1/payments/{payment_id}")

    async def withdraw(self, provider: str, request_id: str, amount: str, currency: str, **extra):
        body = {
            "provider": provider,
            "request_id": request_id,
            "amount": amount,
            "currency": currency,
            "address": "TRecWithdrawalAddress0123456789",
            **extra,
        }
        status, view = await self.ledger.call("POST", "/v1/withdrawals", json=body)
        assert 201 == status, view
        return view

    async def withdrawal(self, withdrawal_id: str) -> dict:
        return await self.get(f"/v1/withdrawals/{withdrawal_id}")

    async def settle(self, payment_id: str) -> dict:
        status, view = await self.ledger.call("POST", f"/v1/payments/{payment_id}/settle")
        assert 200 == status, view
        return view

    async def webhook(
        self, provider: str, body: bytes, headers: dict[str, str] | None = None, token: str = ""
    ) -> tuple[int, Any]:
        path = f"/v1/webhooks/{provider}" + (f"/{token}" if token else "")
        return await self.ledger.call(
            "POST",
            path,
            data=body,
            headers={"Content-Type": "application/json", **(headers or {})},
        )

    # ---------------------------------------------------------------- reconciliation

    async def items(self, state: str = "open", **filters: str) -> list[dict]:
        """Every item matching, all pages followed."""
        await self.ledger.caught_up()
        found: list[dict] = []
        params = {"state": state, "limit": "100", **filters}
        while True:
            page = await self.get("/v1/reconciliation/items", **params)
            found += page["items"]
            if page["next_cursor"] is None:
                return found
            params["cursor"] = page["next_cursor"]

    async def reasons(self, subject_id: str, state: str = "open") -> dict[str, dict]:
        """A subject's items by reason (one per reason in a state)."""
        mine = [i for i in await self.items(state) if i["subject_id"] == subject_id]
        by_reason = {i["reason"]: i for i in mine}
        assert len(by_reason) == len(mine), mine
        return by_reason

    async def summary(self, **filters: str) -> dict[str, tuple[int, str]]:
        await self.ledger.caught_up()
        body = await self.get("/v1/reconciliation/summary", **filters)
        assert body["open_items"] == sum(r["items"] for r in body["items"])
        return {
            f"{r['reason']}:{r['currency']}": (r["items"], r["difference"]) for r in body["items"]
        }

    async def sweep(self) -> Any:
        await self.ledger.caught_up()  # the sweep reads the read models' candidates
        result = await self.ledger.sweep()
        await self.ledger.caught_up()
        return result


@asynccontextmanager
async def open_world(store, monkeypatch) -> AsyncIterator[World]:
    """The ledger and the four sandboxes, for one test (pass pytest's `store` and
    `monkeypatch`)."""
    clock = Clock()
    # The sandboxes stamp deposits, expiries and webhooks with their own `now`: it follows too.
    monkeypatch.setattr(cryptofuse_sandbox, "_now", lambda: clock().replace(microsecond=0))
    monkeypatch.setattr(payment_engine_sandbox, "datetime", _datetime_following(clock))
    async with AsyncExitStack() as stack:
        apps = {
            "cryptofuse": cryptofuse_sandbox.create_sandbox_app(CRYPTOFUSE),
            "payment_engine": payment_engine_sandbox.create_sandbox_app(PAYMENT_ENGINE),
            "coincoin": coincoin_sandbox.create_sandbox_app(COINCOIN),
            "lipaykripto": lipaykripto_sandbox.create_sandbox_app(LIPAYKRIPTO),
        }
        urls = {name: await stack.enter_async_context(serve(app)) for name, app in apps.items()}
        tables = {
            "cryptofuse": {
                "base_url": urls["cryptofuse"],
                "client_id": CRYPTOFUSE.client_id,
                "client_secret": CRYPTOFUSE.client_secret,
                "webhook_secret": CRYPTOFUSE.webhook_secret,
            },
            "payment_engine": {
                "base_url": urls["payment_engine"],
                "username": PAYMENT_ENGINE.username,
                "password": PAYMENT_ENGINE.password,
                "webhook_secret": PAYMENT_ENGINE.webhook_secret,
            },
            "coincoin": {
                "base_url": f"{urls['coincoin']}/v1",
                "app_id": COINCOIN.app_id,
                "secret_key": COINCOIN.secret_key,
                "webhook_token": COINCOIN_TOKEN,
            },
            "lipaykripto": {
                "base_url": urls["lipaykripto"],
                "client_id": LIPAYKRIPTO.client_id,
                "client_secret": LIPAYKRIPTO.client_secret,
                "hmac_secret": LIPAYKRIPTO.hmac_secret,
            },
        }
        ledger = await stack.enter_async_context(
            ledger_with(store, tables, free_port(), clock=clock)
        )
        world = World(ledger, urls, clock)
        # The two providers whose callback URL is set once, in their portal.
        pe_url = f"{ledger.url}/v1/webhooks/payment_engine"
        assert 200 == (await world.control("payment_engine", "portal", {"webhook_url": pe_url}))[0]
        cc_url = f"{ledger.url}/v1/webhooks/coincoin/{COINCOIN_TOKEN}"
        assert 200 == (await world.control("coincoin", "webhook_url", {"webhook_url": cc_url}))[0]
        yield world


# ---------------------------------------------------------------- helpers


def instant(text: str) -> datetime:
    assert text.endswith("Z"), text
    return datetime.fromisoformat(text.removesuffix("Z") + "+00:00")


def amounts(item: dict) -> tuple[str | None, str | None, str | None, str]:
    return item["expected"], item["received"], item["provider_reported"], item["difference"]


def open_item(world: World, item: dict) -> None:
    """An open item's times: detected while the test ran, not cleared."""
    detected = instant(item["detected_at"])
    assert world.started <= detected <= datetime.now(UTC), item
    assert item["cleared_at"] is None, item


def cleared_item(item: dict) -> None:
    assert item["cleared_at"] is not None, item
    assert instant(item["detected_at"]) <= instant(item["cleared_at"]), item


def pe_event(event_type: str, data: dict, event_id: str, clock: Clock) -> bytes:
    """A Payment Engine event as its sandbox writes one."""
    moment = clock()
    stamp = moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    body = {"eventId": event_id, "eventType": event_type, "timestamp": stamp, "data": data}
    return dumps_exact(body).encode()


def pe_signed(body: bytes) -> dict[str, str]:
    return {"X-Webhook-Signature": payment_engine_sign(PAYMENT_ENGINE.webhook_secret, body)}


def cf_signed(body: bytes) -> dict[str, str]:
    return {"X-Webhook-Signature": cryptofuse_sign(body, CRYPTOFUSE.webhook_secret)}


async def coincoin_order_at_the_provider(world: World, payment_id: str, price: str) -> None:
    """Creates an order at CoinCoin directly (signed as its API wants), before the ledger knows
    it: the same order the ledger's create will later find (CoinCoin answers an existing
    payment_id with the same price and expiry with that order)."""
    headers = coincoin_signed_headers(
        COINCOIN.app_id, COINCOIN.secret_key, int(datetime.now(UTC).timestamp() * 1000)
    )
    body = json.dumps({"payment_id": payment_id, "price": price, "expired": 48})
    async with world.ledger.http.post(
        f"{world.sandboxes['coincoin']}/v1/order/create",
        data=body.replace(f'"{price}"', price).encode(),  # the price as a JSON number
        headers={**headers, "Content-Type": "application/json"},
    ) as reply:
        assert 200 == reply.status, await reply.text()


async def payment_engine_transaction_at_the_provider(world: World, order_id: str, amount: str):
    """A transfer into the merchant account for `order_id`, created at Payment Engine directly
    (as the provider's own checkout would), before the ledger knows the order."""
    base = world.sandboxes["payment_engine"]
    login = {"username": PAYMENT_ENGINE.username, "password": PAYMENT_ENGINE.password}
    async with world.ledger.http.post(f"{base}/api/v1/auth/login", json=login) as reply:
        token = (await reply.json())["access_token"]
    body = (
        '{"toAccountId": "merchant", "paymentTypeId": "crypto_deposit", "amount": '
        + amount
        + ', "currencyCode": "USD", "externalReference": "'
        + order_id
        + '"}'
    )
    async with world.ledger.http.post(
        f"{base}/api/v1/transactions",
        data=body.encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    ) as reply:
        assert 201 == reply.status, await reply.text()
        return (await reply.json())["id"]


async def journal(world: World, **filters: str) -> list[dict]:
    """Every journal entry matching, all pages followed."""
    await world.ledger.caught_up()
    entries: list[dict] = []
    params = {"limit": "50", **filters}
    while True:
        page = await world.get("/v1/journal", **params)
        entries += page["items"]
        if page["next_cursor"] is None:
            return entries
        params["cursor"] = page["next_cursor"]


def assert_balanced(entries: list[dict]) -> None:
    """Each entry sums to zero per currency: posted on its own, pending with reservations."""
    assert entries
    for entry in entries:
        sums: dict[tuple[str, bool], Decimal] = defaultdict(Decimal)
        for line in entry["postings"]:
            sums[(line["currency"], line["kind"] == "posted")] += Decimal(line["amount"])
        assert all(total == 0 for total in sums.values()), entry


async def balances(world: World, currency: str) -> dict[str, tuple[str, str, str]]:
    """(posted, pending, available) per account, in one currency; sums checked to be zero."""
    await world.ledger.caught_up()
    items = (await world.get("/v1/balances", currency=currency))["items"]
    assert sum(Decimal(i["posted"]) for i in items) == 0, items
    assert sum(Decimal(i["pending"]) for i in items) == 0, items
    return {i["account"]: (i["posted"], i["pending"], i["available"]) for i in items}


async def fund_cryptofuse(world: World, order_id: str, usd: str) -> dict:
    payment = await world.pay("cryptofuse", order_id, usd, "USD", pay_currency="USDTTRC20")
    await world.scenario("cryptofuse", payment["provider_ref"], "full")
    assert "completed" == (await world.payment(payment["payment_id"]))["status"]
    return payment


async def fund_lipaykripto(world: World, order_id: str, amount: str) -> dict:
    payment = await world.pay("lipaykripto", order_id, amount, "TRY")
    await world.scenario("lipaykripto", payment["provider_ref"], "full")
    assert "completed" == (await world.payment(payment["payment_id"]))["status"]
    return payment


async def fund_payment_engine(world: World, order_id: str, amount: str) -> dict:
    payment = await world.pay("payment_engine", order_id, amount, "USD")
    await world.scenario("payment_engine", payment["provider_ref"], "full")
    assert "completed" == (await world.payment(payment["payment_id"]))["status"]
    return payment
