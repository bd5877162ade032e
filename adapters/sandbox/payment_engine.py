"""A Payment Engine sandbox: the documented transaction API, auth and signed webhooks, in memory.

Provider API (as the integration guide describes it): `POST /api/v1/auth/login`,
`POST /api/v1/auth/refresh`, `POST /api/v1/transactions`, `GET /api/v1/transactions/{id}` (the
SDK's `getStatus`; the guide gives no path) and `GET /api/v1/accounts/{id}/balance`, with Bearer
tokens or `X-API-Key`, errors as `{"error": {code, message, details, timestamp, requestId}}`, and
webhooks `{eventId, eventType, timestamp, data}` signed `X-Webhook-Signature: sha256=<hex>` over
the raw body, posted to the URL set in the "developer portal" (`SandboxConfig.webhook_url`, or
`POST /_sandbox/portal`).

The guide has no words for expiry, partial or over payment, several deposits or manual review.
What the scenarios send instead (an interpretation, reported to the ledger's issue note):
- partial/over: the payment's transaction completes with a different `amount`;
- several deposits: the payment's transaction completes with a part, and each further part is
  its own completed transaction into the merchant account with the same `externalReference`;
- expiry: `transaction.failed` with `failureReason` "EXPIRED"; funds after it (late) arrive as a
  further transaction, since a failed transaction cannot complete;
- manual review: the transaction is reported PROCESSING, the nearest state the guide has.
Transaction events carry the transaction's own documented fields (`fromAccountId`,
`toAccountId`, `paymentTypeId`, `status`) in `data` so that a receiver can tell a withdrawal
(money leaving the merchant account) from a payment.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_DOWN, Decimal
from typing import Any

import aiohttp
from aiohttp import web

from adapters.providers.http_client import dumps_exact
from ledger.money import loads_exact, to_decimal

_FAULT_CODES = {
    400: "INVALID_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    422: "INVALID_ACCOUNT_STATUS",
    429: "RATE_LIMIT_EXCEEDED",
    500: "INTERNAL_ERROR",
    503: "SERVICE_UNAVAILABLE",
}
# Client operation names accepted by `/_sandbox/faults` beside route names and paths.
_OPERATION_ALIASES = {
    "create_payment": "create_transaction",
    "create_withdrawal": "create_transaction",
    "query_payment": "get_transaction",
    "fetch_balances": "get_balance",
}
PAYMENT_SCENARIOS = frozenset(
    {"full", "partial", "over", "expire_no_funds", "expire_with_funds", "late", "fail",
     "multiple_deposits", "duplicate", "out_of_order"}
)
WITHDRAWAL_SCENARIOS = frozenset({"processing", "completed", "failed", "manual_review"})


@dataclass
class SandboxConfig:
    username: str = "sandbox-user"
    password: str = "sandbox-password"  # noqa: S105 - a sandbox credential, not a secret
    api_key: str | None = None
    webhook_secret: str = "sandbox-webhook-secret"  # noqa: S105 - sandbox
    webhook_url: str | None = None  # set once, as in the provider's developer portal
    merchant_account_id: str = "merchant"
    token_lifetime_seconds: int = 3600
    default_currency: str = "USD"


@dataclass
class _Transaction:
    id: str
    from_account: str | None
    to_account: str
    payment_type_id: str
    amount: Decimal
    currency: str
    description: str | None
    external_reference: str | None
    metadata: dict[str, Any]
    status: str = "PENDING"
    failure_reason: str | None = None
    created_at: str = ""
    updated_at: str = ""

    def to_json(self) -> dict[str, Any]:
        return _present(
            id=self.id,
            fromAccountId=self.from_account,
            toAccountId=self.to_account,
            paymentTypeId=self.payment_type_id,
            amount=_as_shown(self.amount),
            currencyCode=self.currency,
            description=self.description,
            externalReference=self.external_reference,
            metadata=self.metadata,
            status=self.status,
            failureReason=self.failure_reason,
            createdAt=self.created_at,
            updatedAt=self.updated_at,
        )

    def event_data(self) -> dict[str, Any]:
        """The transaction as the webhook `data` names it (`transactionId`, references)."""
        return _present(
            transactionId=self.id,
            transactionReference=self.external_reference,
            externalReference=self.external_reference,
            fromAccountId=self.from_account,
            toAccountId=self.to_account,
            paymentTypeId=self.payment_type_id,
            amount=_as_shown(self.amount),
            currencyCode=self.currency,
            status=self.status,
            failureReason=self.failure_reason,
        )


@dataclass
class _State:
    config: SandboxConfig
    transactions: dict[str, _Transaction] = field(default_factory=dict)
    balances: dict[tuple[str, str], Decimal] = field(default_factory=dict)
    access_tokens: dict[str, float] = field(default_factory=dict)  # token -> monotonic deadline
    refresh_tokens: set[str] = field(default_factory=set)
    faults: dict[str, deque[int]] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)
    last_timestamp: datetime | None = None
    session: aiohttp.ClientSession | None = None

    def now(self) -> str:
        """Event times strictly increase, so "after expiry" is visible even within a millisecond."""
        moment = datetime.now(UTC)
        moment = moment.replace(microsecond=moment.microsecond // 1000 * 1000)
        if self.last_timestamp is not None and moment <= self.last_timestamp:
            moment = self.last_timestamp + timedelta(milliseconds=1)
        self.last_timestamp = moment
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"

    def issue_tokens(self) -> dict[str, Any]:
        access_token, refresh_token = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        lifetime = self.config.token_lifetime_seconds
        self.access_tokens[access_token] = time.monotonic() + lifetime
        self.refresh_tokens.add(refresh_token)
        return {
            "access_token": access_token,
            "refresh_token": refresh_token,
            "token_type": "Bearer",
            "expires_in": lifetime,
            "scope": "transaction:read transaction:create account:read",
        }

    def credit(self, account: str | None, currency: str, amount: Decimal) -> None:
        if account is not None:
            key = (account, currency)
            self.balances[key] = self.balances.get(key, Decimal(0)) + amount

    def take_fault(self, request: web.Request) -> int | None:
        route = request.match_info.route
        names = {request.path, route.name or "", getattr(route.resource, "canonical", "")}
        for name in names - {""}:
            queued = self.faults.get(name)
            if queued:
                return queued.popleft()
        return None


STATE = web.AppKey("payment_engine_sandbox", _State)


def create_sandbox_app(config: SandboxConfig) -> web.Application:
    app = web.Application(middlewares=[_observe])
    app[STATE] = _State(config)
    app.router.add_post("/api/v1/auth/login", _login, name="login")
    app.router.add_post("/api/v1/auth/refresh", _refresh, name="refresh")
    app.router.add_post("/api/v1/transactions", _create_transaction, name="create_transaction")
    app.router.add_get("/api/v1/transactions/{id}", _get_transaction, name="get_transaction")
    app.router.add_get("/api/v1/accounts/{id}/balance", _get_balance, name="get_balance")
    app.router.add_post("/_sandbox/payments/{ref}/scenario", _payment_scenario)
    app.router.add_post("/_sandbox/withdrawals/{ref}/scenario", _withdrawal_scenario)
    app.router.add_post("/_sandbox/faults", _faults)
    app.router.add_post("/_sandbox/expire_tokens", _expire_tokens)
    app.router.add_get("/_sandbox/requests", _requests)
    app.router.add_post("/_sandbox/balances", _balances)
    app.router.add_post("/_sandbox/portal", _portal)
    app.on_cleanup.append(_close_session)
    return app


async def _close_session(app: web.Application) -> None:
    session = app[STATE].session
    if session is not None:
        await session.close()


# ---------------------------------------------------------------- plumbing


@web.middleware
async def _observe(request: web.Request, handler: Any) -> web.StreamResponse:
    """Logs provider API requests and answers queued faults before anything else runs."""
    state = request.app[STATE]
    if not request.path.startswith("/_sandbox/"):
        auth = "bearer" if "Authorization" in request.headers else None
        auth = "api_key" if "X-API-Key" in request.headers else auth
        state.requests.append({"method": request.method, "path": request.path, "auth": auth})
        status = state.take_fault(request)
        if status is not None:
            return _error(state, status, _FAULT_CODES.get(status, "INTERNAL_ERROR"), "fault")
    response: web.StreamResponse = await handler(request)
    return response


def _error(
    state: _State, status: int, code: str, message: str, details: dict[str, Any] | None = None
) -> web.Response:
    error = {"code": code, "message": message, "details": details or {},
             "timestamp": state.now(), "requestId": f"req_{uuid.uuid4().hex[:12]}"}
    return _json({"error": error}, status)


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(text=dumps_exact(body), status=status, content_type="application/json")


async def _body(request: web.Request) -> dict[str, Any] | None:
    try:
        parsed = loads_exact(await request.read())
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _authorized(request: web.Request) -> bool:
    state = request.app[STATE]
    api_key = request.headers.get("X-API-Key")
    if api_key is not None:
        expected = state.config.api_key
        return expected is not None and hmac.compare_digest(api_key.encode(), expected.encode())
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    deadline = state.access_tokens.get(token) if scheme == "Bearer" else None
    return deadline is not None and time.monotonic() < deadline


def _unauthorized(state: _State) -> web.Response:
    return _error(state, 401, "UNAUTHORIZED", "Authentication required")


def _present(**values: Any) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


def _exponent(amount: Decimal) -> int:
    exponent = amount.as_tuple().exponent
    return exponent if isinstance(exponent, int) else 0


def _as_shown(amount: Decimal) -> Decimal:
    """Amounts as the guide shows them (1000.00): at least two decimal places."""
    return amount.quantize(Decimal("0.01")) if _exponent(amount) > -2 else amount


# ---------------------------------------------------------------- provider API


async def _login(request: web.Request) -> web.Response:
    state = request.app[STATE]
    body = await _body(request)
    if body is None or not isinstance(body.get("username"), str):
        return _error(state, 400, "INVALID_REQUEST", "username and password are required")
    given = f"{body.get('username')}\n{body.get('password')}".encode()
    expected = f"{state.config.username}\n{state.config.password}".encode()
    if not hmac.compare_digest(given, expected):
        return _unauthorized(state)
    return _json(state.issue_tokens())


async def _refresh(request: web.Request) -> web.Response:
    state = request.app[STATE]
    body = await _body(request)
    token = body.get("refresh_token") if body else None
    if not isinstance(token, str) or token not in state.refresh_tokens:
        return _unauthorized(state)
    state.refresh_tokens.discard(token)  # refresh tokens are single use
    return _json(state.issue_tokens())


async def _create_transaction(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if not _authorized(request):
        return _unauthorized(state)
    body = await _body(request)
    problem = _invalid_transaction(body)
    if body is None or problem:
        return _error(state, 400, "INVALID_REQUEST", problem or "body must be a JSON object")
    amount, currency, source = to_decimal(body["amount"]), body["currencyCode"], body.get(
        "fromAccountId"
    )
    if source is not None:
        available = state.balances.get((source, currency), Decimal(0))
        if available < amount:
            return _error(
                state, 422, "INSUFFICIENT_FUNDS",
                "Account does not have sufficient funds for this transaction",
                {"accountId": source, "requestedAmount": _as_shown(amount),
                 "availableBalance": _as_shown(available)},
            )
        state.credit(source, currency, -amount)  # held from the moment the transfer is accepted
    now = state.now()
    transaction = _Transaction(
        id=f"txn_{uuid.uuid4().hex[:16]}", from_account=source, to_account=body["toAccountId"],
        payment_type_id=body["paymentTypeId"], amount=amount, currency=currency,
        description=body.get("description"), external_reference=body.get("externalReference"),
        metadata=body.get("metadata") or {}, created_at=now, updated_at=now,
    )
    state.transactions[transaction.id] = transaction
    return _json(transaction.to_json(), 201)


def _invalid_transaction(body: dict[str, Any] | None) -> str:
    if body is None:
        return ""
    for name in ("toAccountId", "paymentTypeId", "currencyCode"):
        if not isinstance(body.get(name), str) or not body[name]:
            return f"{name} is required"
    amount = body.get("amount")
    # The guide's amounts are JSON numbers (1000.00); a string or a float-typed value is refused.
    if isinstance(amount, bool) or not isinstance(amount, int | Decimal) or amount <= 0:
        return "amount must be a positive JSON number"
    for name in ("fromAccountId", "externalReference", "description"):
        if body.get(name) is not None and not isinstance(body[name], str):
            return f"{name} must be a string"
    if body.get("metadata") is not None and not isinstance(body["metadata"], dict):
        return "metadata must be an object"
    return ""


async def _get_transaction(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if not _authorized(request):
        return _unauthorized(state)
    transaction = state.transactions.get(request.match_info["id"])
    if transaction is None:
        return _error(state, 404, "NOT_FOUND", "Transaction not found")
    return _json(transaction.to_json())


async def _get_balance(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if not _authorized(request):
        return _unauthorized(state)
    account = request.match_info["id"]
    # The guide's balance has one currency; `currencyCode` picks one where several are held.
    held = [c for (a, c) in state.balances if a == account]
    currency = request.query.get("currencyCode") or (held[0] if held else None)
    currency = currency or state.config.default_currency
    available = state.balances.get((account, currency), Decimal(0))
    return _json(
        {"accountId": account, "availableBalance": _as_shown(available), "currencyCode": currency}
    )


# ---------------------------------------------------------------- webhooks


def _event(state: _State, event_type: str, data: dict[str, Any]) -> str:
    body = {"eventId": f"evt_{uuid.uuid4().hex}", "eventType": event_type,
            "timestamp": state.now(), "data": data}
    return dumps_exact(body)


async def _deliver(state: _State, bodies: list[str]) -> list[dict[str, Any]]:
    """POSTs each body in turn, signed as the guide says, and reports the receiver's status."""
    url = state.config.webhook_url
    if url is None:
        return []
    if state.session is None or state.session.closed:
        state.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
    results: list[dict[str, Any]] = []
    for body in bodies:
        raw = body.encode("utf-8")
        digest = hmac.new(state.config.webhook_secret.encode("utf-8"), raw, hashlib.sha256)
        headers = {"Content-Type": "application/json",
                   "X-Webhook-Signature": f"sha256={digest.hexdigest()}"}
        try:
            async with state.session.post(url, data=raw, headers=headers) as response:
                await response.read()
                results.append({"status": response.status, "body": body})
        except (aiohttp.ClientError, TimeoutError) as error:
            results.append({"status": None, "body": body, "error": str(error)})
    return results


