"""A CoinPay sandbox: the documented API (JWT login, transactions, payouts, wallet balance) kept in
memory, and webhooks signed as CoinPay signs them, sent to the callback URL set in its "portal".

Run it on loopback with an ephemeral port (aiohttp `TestServer`, or `web.AppRunner` +
`TCPSite(port=0)`). Importing this module starts nothing.

Scenario controls under `/_sandbox/` are not part of CoinPay's API. CoinPay has no words for a
partial, over- or late payment, nor for expiry: it only says `transaction.completed` with an
amount, or `transaction.failed`. So the sandbox expresses partial and over payments as a
`transaction.completed` whose amount (the total paid so far) differs from the payment's amount,
sends NOTHING at expiry (the ledger expires payments by its own clock), and for `late` only sends
the full amount (the caller makes sure the ledger's clock has passed the expiry first).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from adapters.providers.coinpay.javascript_json import stringify
from adapters.providers.http_client import dumps_exact
from ledger.money import loads_exact

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

SIGNATURE_HEADER = "x-signature"
_MERCHANT_ADDRESS = "0x7a3F5c2b9D1e4A8f6C0b3E5d7A9c1F2e4B6d8C0a"
_JSON = "application/json"

# Operation names accepted by /_sandbox/faults beside the request path.
_OPERATIONS = {
    ("POST", "/api/auth/login"): "login",
    ("POST", "/api/transactions"): "create_payment",
    ("GET", "/api/transactions/{transaction_id}"): "query_payment",
    ("POST", "/api/payouts"): "create_withdrawal",
    ("GET", "/api/wallet/balance"): "fetch_balances",
}


@dataclass
class SandboxConfig:
    username: str
    password: str
    webhook_secret: str
    # CoinPay takes its callback URL once, in its portal; `/_sandbox/webhook_url` changes it.
    webhook_url: str | None = None
    token_lifetime_minutes: int = 60


@dataclass
class _State:
    config: SandboxConfig
    tokens: set[str] = field(default_factory=set)
    transactions: dict[str, dict[str, Any]] = field(default_factory=dict)
    payouts: dict[str, dict[str, Any]] = field(default_factory=dict)
    balances: list[dict[str, Any]] = field(default_factory=list)
    faults: dict[str, list[int]] = field(default_factory=dict)
    requests: list[dict[str, str]] = field(default_factory=list)


_STATE = web.AppKey("coinpay_state", _State)


def create_sandbox_app(config: SandboxConfig) -> web.Application:
    app = web.Application(middlewares=[_record_and_fault])
    app[_STATE] = _State(config)
    app.router.add_post("/api/auth/login", _login)
    app.router.add_post("/api/transactions", _create_transaction)
    app.router.add_get("/api/transactions/{transaction_id}", _get_transaction)
    app.router.add_post("/api/payouts", _create_payout)
    app.router.add_get("/api/wallet/balance", _wallet_balance)
    app.router.add_post("/_sandbox/payments/{ref}/scenario", _payment_scenario)
    app.router.add_post("/_sandbox/withdrawals/{ref}/scenario", _withdrawal_scenario)
    app.router.add_post("/_sandbox/faults", _set_faults)
    app.router.add_post("/_sandbox/expire_tokens", _expire_tokens)
    app.router.add_get("/_sandbox/requests", _list_requests)
    app.router.add_post("/_sandbox/balances", _set_balances)
    app.router.add_post("/_sandbox/webhook_url", _set_webhook_url)
    return app


def sign(body_text: str, secret: str) -> str:
    """The body the sandbox sends is JSON.stringify(payload) itself, so it is also the signing
    input (what the receiver rebuilds from the parsed body)."""
    return hmac.new(secret.encode(), body_text.encode(), hashlib.sha256).hexdigest()


# --- the documented API -------------------------------------------------------------------------


@web.middleware
async def _record_and_fault(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Keeps the API requests for tests and answers injected fault statuses first."""
    state = request.app[_STATE]
    if request.path.startswith("/api/"):
        state.requests.append({"method": request.method, "path": request.path})
        route = request.match_info.route.resource
        template = route.canonical if route is not None else request.path
        for key in (request.path, template, _OPERATIONS.get((request.method, template), "")):
            pending = state.faults.get(key)
            if pending:
                status = pending.pop(0)
                return _json({"error": f"injected fault {status}"}, status)
    return await handler(request)


async def _login(request: web.Request) -> web.Response:
    state = request.app[_STATE]
    body = await _body(request)
    username, password = body.get("username"), body.get("password")
    if not (
        isinstance(username, str)
        and isinstance(password, str)
        and hmac.compare_digest(username.encode(), state.config.username.encode())
        and hmac.compare_digest(password.encode(), state.config.password.encode())
    ):
        return _json({"error": "Invalid credentials"}, 401)
    token = secrets.token_urlsafe(24)
    state.tokens.add(token)
    return _json({"token": token, "expiresIn": state.config.token_lifetime_minutes})


