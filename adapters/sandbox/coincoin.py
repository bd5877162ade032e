"""A CoinCoin stand-in: order creation with its documented auth, in memory, plus scenario controls.

Provider API (served both at the root and under /v1, since the document's "API path" carries /v1):
- POST /order/create {payment_id, price, expired} -> {payment_id, address, amount, create_time,
  expired_time, expired, network, coin, state}. Headers CC-APP-ID, CC-TIMESPAN (13-digit ms),
  CC-SIGN = hex HMAC-SHA1("{app_id}:{timespan}", secret_key).

Choices the document leaves to the sandbox (it documents no error answers at all):
- a wrong app id or sign, or a timespan more than 5 minutes from the sandbox's clock: 401;
- a body breaking the documented rules (payment_id 8-32 of [A-Za-z0-9_], price at least 10,
  expired 1-48 hours): 400. `expired` is absent from the params table, so it defaults to 48;
- the same payment_id again with the same price and expiry answers the existing order (so a
  create retried after a lost answer finds its order); with another price or expiry, 400;
- errors are {"code": <status>, "message": ...};
- prices are taken as USDT on TRON (the document's examples), so `amount` equals `price`.

Webhooks are POSTed, unsigned as documented, to the callback URL set in the "portal"
(`SandboxConfig.webhook_url`, or POST /_sandbox/webhook_url), once per scenario step, without
retries. The state codes contradict each other in the document (see
adapters/providers/coincoin/states.py); the sandbox uses the status table's numbering (2 in
settlement, 1 completed) except that `partial` ends with the document's own example (state 1
with half collected), so nothing downstream can come to rely on either numbering.

CoinCoin documents no order query, no withdrawal and no balance endpoint, so the sandbox has
none; `GET /_sandbox/payments/{ref}` shows an order as the sandbox holds it. The other
`/_sandbox/` controls (request log, faults, scenarios, portal URL) are the shared ones of
`adapters/sandbox/control.py`.

Run it on loopback with an ephemeral port (aiohttp `TestServer`, or `web.AppRunner` +
`TCPSite(port=0)`). Importing this module starts nothing.
"""

from __future__ import annotations

import hmac
import random
import re
import string
import time
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal
from typing import Any

from aiohttp import web

from adapters.providers.coincoin.protocol import (
    APP_ID_HEADER,
    CREATE_ORDER_PATH,
    MAXIMUM_EXPIRY_HOURS,
    MINIMUM_EXPIRY_HOURS,
    MINIMUM_PRICE,
    PAYMENT_ID_PATTERN,
    SIGN_HEADER,
    TIMESPAN_HEADER,
    sign,
)
from adapters.providers.http_client import dumps_exact
from adapters.sandbox.control import (
    ApiRoute,
    ControlRefused,
    SandboxSpec,
    Scenarios,
    json_response,
    sandbox_app,
)
from adapters.sandbox.deliveries import Deliveries
from ledger.money import loads_exact

_HOUR_MILLISECONDS = 3_600_000
_TIMESPAN_PATTERN = re.compile(r"\d{13}")
_BASE58 = "".join(c for c in string.ascii_letters + string.digits if c not in "0OIl")
# A deposit this small does not cover the network fee, the one documented Invalid(-1) case that
# can be told apart on the wire (the other, "timed out without funds", is expire_no_funds).
_DUST = Decimal("0.5")

RECEIVING, COMPLETED, IN_SETTLEMENT, INVALID = 0, 1, 2, -1


# The keys of the ledger's table for this provider besides base_url (a fleet makes them up),
# and whether the callback URL is set once, in the provider's portal (adapters/sandbox/fleet.py).
LEDGER_TABLE_KEYS = ("app_id", "secret_key", "webhook_token")
HAS_PORTAL = True


@dataclass
class SandboxConfig:
    app_id: str
    secret_key: str
    # CoinCoin takes its callback URL once, in its portal; the ledger's URL carries its token.
    webhook_url: str | None = None
    max_clock_skew_seconds: int = 300
    network: str = "tron"
    coin: str = "usdt"


@dataclass
class _Order:
    payment_id: str
    price: Decimal
    expired: int
    address: str
    create_time: int
    state: int = RECEIVING
    collected: Decimal = Decimal(0)

    @property
    def expired_time(self) -> int:
        return self.create_time + self.expired * _HOUR_MILLISECONDS


@dataclass
class _State:
    config: SandboxConfig
    orders: dict[str, _Order] = field(default_factory=dict)
    balances: list[dict[str, Any]] = field(default_factory=list)


