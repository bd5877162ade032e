"""The sandboxes' shared fault injection (adapters/sandbox/control.py), over real HTTP on loopback.

Most cases drive the CoinPay sandbox with a bare aiohttp client, so that what is seen is the
sandbox's behaviour and not a provider client's retries; one case runs every sandbox of the fleet.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import aiohttp
import pytest

from adapters.config import PROVIDER_IDS
from adapters.providers.http_client import dumps_exact
from adapters.sandbox.fleet import RunningSandbox, sandbox_fleet
from ledger.money import loads_exact

CREATE_PATHS = {
    "coinpay": "/api/transactions",
    "coincoin": "/order/create",
    "cryptofuse": "/payments/",
    "payment_engine": "/api/v1/transactions",
    "lipaykripto": "/api/external-payment-request",
}


@dataclass
class CoinPay:
    """A CoinPay sandbox and a session logged in to it."""

    sandbox: RunningSandbox
    http: aiohttp.ClientSession
    token: str = ""

    async def control(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with self.http.request(
            method, self.sandbox.url + path, data=dumps_exact(body) if body is not None else None
        ) as reply:
            return reply.status, loads_exact(await reply.read())

    async def fault(self, **body: Any) -> None:
        status, answer = await self.control("POST", "/_sandbox/faults", body)
        assert 200 == status, answer

    async def create(self, order_id: str, patience_seconds: float = 10) -> tuple[int, Any]:
        body = {"amount": Decimal("100.00"), "currency": "USDC", "type": "Payment",
                "metadata": {"orderId": order_id}}
        async with self.http.post(
            self.sandbox.url + "/api/transactions",
            data=dumps_exact(body),
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
            timeout=aiohttp.ClientTimeout(total=patience_seconds),
        ) as reply:
            return reply.status, loads_exact(await reply.read())

    async def created_orders(self) -> list[str]:
        async with self.http.get(
            self.sandbox.url + "/api/transactions",
            headers={"Authorization": f"Bearer {self.token}"},
        ) as reply:
            assert 200 == reply.status
            return [t["metadata"]["orderId"] for t in loads_exact(await reply.read())]

    async def logged(self, operation: str) -> list[dict[str, Any]]:
        status, answer = await self.control("GET", f"/_sandbox/requests?operation={operation}")
        assert 200 == status
        assert len(answer["requests"]) == answer["count"]
        return list(answer["requests"])


@pytest.fixture
async def coinpay() -> AsyncIterator[CoinPay]:
    async with sandbox_fleet(["coinpay"]) as fleet, aiohttp.ClientSession() as http:
        sandbox = fleet.sandboxes["coinpay"]
        credentials = {key: sandbox.table[key] for key in ("username", "password")}
        async with http.post(sandbox.url + "/api/auth/login", json=credentials) as reply:
            token = (await reply.json())["token"]
        yield CoinPay(sandbox, http, token)


async def test_a_status_fault_answers_in_the_providers_shape_and_creates_nothing(
    coinpay: CoinPay,
) -> None:
    await coinpay.fault(operation="create_payment", kind="status", status=503)
    assert (503, {"error": "injected fault 503"}) == await coinpay.create("ORDER-1")
    assert [] == await coinpay.created_orders()
    assert ["status"] == [r["fault"] for r in await coinpay.logged("create_payment")]


async def test_statuses_fault_the_next_calls_one_each_then_the_work_is_done(
    coinpay: CoinPay,
) -> None:
    await coinpay.fault(operation="create_payment", statuses=[503, 429])
    statuses = [(await coinpay.create(f"ORDER-{n}"))[0] for n in range(3)]
    assert [503, 429, 201] == statuses
    assert ["ORDER-2"] == await coinpay.created_orders()


async def test_a_timeout_holds_the_request_past_the_clients_patience_and_does_no_work(
    coinpay: CoinPay,
) -> None:
    await coinpay.fault(operation="create_payment", kind="timeout", seconds=30)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await coinpay.create("ORDER-held", patience_seconds=0.5)
    assert 0.5 <= time.monotonic() - started < 5
    assert [] == await coinpay.created_orders()
    assert ["timeout"] == [r["fault"] for r in await coinpay.logged("create_payment")]


async def test_a_held_request_does_not_hold_up_the_sandboxs_shutdown() -> None:
    async with aiohttp.ClientSession() as http:
        async with sandbox_fleet(["coinpay"]) as fleet:
            url = fleet.sandboxes["coinpay"].url
            fault = {"operation": "/api/auth/login", "kind": "timeout", "seconds": 60}
            async with http.post(url + "/_sandbox/faults", json=fault) as reply:
                assert 200 == reply.status
            held = asyncio.ensure_future(http.post(url + "/api/auth/login", json={}))
            await asyncio.sleep(0.2)
            started = time.monotonic()
        assert time.monotonic() - started < 5
        with pytest.raises(aiohttp.ClientError):
            await held  # closed unanswered, as the timeout fault promises


async def test_drop_before_closes_the_connection_unanswered_and_does_no_work(
    coinpay: CoinPay,
) -> None:
    await coinpay.fault(operation="create_payment", kind="drop_before")
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await coinpay.create("ORDER-dropped")
    assert [] == await coinpay.created_orders()


async def test_drop_after_does_the_work_then_closes_the_connection_unanswered(
    coinpay: CoinPay,
) -> None:
    await coinpay.fault(operation="create_payment", kind="drop_after")
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await coinpay.create("ORDER-lost-answer")
    assert ["ORDER-lost-answer"] == await coinpay.created_orders()
    [logged] = await coinpay.logged("create_payment")
    assert ("POST", "/api/transactions", "drop_after") == (
        logged["method"], logged["path"], logged["fault"]
    )


async def test_delay_after_does_the_work_and_answers_late(coinpay: CoinPay) -> None:
    await coinpay.fault(operation="create_payment", kind="delay_after", seconds=0.5)
    started = time.monotonic()
    status, created = await coinpay.create("ORDER-slow")
    assert 0.5 <= time.monotonic() - started
    assert (201, "ORDER-slow") == (status, created["metadata"]["orderId"])


async def test_times_repeats_a_fault_for_that_many_calls(coinpay: CoinPay) -> None:
    await coinpay.fault(operation="create_payment", kind="drop_before", times=2)
    for order in ("ORDER-a", "ORDER-b"):
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await coinpay.create(order)
    assert 201 == (await coinpay.create("ORDER-c"))[0]
    faults = [r.get("fault") for r in await coinpay.logged("create_payment")]
    assert ["drop_before", "drop_before", None] == faults


async def test_a_fault_hits_only_its_own_operation(coinpay: CoinPay) -> None:
    await coinpay.fault(operation="find_payment", kind="status", status=500)
    assert 201 == (await coinpay.create("ORDER-unharmed"))[0]
    status, _ = await coinpay.control("GET", "/_sandbox/faults")
    assert 200 == status
    assert {"faults": {"find_payment": [{"kind": "status", "status": 500}]}} == _
    assert (200, {"cleared": 1}) == await coinpay.control("DELETE", "/_sandbox/faults")
    assert ["ORDER-unharmed"] == await coinpay.created_orders()


async def test_the_request_log_counts_creates_per_operation(coinpay: CoinPay) -> None:
    await coinpay.fault(operation="create_payment", kind="drop_after")
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await coinpay.create("ORDER-1")
    await coinpay.create("ORDER-2")
    await coinpay.created_orders()
    _, everything = await coinpay.control("GET", "/_sandbox/requests")
    assert ["login", "create_payment", "create_payment", "find_payment"] == [
        r["operation"] for r in everything["requests"]
    ]
    assert 2 == len(await coinpay.logged("create_payment"))
    assert (200, {"cleared": 4}) == await coinpay.control("DELETE", "/_sandbox/requests")
    assert [] == await coinpay.logged("create_payment")


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        ({"operation": "create_payment", "kind": "explode"}, "kind must be one of"),
        ({"operation": "create_payment", "kind": "status"}, "is not an HTTP status"),
        ({"operation": "create_payment", "kind": "timeout", "seconds": -1}, "seconds"),
        ({"operation": "create_payment", "kind": "drop_after", "times": 0}, "times"),
        ({"operation": "create_payment", "statuses": [503], "kind": "status"}, "not both"),
        ({"operation": "make_coffee", "statuses": [503]}, "unknown operation"),
        ({"statuses": [503]}, "operation"),
    ],
)
async def test_a_fault_the_sandbox_cannot_inject_is_refused(
    coinpay: CoinPay, body: dict[str, Any], complaint: str
) -> None:
    status, answer = await coinpay.control("POST", "/_sandbox/faults", body)
    assert 400 == status
    assert complaint in answer["error"]


@pytest.mark.parametrize("provider", PROVIDER_IDS)
async def test_every_sandbox_drops_its_create_and_logs_it(provider: str) -> None:
    async with sandbox_fleet([provider]) as fleet, aiohttp.ClientSession() as http:
        url = fleet.sandboxes[provider].url
        fault = {"operation": "create_payment", "kind": "drop_before"}
        async with http.post(url + "/_sandbox/faults", json=fault) as reply:
            assert 200 == reply.status
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await http.post(url + CREATE_PATHS[provider], json={})
        async with http.get(url + "/_sandbox/requests?operation=create_payment") as reply:
            logged = (await reply.json())["requests"]
    assert [("POST", CREATE_PATHS[provider], "drop_before")] == [
        (r["method"], r["path"], r["fault"]) for r in logged
    ]