def _complete(state: _State, transaction: _Transaction, amount: Decimal) -> str:
    transaction.status, transaction.amount = "COMPLETED", amount
    transaction.updated_at = state.now()
    state.credit(transaction.to_account, transaction.currency, amount)
    return _event(state, "transaction.completed", transaction.event_data())


def _fail(state: _State, transaction: _Transaction, reason: str) -> str:
    transaction.status, transaction.failure_reason = "FAILED", reason
    transaction.updated_at = state.now()
    state.credit(transaction.from_account, transaction.currency, transaction.amount)  # release
    return _event(state, "transaction.failed", transaction.event_data())


def _further_deposit(state: _State, payment: _Transaction, amount: Decimal) -> str:
    """Another transfer into the merchant account for the same order (same externalReference)."""
    count = sum(1 for t in state.transactions if t.startswith(f"{payment.id}-d")) + 2
    now = state.now()
    deposit = _Transaction(
        id=f"{payment.id}-d{count}", from_account=None, to_account=payment.to_account,
        payment_type_id=payment.payment_type_id, amount=amount, currency=payment.currency,
        description=payment.description, external_reference=payment.external_reference,
        metadata=dict(payment.metadata), created_at=now, updated_at=now,
    )
    state.transactions[deposit.id] = deposit
    return _complete(state, deposit, amount)


