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

`GET /api/v1/transactions` appears in the guide (its auth examples) without its filters or its
answer. The sandbox's reading: each query parameter filters on the transaction field of that
name (`externalReference`, `fromAccountId`, `toAccountId`, `status`, ...), and the answer is a
JSON array of transactions, oldest first. The `/_sandbox/` controls (request log, faults,
scenarios, portal URL) are the shared ones of `adapters/sandbox/control.py`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_DOWN, Decimal
from typing import Any

from aiohttp import web

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
PAYMENT_SCENARIOS = frozenset(
    {"full", "partial", "over", "expire_no_funds", "expire_with_funds", "late", "fail",
     "multiple_deposits", "duplicate", "out_of_order"}
)
WITHDRAWAL_SCENARIOS = frozenset({"processing", "completed", "failed", "manual_review"})


# The keys of the ledger's table for this provider besides base_url (a fleet makes them up),
# and whether the callback URL is set once, in the provider's portal (adapters/sandbox/fleet.py).
LEDGER_TABLE_KEYS = ("username", "password", "webhook_secret")
HAS_PORTAL = True


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
    last_timestamp: datetime | None = None

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

STATE = web.AppKey("payment_engine_sandbox", _State)


def create_sandbox_app(config: SandboxConfig) -> web.Application:
    state = _State(config)
    transactions = "/api/v1/transactions"
    app = sandbox_app(
        SandboxSpec(
            provider="Payment Engine",
            api=[
                ApiRoute("POST", "/api/v1/auth/login", _login, "login"),
                ApiRoute("POST", "/api/v1/auth/refresh", _refresh, "login_refresh", ("refresh",)),
                ApiRoute(
                    "POST", transactions, _create_transaction, _creation_operation,
                    ("create_transaction",), ("create_payment", "create_withdrawal"),
                ),
                ApiRoute(
                    "GET", transactions, _list_transactions, _lookup_operation,
                    ("list_transactions",), ("find_payment", "find_withdrawal"),
                ),
                ApiRoute(
                    "GET", transactions + "/{id}", _get_transaction, "query_payment",
                    ("get_transaction",),
                ),
                ApiRoute(
                    "GET", "/api/v1/accounts/{id}/balance", _get_balance, "fetch_balances",
                    ("get_balance",),
                ),
            ],
            fault_answer=lambda status: _error(
                state, status, _FAULT_CODES.get(status, "INTERNAL_ERROR"), "fault"
            ),
            payments=Scenarios(
                PAYMENT_SCENARIOS,
                lambda ref, name: _payment_deliveries(state, ref, name),
            ),
            withdrawals=Scenarios(
                WITHDRAWAL_SCENARIOS,
                lambda ref, name: _withdrawal_deliveries(state, ref, name),
            ),
            expire_tokens=lambda body: _expire_tokens(state, body),
            set_balances=lambda body: _balances(state, body),
            sign=lambda raw: _signed_headers(config.webhook_secret, raw),
            has_portal=HAS_PORTAL,
            portal_url=config.webhook_url,
            log_fields=_auth_used,
        )
    )
    app[STATE] = state
    return app


def _auth_used(request: web.Request) -> dict[str, Any]:
    auth = "bearer" if "Authorization" in request.headers else None
    return {"auth": "api_key" if "X-API-Key" in request.headers else auth}


async def _creation_operation(request: web.Request) -> str:
    """A transfer out of the merchant account is the ledger's withdrawal, any other a payment."""
    body = await _body(request)
    merchant = request.app[STATE].config.merchant_account_id
    outgoing = body is not None and body.get("fromAccountId") == merchant
    return "create_withdrawal" if outgoing else "create_payment"


async def _lookup_operation(request: web.Request) -> str:
    merchant = request.app[STATE].config.merchant_account_id
    outgoing = request.query.get("fromAccountId") == merchant
    return "find_withdrawal" if outgoing else "find_payment"


# ---------------------------------------------------------------- plumbing


def _error(
    state: _State, status: int, code: str, message: str, details: dict[str, Any] | None = None
) -> web.Response:
    error = {"code": code, "message": message, "details": details or {},
             "timestamp": state.now(), "requestId": f"req_{uuid.uuid4().hex[:12]}"}
    return _json({"error": error}, status)


def _json(body: Any, status: int = 200) -> web.Response:
    return json_response(body, status)


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


async def _list_transactions(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if not _authorized(request):
        return _unauthorized(state)
    found = [
        transaction.to_json()
        for transaction in state.transactions.values()
        if all(_field_is(transaction.to_json(), key, value) for key, value in request.query.items())
    ]
    return _json(found)


def _field_is(shown: dict[str, Any], key: str, wanted: str) -> bool:
    value = shown.get(key)
    return value is not None and not isinstance(value, dict) and str(value) == wanted


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


def _signed_headers(secret: str, raw: bytes) -> dict[str, str]:
    """Signed as the guide says: `sha256=` + hex HMAC-SHA256 of the raw body."""
    digest = hmac.new(secret.encode("utf-8"), raw, hashlib.sha256).hexdigest()
    return {"Content-Type": "application/json", "X-Webhook-Signature": f"sha256={digest}"}


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


def _scenario_target(state: _State, ref: str, *, outgoing: bool) -> _Transaction:
    transaction = state.transactions.get(ref)
    merchant = state.config.merchant_account_id
    if transaction is None or (transaction.from_account == merchant) != outgoing:
        raise ControlRefused(404, "no such transaction")
    if transaction.status not in {"PENDING", "PROCESSING"}:
        raise ControlRefused(409, f"transaction is already {transaction.status}")
    return transaction


def _payment_deliveries(state: _State, ref: str, scenario: str) -> Deliveries:
    payment = _scenario_target(state, ref, outgoing=False)
    return Deliveries(_payment_bodies(state, payment, scenario))


def _withdrawal_deliveries(state: _State, ref: str, scenario: str) -> Deliveries:
    withdrawal = _scenario_target(state, ref, outgoing=True)
    note = None
    if scenario == "manual_review":
        note = "Payment Engine has no manual-review state; sent PROCESSING, the nearest"
    return Deliveries(_withdrawal_bodies(state, withdrawal, scenario), note=note)


def _expire_tokens(state: _State, body: dict[str, Any]) -> dict[str, Any]:
    """Invalidates every access token, and the refresh tokens unless `keep_refresh_tokens`."""
    state.access_tokens.clear()
    if not body.get("keep_refresh_tokens"):
        state.refresh_tokens.clear()
    return {"expired": True}


def _balances(state: _State, body: dict[str, Any]) -> Deliveries:
    """Sets balances (`{"balances": [{accountId, currencyCode, availableBalance}]}`) and reports
    each one set (every held balance when none is given) with `account.balance.updated`."""
    entries = body.get("balances", [body] if "accountId" in body else [])
    try:
        for entry in entries:
            key = (str(entry["accountId"]), str(entry["currencyCode"]))
            state.balances[key] = to_decimal(entry["availableBalance"])
    except (KeyError, TypeError, ValueError, ArithmeticError) as error:
        raise ControlRefused(400, f"bad balance entry: {error}") from None
    keys = [(str(e["accountId"]), str(e["currencyCode"])) for e in entries] or list(state.balances)
    return Deliveries([
        _event(state, "account.balance.updated",
               {"accountId": account, "availableBalance": _as_shown(state.balances[account, code]),
                "currencyCode": code})
        for account, code in keys
    ])