_STATE = web.AppKey("coincoin_state", _State)
# The document's "API path" carries /v1 and its request example does not: both are served, and
# a fault queued under either path (or create_payment) hits both.
_CREATE_PATHS = (CREATE_ORDER_PATH, "/v1" + CREATE_ORDER_PATH)
PAYMENT_SCENARIOS = frozenset(
    {"full", "partial", "over", "expire_no_funds", "expire_with_funds", "late", "fail",
     "multiple_deposits", "out_of_order", "duplicate"}
)


def create_sandbox_app(config: SandboxConfig) -> web.Application:
    state = _State(config)
    app = sandbox_app(
        SandboxSpec(
            provider="CoinCoin",
            api=[
                ApiRoute("POST", path, _create_order, "create_payment", aliases=_CREATE_PATHS)
                for path in _CREATE_PATHS
            ],
            fault_answer=lambda status: _error(status, "sandbox fault"),
            payments=Scenarios(PAYMENT_SCENARIOS, lambda ref, name: _payment(state, ref, name)),
            withdrawals=None,
            expire_tokens=_expire_tokens,
            set_balances=lambda body: _set_balances(state, body),
            has_portal=HAS_PORTAL,
            portal_url=config.webhook_url,
            controls=[("GET", "/_sandbox/payments/{ref}", _get_order)],
        )
    )
    app[_STATE] = state
    return app


# --- provider API --------------------------------------------------------------------------------


async def _create_order(request: web.Request) -> web.Response:
    state = request.app[_STATE]
    refusal = _refuse_auth(request, state.config)
    if refusal:
        return _error(401, refusal)
    body, invalid = _order_request(await request.read())
    if invalid:
        return _error(400, invalid)
    payment_id, price = body["payment_id"], Decimal(body["price"])
    expired = body.get("expired", MAXIMUM_EXPIRY_HOURS)
    existing = state.orders.get(payment_id)
    if existing is not None:
        if existing.price != price or existing.expired != expired:
            return _error(400, "payment_id already exists")
        return _json(_order_view(existing, state.config))
    order = _Order(
        payment_id=payment_id,
        price=price,
        expired=expired,
        address="T" + "".join(random.choice(_BASE58) for _ in range(33)),
        create_time=_now_milliseconds(),
    )
    state.orders[payment_id] = order
    return _json(_order_view(order, state.config))


def _refuse_auth(request: web.Request, config: SandboxConfig) -> str:
    """Why the request's signature is refused, or "" when it is good."""
    app_id = request.headers.get(APP_ID_HEADER, "")
    timespan = request.headers.get(TIMESPAN_HEADER, "")
    signature = request.headers.get(SIGN_HEADER, "")
    if not app_id or not timespan or not signature:
        return "missing CC-APP-ID, CC-TIMESPAN or CC-SIGN"
    if app_id != config.app_id:
        return "unknown app id"
    if not _TIMESPAN_PATTERN.fullmatch(timespan):
        return "CC-TIMESPAN must be a 13-digit millisecond timestamp"
    if abs(_now_milliseconds() - int(timespan)) > config.max_clock_skew_seconds * 1000:
        return "CC-TIMESPAN is too far from the server's clock"
    expected = sign(config.app_id, config.secret_key, timespan)
    if not hmac.compare_digest(signature.lower().encode(), expected.encode()):
        return "CC-SIGN does not match"
    return ""


def _order_request(raw: bytes) -> tuple[dict[str, Any], str]:
    """The create body, and why it breaks the documented rules ("" when it does not)."""
    try:
        body = loads_exact(raw)
    except (ValueError, UnicodeDecodeError):
        return {}, "body is not JSON"
    if not isinstance(body, dict):
        return {}, "body is not a JSON object"
    return body, _invalid_order(body)


def _invalid_order(body: dict[str, Any]) -> str:
    payment_id = body.get("payment_id")
    if not isinstance(payment_id, str) or not PAYMENT_ID_PATTERN.fullmatch(payment_id):
        return "payment_id must be 8-32 letters, digits or underscores"
    price = body.get("price")
    if isinstance(price, bool) or not isinstance(price, int | Decimal):
        return "price must be a number"
    if price < MINIMUM_PRICE:
        return f"price must be at least {MINIMUM_PRICE}"
    expired = body.get("expired", MAXIMUM_EXPIRY_HOURS)
    if isinstance(expired, bool) or not isinstance(expired, int):
        return "expired must be a whole number of hours"
    if not MINIMUM_EXPIRY_HOURS <= expired <= MAXIMUM_EXPIRY_HOURS:
        return f"expired must be between {MINIMUM_EXPIRY_HOURS} and {MAXIMUM_EXPIRY_HOURS} hours"
    return ""


def _order_view(order: _Order, config: SandboxConfig) -> dict[str, Any]:
    return {
        "payment_id": order.payment_id,
        "address": order.address,
        "amount": order.price,
        "create_time": order.create_time,
        "expired_time": order.expired_time,
        "expired": order.expired,
        "network": config.network,
        "coin": config.coin,
        "state": order.state,
    }