def _split(amount: Decimal, parts: int) -> list[Decimal]:
    """Parts on the amount's own scale, adding up exactly to it; fewer if it is too small."""
    unit = Decimal(1).scaleb(min(_exponent(amount), -2))
    for count in range(parts, 1, -1):
        share = (amount / count).quantize(unit, rounding=ROUND_DOWN)
        if share > 0:
            return [share] * (count - 1) + [amount - share * (count - 1)]
    return [amount]


def _payment_bodies(state: _State, payment: _Transaction, scenario: str) -> list[str]:
    amount = payment.amount
    half = _split(amount, 2)[0]
    # Lazy plans: only the chosen scenario touches the state.
    plans: dict[str, Callable[[], list[str]]] = {
        "full": lambda: [_complete(state, payment, amount)],
        "duplicate": lambda: [_complete(state, payment, amount)] * 2,  # the same body twice
        "partial": lambda: [_complete(state, payment, half)],
        "over": lambda: [_complete(state, payment, amount + half)],
        "expire_no_funds": lambda: [_fail(state, payment, "EXPIRED")],
        # The payment's own transaction never completes; the funds came as a further transfer.
        "expire_with_funds": lambda: [
            _further_deposit(state, payment, half), _fail(state, payment, "EXPIRED")
        ],
        "late": lambda: [
            _fail(state, payment, "EXPIRED"), _further_deposit(state, payment, amount)
        ],
        "fail": lambda: [_fail(state, payment, "INSUFFICIENT_FUNDS")],
        "multiple_deposits": lambda: _several_deposits(state, payment),
        "out_of_order": lambda: _several_deposits(state, payment)[::-1],
    }
    return plans[scenario]()