async def _create_transaction(request: web.Request) -> web.Response:
    state = request.app[_STATE]
    if not _authorized(request):
        return _json({"error": "Unauthorized"}, 401)
    body = await _body(request)
    amount = _positive_amount(body.get("amount"))
    currency = body.get("currency")
    if amount is None or not isinstance(currency, str) or not currency:
        return _json({"error": "amount and currency are required"}, 400)
    if body.get("type") != "Payment":
        return _json({"error": "type must be Payment"}, 400)
    metadata = body.get("metadata")
    transaction_id = str(uuid.uuid4())
    transaction = {
        "transactionId": transaction_id,
        "amount": amount,
        "currency": currency,
        "type": "Payment",
        "status": "Pending",
        "description": body.get("description"),
        "receiverName": _MERCHANT_ADDRESS,
        "metadata": metadata if isinstance(metadata, dict) else {},
        "createdAt": _now(),
        "completedAt": None,
    }
    state.transactions[transaction_id] = transaction
    return _json(transaction, 201)


async def _get_transaction(request: web.Request) -> web.Response:
    state = request.app[_STATE]
    if not _authorized(request):
        return _json({"error": "Unauthorized"}, 401)
    transaction = state.transactions.get(request.match_info["transaction_id"])
    if transaction is None:
        return _json({"error": "Transaction not found"}, 404)
    return _json(transaction)


async def _create_payout(request: web.Request) -> web.Response:
    state = request.app[_STATE]
    if not _authorized(request):
        return _json({"error": "Unauthorized"}, 401)
    body = await _body(request)
    amount = _positive_amount(body.get("amount"))
    currency = body.get("currency")
    bank_account = body.get("bankAccountId")
    if amount is None or not isinstance(currency, str) or not currency:
        return _json({"error": "amount and currency are required"}, 400)
    if not isinstance(bank_account, str) or not bank_account:
        return _json({"error": "bankAccountId is required"}, 400)
    payout_id = f"po_{uuid.uuid4().hex[:16]}"
    state.payouts[payout_id] = {
        "id": payout_id,
        "amount": amount,
        "currency": currency,
        "bankAccountId": bank_account,
        "description": body.get("description"),
        "status": "Pending",
    }
    arrival = (datetime.now(UTC) + timedelta(days=1)).isoformat().replace("+00:00", "Z")
    return _json({"id": payout_id, "status": "Pending", "estimatedArrival": arrival}, 201)


async def _wallet_balance(request: web.Request) -> web.Response:
    # The document names this endpoint without showing its answer; this shape is the sandbox's.
    if not _authorized(request):
        return _json({"error": "Unauthorized"}, 401)
    return _json({"balances": request.app[_STATE].balances})


# --- scenario controls ---------------------------------------------------------------------------


async def _payment_scenario(request: web.Request) -> web.Response:
    state = request.app[_STATE]
    transaction = state.transactions.get(request.match_info["ref"])
    if transaction is None:
        return _json({"error": "unknown transaction"}, 404)
    name = (await _body(request)).get("scenario")
    amount: Decimal = transaction["amount"]
    half = amount / 2
    totals: dict[str, list[Decimal]] = {
        "full": [amount],
        "partial": [half],
        "over": [amount + half],
        "expire_no_funds": [],  # no expiry event exists: nothing is sent
        "expire_with_funds": [half],  # part paid; expiry itself is the ledger's own
        "late": [amount],  # funds only: whether they are late is the ledger's clock's call
        "duplicate": [amount, amount],  # the same delivery twice, byte for byte
        # Each delivery carries the total paid so far, as transaction.completed's `amount` does.
        "multiple_deposits": [half, amount],
        "out_of_order": [amount, half],
    }
    if name == "fail":
        payloads = [_transaction_failed(transaction)]
    elif name in totals:
        payloads = [_transaction_completed(transaction, total) for total in totals[name]]
    else:
        return _json({"error": f"unknown scenario {name!r}"}, 400)
    return await _deliver(state, payloads)