# --- scenarios -----------------------------------------------------------------------------------


def _scenario_steps(name: str, amount: Decimal) -> list[tuple[Decimal, int]] | None:
    """(collected so far, state) per delivery, in the order they are sent. `collected` is a
    running total, as CoinCoin reports it."""
    half = _part(amount, "0.5")
    deposits = [
        (_part(amount, "0.3"), RECEIVING),
        (_part(amount, "0.6"), RECEIVING),
        (amount, IN_SETTLEMENT),
    ]
    scenarios: dict[str, list[tuple[Decimal, int]]] = {
        "full": [(amount, IN_SETTLEMENT), (amount, COMPLETED)],
        # Receiving, then the document's own webhook example: state 1 with half collected.
        "partial": [(half, RECEIVING), (half, COMPLETED)],
        "over": [(_part(amount, "1.5"), IN_SETTLEMENT)],
        "expire_no_funds": [(Decimal(0), INVALID)],
        # "In Settlement: the order is overdue and some cryptocurrency is received".
        "expire_with_funds": [(half, RECEIVING), (half, IN_SETTLEMENT)],
        # Invalid (timed out empty), then the customer pays anyway; the order is overdue with
        # funds, which the status table calls In Settlement.
        "late": [(Decimal(0), INVALID), (amount, IN_SETTLEMENT)],
        # CoinCoin has no failure word of its own; the nearest is Invalid with a deposit below
        # the network fee.
        "fail": [(_DUST, INVALID)],
        "multiple_deposits": deposits,
        "out_of_order": list(reversed(deposits)),
        "duplicate": [(amount, IN_SETTLEMENT), (amount, IN_SETTLEMENT)],
    }
    return scenarios.get(name)


def _part(amount: Decimal, fraction: str) -> Decimal:
    """A share of the amount on USDT's 6 places, rounded down so a partial stays partial."""
    return (amount * Decimal(fraction)).quantize(Decimal("0.000001"), rounding=ROUND_DOWN)


def _payment(state: _State, ref: str, name: str) -> Deliveries:
    order = state.orders.get(ref)
    if order is None:
        raise ControlRefused(404, "unknown payment")
    steps = _scenario_steps(name, order.price)
    if steps is None:  # the names are checked before: a scenario listed but not written
        raise ControlRefused(400, f"unknown scenario {name!r}")
    bodies = [
        dumps_exact(_webhook_body(order, state.config, collected, order_state))
        for collected, order_state in steps
    ]
    # The order ends as the provider would see it: the highest total and its state.
    order.collected, order.state = max(steps, key=lambda step: step[0])
    return Deliveries(bodies)


def _webhook_body(
    order: _Order, config: SandboxConfig, collected: Decimal, order_state: int
) -> dict[str, Any]:
    """Shaped as the document's example: `amount` with a decimal point (100.0), `collected`
    without trailing zeros (50)."""
    exponent = order.price.as_tuple().exponent
    amount = (
        order.price.quantize(Decimal("0.1"))
        if isinstance(exponent, int) and exponent >= 0
        else order.price
    )
    return {
        "payment": {
            "address": order.address,
            "payment_id": order.payment_id,
            "network": config.network,
            "coin": config.coin,
            "amount": amount,
        },
        "collected": {config.coin: collected.normalize()},
        "state": order_state,
    }


async def _get_order(request: web.Request) -> web.Response:
    state = request.app[_STATE]
    order = state.orders.get(request.match_info["ref"])
    if order is None:
        return _json({"error": "unknown payment"}, 404)
    return _json({**_order_view(order, state.config), "collected": order.collected})


# --- controls ------------------------------------------------------------------------------------


def _expire_tokens(_body: dict[str, Any]) -> dict[str, Any]:
    # CoinCoin issues no tokens: every request is signed on its own, so nothing can expire.
    return {"expired": 0, "note": "CoinCoin has no tokens; every request is signed"}


def _set_balances(state: _State, body: dict[str, Any]) -> dict[str, Any]:
    """Stored and echoed only: CoinCoin documents no balance endpoint or balance webhook."""
    balances = body.get("balances")
    if not isinstance(balances, list) or not all(isinstance(item, dict) for item in balances):
        raise ControlRefused(400, "balances must be a list of objects")
    state.balances = balances
    return {"balances": balances, "reported": False}


# --- helpers -------------------------------------------------------------------------------------


def _now_milliseconds() -> int:
    return time.time_ns() // 1_000_000


def _error(status: int, message: str) -> web.Response:
    return _json({"code": status, "message": message}, status)


def _json(payload: Any, status: int = 200) -> web.Response:
    return json_response(payload, status)