def _several_deposits(state: _State, payment: _Transaction) -> list[str]:
    first, *rest = _split(payment.amount, 3)
    bodies = [_complete(state, payment, first)]
    return bodies + [_further_deposit(state, payment, part) for part in rest]


def _withdrawal_bodies(state: _State, withdrawal: _Transaction, scenario: str) -> list[str]:
    if scenario in {"processing", "manual_review"}:
        withdrawal.status, withdrawal.updated_at = "PROCESSING", state.now()
        return [_event(state, "transaction.created", withdrawal.event_data())]
    if scenario == "completed":
        withdrawal.status, withdrawal.updated_at = "COMPLETED", state.now()
        return [_event(state, "transaction.completed", withdrawal.event_data())]
    return [_fail(state, withdrawal, "INVALID_ACCOUNT_STATUS")]


# ---------------------------------------------------------------- sandbox controls


async def _scenario_target(
    request: web.Request, names: frozenset[str], *, outgoing: bool
) -> tuple[_Transaction, str] | web.Response:
    state = request.app[STATE]
    body = await _body(request)
    scenario = body.get("scenario") if body else None
    if scenario not in names:
        return _json({"error": f"scenario must be one of {sorted(names)}"}, 400)
    transaction = state.transactions.get(request.match_info["ref"])
    merchant = state.config.merchant_account_id
    if transaction is None or (transaction.from_account == merchant) != outgoing:
        return _json({"error": "no such transaction"}, 404)
    if transaction.status not in {"PENDING", "PROCESSING"}:
        return _json({"error": f"transaction is already {transaction.status}"}, 409)
    if state.config.webhook_url is None:
        return _json({"error": "no webhook_url configured (POST /_sandbox/portal)"}, 409)
    return transaction, str(scenario)


