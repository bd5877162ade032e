"""A CoinPay sandbox: the documented API (JWT login, transactions, payouts, wallet balance) kept in
memory, and webhooks signed as CoinPay signs them, sent to the callback URL set in its "portal".

Run it on loopback with an ephemeral port (aiohttp `TestServer`, or `web.AppRunner` +
`TCPSite(port=0)`). Importing this module starts nothing. The `/_sandbox/` controls (request log,
faults, scenarios, portal URL) are the shared ones of `adapters/sandbox/control.py`.

CoinPay has no words for a partial, over- or late payment, nor for expiry: it only says
`transaction.completed` with an amount, or `transaction.failed`. So the sandbox expresses partial
and over payments as a `transaction.completed` whose amount (the total paid so far) differs from
the payment's amount, sends NOTHING at expiry (the ledger expires payments by its own clock), and
for `late` only sends the full amount (the caller makes sure the ledger's clock has passed the
expiry first).

`GET /api/transactions?<filters>` is the document's `listTransactions(filters)`, whose filters
and answer it does not show. The sandbox's reading: each query parameter must equal the
transaction's field of that name or, failing one, its metadata's (`?orderId=...` finds the
transactions created with `metadata.orderId`); the answer is a JSON array of transactions,
oldest first. Payouts have no list or query in the document, so the sandbox has none.
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

from adapters.providers.coinpay.javascript_json import stringify
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

if TYPE_CHECKING:
    from collections.abc import Mapping

    from aiohttp import web

SIGNATURE_HEADER = "x-signature"
_MERCHANT_ADDRESS = "0x7a3F5c2b9D1e4A8f6C0b3E5d7A9c1F2e4B6d8C0a"
_JSON = "application/json"
PAYMENT_SCENARIOS = frozenset(
    {"full", "partial", "over", "expire_no_funds", "expire_with_funds", "late", "duplicate",
     "multiple_deposits", "out_of_order", "fail"}
)
WITHDRAWAL_SCENARIOS = frozenset({"processing", "manual_review", "completed", "failed"})


# The keys of the ledger's table for this provider besides base_url (a fleet makes them up),
# and whether the callback URL is set once, in the provider's portal (adapters/sandbox/fleet.py).
LEDGER_TABLE_KEYS = ("username", "password", "webhook_secret")
HAS_PORTAL = True


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

    def authorized(self, request: web.Request) -> bool:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        return scheme == "Bearer" and any(
            hmac.compare_digest(token.encode(), known.encode()) for known in self.tokens
        )


def create_sandbox_app(config: SandboxConfig) -> web.Application:
    state = _State(config)
    api = _Api(state)
    return sandbox_app(
        SandboxSpec(
            provider="coinpay",
            api=[
                ApiRoute("POST", "/api/auth/login", api.login, "login"),
                ApiRoute("POST", "/api/transactions", api.create_transaction, "create_payment"),
                ApiRoute("GET", "/api/transactions", api.list_transactions, "find_payment"),
                ApiRoute(
                    "GET", "/api/transactions/{transaction_id}", api.get_transaction,
                    "query_payment",
                ),
                ApiRoute("POST", "/api/payouts", api.create_payout, "create_withdrawal"),
                ApiRoute("GET", "/api/wallet/balance", api.wallet_balance, "fetch_balances"),
            ],
            fault_answer=lambda status: _json({"error": f"injected fault {status}"}, status),
            payments=Scenarios(PAYMENT_SCENARIOS, lambda ref, name: _payment(state, ref, name)),
            withdrawals=Scenarios(
                WITHDRAWAL_SCENARIOS, lambda ref, name: _withdrawal(state, ref, name)
            ),
            expire_tokens=lambda _body: _expire_tokens(state),
            set_balances=lambda body: _set_balances(state, body),
            sign=lambda raw: {
                "Content-Type": _JSON,
                SIGNATURE_HEADER: sign(raw.decode(), config.webhook_secret),
            },
            has_portal=HAS_PORTAL,
            portal_url=config.webhook_url,
        )
    )


def sign(body_text: str, secret: str) -> str:
    """The body the sandbox sends is JSON.stringify(payload) itself, so it is also the signing
    input (what the receiver rebuilds from the parsed body)."""
    return hmac.new(secret.encode(), body_text.encode(), hashlib.sha256).hexdigest()


# --- the documented API -------------------------------------------------------------------------


class _Api:
    def __init__(self, state: _State) -> None:
        self.state = state

    async def login(self, request: web.Request) -> web.Response:
        config = self.state.config
        body = await _body(request)
        username, password = body.get("username"), body.get("password")
        if not (
            isinstance(username, str)
            and isinstance(password, str)
            and hmac.compare_digest(username.encode(), config.username.encode())
            and hmac.compare_digest(password.encode(), config.password.encode())
        ):
            return _json({"error": "Invalid credentials"}, 401)
        token = secrets.token_urlsafe(24)
        self.state.tokens.add(token)
        return _json({"token": token, "expiresIn": config.token_lifetime_minutes})

    async def create_transaction(self, request: web.Request) -> web.Response:
        if not self.state.authorized(request):
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
        self.state.transactions[transaction_id] = transaction
        return _json(transaction, 201)

    async def list_transactions(self, request: web.Request) -> web.Response:
        if not self.state.authorized(request):
            return _json({"error": "Unauthorized"}, 401)
        found = [
            transaction
            for transaction in self.state.transactions.values()
            if all(_field_is(transaction, key, value) for key, value in request.query.items())
        ]
        return _json(found)

    async def get_transaction(self, request: web.Request) -> web.Response:
        if not self.state.authorized(request):
            return _json({"error": "Unauthorized"}, 401)
        transaction = self.state.transactions.get(request.match_info["transaction_id"])
        if transaction is None:
            return _json({"error": "Transaction not found"}, 404)
        return _json(transaction)

    async def create_payout(self, request: web.Request) -> web.Response:
        if not self.state.authorized(request):
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
        self.state.payouts[payout_id] = {
            "id": payout_id,
            "amount": amount,
            "currency": currency,
            "bankAccountId": bank_account,
            "description": body.get("description"),
            "status": "Pending",
        }
        arrival = (datetime.now(UTC) + timedelta(days=1)).isoformat().replace("+00:00", "Z")
        return _json({"id": payout_id, "status": "Pending", "estimatedArrival": arrival}, 201)

    async def wallet_balance(self, request: web.Request) -> web.Response:
        # The document names this endpoint without showing its answer; this shape is the sandbox's.
        if not self.state.authorized(request):
            return _json({"error": "Unauthorized"}, 401)
        return _json({"balances": self.state.balances})


def _field_is(transaction: Mapping[str, Any], key: str, wanted: str) -> bool:
    value = transaction.get(key, transaction["metadata"].get(key))
    return value is not None and str(value) == wanted


# --- scenarios and controls ----------------------------------------------------------------------


def _payment(state: _State, ref: str, name: str) -> Deliveries:
    transaction = state.transactions.get(ref)
    if transaction is None:
        raise ControlRefused(404, "unknown transaction")
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
        return _deliveries([_transaction_failed(transaction)])
    return _deliveries([_transaction_completed(transaction, total) for total in totals[name]])


def _withdrawal(state: _State, ref: str, name: str) -> Deliveries:
    payout = state.payouts.get(ref)
    if payout is None:
        raise ControlRefused(404, "unknown payout")
    if name in {"processing", "manual_review"}:
        # CoinPay documents no webhook for these: the payout's status changes, nothing is sent.
        payout["status"] = "Processing" if name == "processing" else "UnderReview"
        return Deliveries([], note="CoinPay documents no webhook for this state; none was sent")
    if name == "completed":
        payout["status"] = "Completed"
        data = {
            "payoutId": payout["id"],
            "amount": payout["amount"],
            "currency": payout["currency"],
            "status": "Completed",
            "completedAt": _now(),
        }
        return _deliveries([{"event": "payout.completed", "data": data}])
    # Not in the document (it shows only payout.completed); sent so failures can be tested.
    payout["status"] = "Failed"
    data = {"payoutId": payout["id"], "error": "Bank account rejected the transfer"}
    return _deliveries([{"event": "payout.failed", "data": data}])


def _expire_tokens(state: _State) -> dict[str, Any]:
    expired = len(state.tokens)
    state.tokens.clear()
    return {"expired": expired}


def _set_balances(state: _State, body: dict[str, Any]) -> dict[str, Any]:
    """Sets what GET /api/wallet/balance answers. CoinPay documents no balance webhook."""
    balances = body.get("balances")
    if not isinstance(balances, list) or not all(isinstance(item, dict) for item in balances):
        raise ControlRefused(400, "balances must be a list of objects")
    state.balances = balances
    return {"balances": balances}


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


def _deliveries(payloads: list[dict[str, Any]]) -> Deliveries:
    # CoinPay's server is Node: its body is JSON.stringify(payload), amounts as JS numbers.
    return Deliveries([stringify(payload) for payload in payloads])


# --- helpers -------------------------------------------------------------------------------------


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
    return json_response(payload, status)
