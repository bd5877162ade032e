
"""A LiPayKripto stand-in: the documented endpoints and auth, in memory, plus scenario controls.

Provider API (POST only; any other method gets 405, as the document warns):
- POST /api/auth/token {clientId, clientSecret} -> {token, expiresIn}; 401 Invalid credentials.
- POST /api/external-payment-request (Bearer token) {tryAmount, paymentId, webhookUrl}.
  Tokens are single use here: the document demands a new token per payment request, and the
  sandbox enforces it so a client that reuses one is caught (401 Invalid token).
- POST /api/withdraw {try_amount, clientId, requestId, wallet_address, coin_type, signature,
  webhook_url, created_at}; the signature is checked over the documented concatenation with the
  amount written with two decimals (401 Invalid signature on mismatch).
Webhooks are unsigned JSON POSTed to the URL given with each payment or withdrawal.

The document offers no query of any kind (no payment or withdrawal status, no lookup by
paymentId or requestId, no balance), so the sandbox has none.

Sandbox controls (not the provider's API) are the shared ones of `adapters/sandbox/control.py`:
request log, faults, scenarios, expire_tokens, balances. The sandbox is written from the
document, not from the adapter, so that a misreading in one is caught by the other.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_DOWN, Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from aiohttp import web

from adapters.sandbox.control import (
    ApiRoute,
    ControlRefused,
    SandboxSpec,
    Scenarios,
    sandbox_app,
)
from adapters.sandbox.deliveries import Deliveries
from ledger.money import loads_exact

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

LOGIN_PATH = "/api/auth/token"
PAYMENT_PATH = "/api/external-payment-request"
WITHDRAW_PATH = "/api/withdraw"
COIN_TYPES = frozenset({"TRX", "USDT", "ETH"})
CENT = Decimal("0.01")
FAULT_MESSAGES = {
    401: "Invalid token",
    429: "Too many requests",
}

# Each scenario as the deliveries LiPayKripto can express: (amount, status word). The document has
# two words (confirmed, failed), one amount per webhook and no deposit id, so several scenarios
# can only be approximated; each entry says how.
PAYMENT_SCENARIOS: dict[str, tuple[tuple[str, str], ...]] = {
    "full": (("full", "confirmed"),),
    # No partial or overpaid word exists: read as a confirmation of less / more than was asked.
    "partial": (("half", "confirmed"),),
    "over": (("over", "confirmed"),),
    # No expiry word exists: the ledger expires by its own clock, so nothing is sent...
    "expire_no_funds": (),
    # ...or only the partial confirmation that came before the time ran out.
    "expire_with_funds": (("half", "confirmed"),),
    # The payment's time is over (by the scenario's account); the confirmation comes anyway.
    # Only the ledger can tell it is late, by its own expires_at.
    "late": (("full", "confirmed"),),
    "fail": (("full", "failed"),),
    "duplicate": (("full", "confirmed"), ("full", "confirmed")),
    # A webhook names no deposit, so several deposits cannot be told apart: the nearest honest
    # thing is the same confirmation delivered twice, which must count once. Reversing two
    # identical deliveries changes nothing, so out_of_order sends the same.
    "multiple_deposits": (("full", "confirmed"), ("full", "confirmed")),
    "out_of_order": (("full", "confirmed"), ("full", "confirmed")),
}
EXPIRING_SCENARIOS = frozenset({"expire_no_funds", "expire_with_funds", "late"})
WITHDRAWAL_SCENARIOS = {
    "processing": None,  # LiPayKripto has no in-progress word: nothing is sent
    "completed": "confirmed",
    "failed": "failed",
    "manual_review": "manual_process",
}


# The keys of the ledger's table for this provider besides base_url (a fleet makes them up),
# and whether the callback URL is set once, in the provider's portal (adapters/sandbox/fleet.py).
LEDGER_TABLE_KEYS = ("client_id", "client_secret", "hmac_secret")
HAS_PORTAL = False


@dataclass(frozen=True, slots=True)
class SandboxConfig:
    client_id: str
    client_secret: str
    hmac_secret: str
    token_lifetime_seconds: int = 3600
    single_use_tokens: bool = True
    # The document's example ids; a fleet starts elsewhere (see adapters/sandbox/fleet.py).
    first_payment_request_id: int = 505
    first_withdraw_id: int = 123


@dataclass(slots=True)
class _Token:
    expires_at: float  # time.monotonic() deadline
    used: bool = False


@dataclass(slots=True)
class _Payment:
    payment_request_id: int
    payment_id: str
    try_amount: Decimal
    webhook_url: str
    status: str = "pending_coin_selection"


@dataclass(slots=True)
class _Withdrawal:
    withdraw_id: int
    request_id: str
    try_amount: Decimal
    wallet_address: str
    coin_type: str
    webhook_url: str
    status: str = "pending"


@dataclass(slots=True)
class _State:
    config: SandboxConfig
    tokens: dict[str, _Token] = field(default_factory=dict)
    payments: dict[int, _Payment] = field(default_factory=dict)
    withdrawals: dict[int, _Withdrawal] = field(default_factory=dict)
    balances: Any = None
    next_payment_id: int = 0
    next_withdraw_id: int = 0

    def __post_init__(self) -> None:
        self.next_payment_id = self.config.first_payment_request_id
        self.next_withdraw_id = self.config.first_withdraw_id


STATE = web.AppKey("lipaykripto_state", _State)


def create_sandbox_app(config: SandboxConfig) -> web.Application:
    state = _State(config)
    app = sandbox_app(
        SandboxSpec(
            provider="LiPayKripto",
            # Only POST is routed, so aiohttp answers 405 to every other method, as LiPayKripto
            # does.
            api=[
                ApiRoute("POST", LOGIN_PATH, _issue_token, "login", ("token",)),
                ApiRoute("POST", PAYMENT_PATH, _create_payment, "create_payment"),
                ApiRoute("POST", WITHDRAW_PATH, _create_withdrawal, "create_withdrawal",
                         ("withdraw",)),
            ],
            fault_answer=lambda status: _json(
                {"success": False, "error": FAULT_MESSAGES.get(status, "Server error")}, status
            ),
            payments=Scenarios(
                frozenset(PAYMENT_SCENARIOS), lambda ref, name: _payment(state, ref, name)
            ),
            withdrawals=Scenarios(
                frozenset(WITHDRAWAL_SCENARIOS), lambda ref, name: _withdrawal(state, ref, name)
            ),
            expire_tokens=lambda _body: _expire_tokens(state),
            set_balances=lambda body: _set_balances(state, body),
            middlewares=[_method_not_allowed],
        )
    )
    app[STATE] = state
    return app


@web.middleware
async def _method_not_allowed(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPMethodNotAllowed:
        response = _json({"success": False, "error": "Method not allowed; use POST"}, 405)
        response.headers["Allow"] = "POST"
        return response


async def _issue_token(request: web.Request) -> web.Response:
    state = request.app[STATE]
    body = await _json_body(request)
    client_id = body.get("clientId") if body else None
    client_secret = body.get("clientSecret") if body else None
    if not (
        isinstance(client_id, str)
        and isinstance(client_secret, str)
        and _same(client_id, state.config.client_id)
        and _same(client_secret, state.config.client_secret)
    ):
        return _json({"error": "Invalid credentials"}, 401)
    token = "sandbox." + secrets.token_urlsafe(24)
    lifetime = state.config.token_lifetime_seconds
    state.tokens[token] = _Token(expires_at=time.monotonic() + lifetime)
    return _json({"token": token, "expiresIn": lifetime})


async def _create_payment(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if not _spend_token(state, request.headers.get("Authorization", "")):
        return _json({"error": "Invalid token"}, 401)
    body = await _json_body(request) or {}
    amount = _amount(body.get("tryAmount"))
    payment_id = body.get("paymentId")
    webhook_url = body.get("webhookUrl")
    if amount is None or amount <= 0:
        return _json({"success": False, "error": "Invalid amount"}, 400)
    taken = {payment.payment_id for payment in state.payments.values()}
    if not isinstance(payment_id, str) or not payment_id or payment_id in taken:
        return _json({"success": False, "error": "Invalid paymentId"}, 400)
    if not isinstance(webhook_url, str) or not webhook_url:
        return _json({"success": False, "error": "Webhook URL required"}, 400)
    payment = _Payment(state.next_payment_id, payment_id, amount, webhook_url)
    state.next_payment_id += 1
    state.payments[payment.payment_request_id] = payment
    return _json({
        "success": True,
        "paymentUrl": f"{request.url.origin()}/payment/{secrets.token_urlsafe(16)}",
        "paymentId": payment.payment_id,
        "clientId": state.config.client_id,
        "paymentRequestId": payment.payment_request_id,
        "status": payment.status,
    })


async def _create_withdrawal(request: web.Request) -> web.Response:
    state = request.app[STATE]
    body = await _json_body(request) or {}
    text_fields = ("clientId", "requestId", "wallet_address", "coin_type", "signature",
                   "webhook_url", "created_at")
    details = [
        {"field": name, "message": "required"}
        for name in text_fields
        if not isinstance(body.get(name), str) or not body[name]
    ]
    amount = _amount(body.get("try_amount"))
    if amount is None or amount <= 0:
        details.append({"field": "try_amount", "message": "must be a number greater than zero"})
    if isinstance(body.get("coin_type"), str) and body["coin_type"] not in COIN_TYPES:
        details.append({"field": "coin_type", "message": "must be TRX, USDT or ETH"})
    if isinstance(body.get("created_at"), str) and not _is_iso_8601(body["created_at"]):
        details.append({"field": "created_at", "message": "must be ISO 8601"})
    if details or amount is None:
        return _json({"success": False, "error": "Validation failed", "details": details}, 400)
    if not _same(body["clientId"], state.config.client_id):
        return _json({"success": False, "error": "Invalid credentials", "details": []}, 401)
    signing_input = (
        format(amount, "f") + body["clientId"] + body["requestId"] + body["wallet_address"]
        + body["coin_type"] + body["webhook_url"] + body["created_at"]
    )
    expected = hmac.new(
        state.config.hmac_secret.encode(), signing_input.encode(), hashlib.sha256
    ).hexdigest()
    if not _same(body["signature"].lower(), expected):
        return _json({"success": False, "error": "Invalid signature", "details": []}, 401)
    if any(w.request_id == body["requestId"] for w in state.withdrawals.values()):
        return _json({"success": False, "error": "Duplicate requestId", "details": []}, 400)
    withdrawal = _Withdrawal(
        state.next_withdraw_id, body["requestId"], amount, body["wallet_address"],
        body["coin_type"], body["webhook_url"],
    )
    state.next_withdraw_id += 1
    state.withdrawals[withdrawal.withdraw_id] = withdrawal
    return _json({"success": True, "data": {"withdrawId": withdrawal.withdraw_id,
                                            "status": withdrawal.status}})


def _payment(state: _State, ref: str, scenario: str) -> Deliveries:
    payment = _find_payment(state, ref)
    if payment is None:
        raise ControlRefused(404, "unknown payment")
    return Deliveries(_payment_bodies(state.config, payment, scenario), url=payment.webhook_url)


def _payment_bodies(config: SandboxConfig, payment: _Payment, scenario: str) -> list[str]:
    full = payment.try_amount
    half = (full / 2).quantize(CENT, rounding=ROUND_DOWN)
    amounts = {"full": full, "half": half, "over": full + half}
    bodies = []
    for amount_name, status in PAYMENT_SCENARIOS[scenario]:
        payment.status = status
        bodies.append(_render_object([
            ("try_amount", amounts[amount_name]), ("client_id", config.client_id),
            ("payment_id", payment.payment_id), ("status", status),
        ]))
    if scenario in EXPIRING_SCENARIOS:
        payment.status = "expired"  # the sandbox's own note; LiPayKripto has no word to send
    return bodies


def _withdrawal(state: _State, ref: str, scenario: str) -> Deliveries:
    withdrawal = _find_withdrawal(state, ref)
    if withdrawal is None:
        raise ControlRefused(404, "unknown withdrawal")
    status = WITHDRAWAL_SCENARIOS[scenario]
    if status is None:
        # "processing" has no word in the document: the withdrawal stays pending, silently.
        return Deliveries([])
    withdrawal.status = status
    body = _render_object([
        # The document shows success: true beside "confirmed" and says nothing for the other
        # words; false for a failure is this sandbox's reading.
        ("success", status != "failed"),
        ("clientId", state.config.client_id),
        ("status", status),
        ("tryAmount", withdrawal.try_amount),
        ("requestId", withdrawal.request_id),
    ])
    return Deliveries([body], url=withdrawal.webhook_url)


def _expire_tokens(state: _State) -> dict[str, Any]:
    for token in state.tokens.values():
        token.expires_at = 0.0
    return {"expired": len(state.tokens)}


def _set_balances(state: _State, body: dict[str, Any]) -> dict[str, Any]:
    state.balances = body
    # LiPayKripto documents neither a balance endpoint nor a balance webhook: kept, never reported.
    return {"balances": state.balances, "reported": False}


def _spend_token(state: _State, authorization: str) -> bool:
    scheme, _, token = authorization.partition(" ")
    if scheme != "Bearer" or not token:
        return False
    issued = state.tokens.get(token)
    if issued is None or issued.expires_at <= time.monotonic():
        return False
    if state.config.single_use_tokens:
        if issued.used:
            return False
        issued.used = True
    return True


def _find_payment(state: _State, ref: str) -> _Payment | None:
    if ref.isdigit() and int(ref) in state.payments:
        return state.payments[int(ref)]
    return next((p for p in state.payments.values() if p.payment_id == ref), None)


def _find_withdrawal(state: _State, ref: str) -> _Withdrawal | None:
    if ref.isdigit() and int(ref) in state.withdrawals:
        return state.withdrawals[int(ref)]
    return next((w for w in state.withdrawals.values() if w.request_id == ref), None)


async def _json_body(request: web.Request) -> dict[str, Any] | None:
    try:
        parsed = loads_exact(await request.read())
    except (ValueError, UnicodeDecodeError):
        return None
    return parsed if isinstance(parsed, dict) else None


def _amount(value: Any) -> Decimal | None:
    """A JSON number with at most two decimals, put on two decimals; else None."""
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        return None
    try:
        amount = Decimal(value).quantize(CENT)
    except InvalidOperation:
        return None
    return amount if amount == value else None


def _is_iso_8601(text: str) -> bool:
    try:
        datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


def _same(received: str, expected: str) -> bool:
    return hmac.compare_digest(received.encode(), expected.encode())


def _render_object(pairs: list[tuple[str, Any]]) -> str:
    """JSON in the document's key order, amounts as numbers with two decimals (100.00)."""
    return "{" + ", ".join(f"{json.dumps(key)}: {_render(value)}" for key, value in pairs) + "}"


def _render(value: Any) -> str:
    if isinstance(value, Decimal):
        # Amounts the sandbox sends are already on two decimals (100.00), as the document shows.
        return format(value, "f")
    if isinstance(value, dict):
        return _render_object(list(value.items()))
    if isinstance(value, list):
        return "[" + ", ".join(_render(item) for item in value) + "]"
    return json.dumps(value)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(text=_render(data), status=status, content_type="application/json")