async def _payment_scenario(request: web.Request) -> web.Response:
    target = await _scenario_target(request, PAYMENT_SCENARIOS, outgoing=False)
    if isinstance(target, web.Response):
        return target
    state = request.app[STATE]
    bodies = _payment_bodies(state, *target)
    return _json({"deliveries": await _deliver(state, bodies)})


async def _withdrawal_scenario(request: web.Request) -> web.Response:
    target = await _scenario_target(request, WITHDRAWAL_SCENARIOS, outgoing=True)
    if isinstance(target, web.Response):
        return target
    state = request.app[STATE]
    bodies = _withdrawal_bodies(state, *target)
    result: dict[str, Any] = {"deliveries": await _deliver(state, bodies)}
    if target[1] == "manual_review":
        result["note"] = "Payment Engine has no manual-review state; sent PROCESSING, the nearest"
    return _json(result)


async def _faults(request: web.Request) -> web.Response:
    state = request.app[STATE]
    body = await _body(request)
    operation = body.get("operation") if body else None
    statuses = body.get("statuses") if body else None
    if not isinstance(operation, str) or not isinstance(statuses, list):
        return _json({"error": "operation (str) and statuses (list) are required"}, 400)
    operation = _OPERATION_ALIASES.get(operation, operation)
    state.faults.setdefault(operation, deque()).extend(int(s) for s in statuses)
    return _json({"operation": operation, "queued": list(state.faults[operation])})


async def _expire_tokens(request: web.Request) -> web.Response:
    """Invalidates every access token, and the refresh tokens unless `keep_refresh_tokens`."""
    state = request.app[STATE]
    body = await _body(request) or {}
    state.access_tokens.clear()
    if not body.get("keep_refresh_tokens"):
        state.refresh_tokens.clear()
    return _json({"expired": True})


async def _requests(request: web.Request) -> web.Response:
    return _json({"requests": request.app[STATE].requests})


async def _balances(request: web.Request) -> web.Response:
    """Sets balances (`{"balances": [{accountId, currencyCode, availableBalance}]}`) and reports
    each one set (every held balance when none is given) with `account.balance.updated`."""
    state = request.app[STATE]
    body = await _body(request)
    if body is None:
        return _json({"error": "body must be a JSON object"}, 400)
    entries = body.get("balances", [body] if "accountId" in body else [])
    try:
        for entry in entries:
            key = (str(entry["accountId"]), str(entry["currencyCode"]))
            state.balances[key] = to_decimal(entry["availableBalance"])
    except (KeyError, TypeError, ValueError, ArithmeticError) as error:
        return _json({"error": f"bad balance entry: {error}"}, 400)
    keys = [(str(e["accountId"]), str(e["currencyCode"])) for e in entries] or list(state.balances)
    bodies = [
        _event(state, "account.balance.updated",
               {"accountId": account, "availableBalance": _as_shown(state.balances[account, code]),
                "currencyCode": code})
        for account, code in keys
    ]
    return _json({"deliveries": await _deliver(state, bodies)})


async def _portal(request: web.Request) -> web.Response:
    """Sets the webhook URL, as a merchant would in the provider's developer portal."""
    state = request.app[STATE]
    body = await _body(request)
    url = body.get("webhook_url") if body else None
    if not isinstance(url, str):
        return _json({"error": "webhook_url is required"}, 400)
    state.config.webhook_url = url
    return _json({"webhook_url": url})