async def _withdrawal_scenario(request: web.Request) -> web.Response:
    state = request.app[_STATE]
    payout = state.payouts.get(request.match_info["ref"])
    if payout is None:
        return _json({"error": "unknown payout"}, 404)
    name = (await _body(request)).get("scenario")
    if name in {"processing", "manual_review"}:
        # CoinPay documents no webhook for these: the payout's status changes, nothing is sent.
        payout["status"] = "Processing" if name == "processing" else "UnderReview"
        note = "CoinPay documents no webhook for this state; none was sent"
        return _json({"deliveries": [], "note": note})
    if name == "completed":
        payout["status"] = "Completed"
        data = {
            "payoutId": payout["id"],
            "amount": payout["amount"],
            "currency": payout["currency"],
            "status": "Completed",
            "completedAt": _now(),
        }
        return await _deliver(state, [{"event": "payout.completed", "data": data}])
    if name == "failed":
        # Not in the document (it shows only payout.completed); sent so failures can be tested.
        payout["status"] = "Failed"
        data = {"payoutId": payout["id"], "error": "Bank account rejected the transfer"}
        return await _deliver(state, [{"event": "payout.failed", "data": data}])
    return _json({"error": f"unknown scenario {name!r}"}, 400)


async def _set_faults(request: web.Request) -> web.Response:
    body = await _body(request)
    operation, statuses = body.get("operation"), body.get("statuses")
    if not isinstance(operation, str) or not isinstance(statuses, list):
        return _json({"error": "operation (string) and statuses (list) are required"}, 400)
    request.app[_STATE].faults[operation] = [int(status) for status in statuses]
    return _json({"operation": operation, "statuses": statuses})


async def _expire_tokens(request: web.Request) -> web.Response:
    tokens = request.app[_STATE].tokens
    expired = len(tokens)
    tokens.clear()
    return _json({"expired": expired})


async def _list_requests(request: web.Request) -> web.Response:
    return _json({"requests": request.app[_STATE].requests})


async def _set_balances(request: web.Request) -> web.Response:
    """Sets what GET /api/wallet/balance answers. CoinPay documents no balance webhook."""
    body = await _body(request)
    balances = body.get("balances")
    if not isinstance(balances, list) or not all(isinstance(item, dict) for item in balances):
        return _json({"error": "balances must be a list of objects"}, 400)
    request.app[_STATE].balances = balances
    return _json({"balances": balances})


async def _set_webhook_url(request: web.Request) -> web.Response:
    body = await _body(request)
    url = body.get("webhook_url")
    if not isinstance(url, str) or not url:
        return _json({"error": "webhook_url is required"}, 400)
    request.app[_STATE].config.webhook_url = url
    return _json({"webhook_url": url})


# --- webhooks ------------------------------------------------------------------------------------


def _transaction_completed(transaction: dict[str, Any], total: Decimal) -> dict[str, Any]:
    transaction["status"] = "Completed"
    transaction["completedAt"] = _now()
    data = {
        "transactionId": transaction["transactionId"],
        "amount": total,
        "currency": transaction["currency"],
        "metadata": transaction["metadata"],
    }
    return {"event": "transaction.completed", "data": data}


def _transaction_failed(transaction: dict[str, Any]) -> dict[str, Any]:
    transaction["status"] = "Failed"
    data = {"transactionId": transaction["transactionId"], "error": "Payment failed on chain"}
    return {"event": "transaction.failed", "data": data}


async def _deliver(state: _State, payloads: list[dict[str, Any]]) -> web.Response:
    """POSTs each payload, one after the other, to the callback URL; reports what came back."""
    url = state.config.webhook_url
    if not url:
        return _json({"error": "no webhook URL configured"}, 409)
    deliveries: list[dict[str, Any]] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        for payload in payloads:
            # CoinPay's server is Node: its body is JSON.stringify(payload), amounts as JS numbers.
            body_text = stringify(payload)
            headers = {
                "Content-Type": _JSON,
                SIGNATURE_HEADER: sign(body_text, state.config.webhook_secret),
            }
            try:
                async with session.post(url, data=body_text.encode(), headers=headers) as answer:
                    await answer.read()
                    deliveries.append({"status": answer.status, "body": body_text})
            except (aiohttp.ClientError, TimeoutError) as error:
                deliveries.append({"status": None, "body": body_text, "error": str(error)})
    return _json({"deliveries": deliveries})


# --- helpers -------------------------------------------------------------------------------------


def _authorized(request: web.Request) -> bool:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    tokens = request.app[_STATE].tokens
    return scheme == "Bearer" and any(
        hmac.compare_digest(token.encode(), known.encode()) for known in tokens
    )


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        parsed = loads_exact(await request.read())
    except (ValueError, UnicodeDecodeError):
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _positive_amount(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, int | Decimal | str):
        return None
    try:
        amount = Decimal(value)
    except InvalidOperation:
        return None
    return amount if amount.is_finite() and amount > 0 else None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _json(payload: Any, status: int = 200) -> web.Response:
    return web.Response(text=dumps_exact(payload), status=status, content_type=_JSON)
