"""A stand-in for the Cryptofuse API, as its integration document describes it.

Provider endpoints: `POST /o/token/` (OAuth2 client credentials, form-encoded), `POST /payments/`,
`POST /payments/status/`, `GET /user/balances/`, `POST /withdrawal/validate-address/`,
`POST /withdrawal/estimate/`, `POST /withdrawal/`. Every one but the token endpoint wants
`Authorization: Bearer <token>` and answers 401 without a live one. Webhooks go to the
`callback_url` of each payment or withdrawal, signed with `X-Webhook-Signature` = hex
HMAC-SHA256 of the raw body, and shaped like the document's examples (amounts as strings with 8
places, USD with 2, `final_usd_value` a bare number).

Testnet amounts (USD) start webhooks by themselves shortly after the create answer: 123.45 full,
234.56 full after `delayed_success_seconds`, 345.67 partial (50%), 456.78 overpaid (150%),
567.89 expired, 678.90 failed.

The document offers no lookup of a payment by the merchant's `order_id`, nor of a withdrawal at
all (only `POST /payments/status/` by `transaction_id`), so the sandbox has none.

Test controls under `/_sandbox/` (request log, faults, scenarios) are the shared ones of
`adapters/sandbox/control.py`; see `create_sandbox_app`. Importing this module starts nothing.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING, Any

from aiohttp import web

from adapters.providers.cryptofuse.webhooks import sign
from adapters.providers.http_client import dumps_exact
from adapters.sandbox.control import (
    CONTROLS,
    ApiRoute,
    ControlRefused,
    SandboxSpec,
    Scenarios,
    sandbox_app,
)
from adapters.sandbox.deliveries import Deliveries
from ledger.money import loads_exact, to_decimal

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

    from adapters.sandbox.deliveries import WebhookSender

# currency -> (blockchain, token, USD per unit). The sandbox's rates are fixed.
_CURRENCIES: dict[str, tuple[str, str, Decimal]] = {
    "USDTTRC20": ("TRX", "USDT", Decimal(1)),
    "USDTERC20": ("ETH", "USDT", Decimal(1)),
    "USDCERC20": ("ETH", "USDC", Decimal(1)),
    "TRX": ("TRX", "TRX", Decimal("0.1")),
    "BTC": ("BTC", "BTC", Decimal(50000)),
    "ETH": ("ETH", "ETH", Decimal(2500)),
}

_TESTNET_SCENARIOS: dict[Decimal, str] = {
    Decimal("123.45"): "full",
    Decimal("234.56"): "delayed_full",
    Decimal("345.67"): "partial",
    Decimal("456.78"): "over",
    Decimal("567.89"): "expire_no_funds",
    Decimal("678.90"): "fail",
}

PAYMENT_SCENARIOS = (
    "full",
    "partial",
    "over",
    "expire_no_funds",
    "expire_with_funds",
    "late",
    "fail",
    "multiple_deposits",
    "duplicate",
    "out_of_order",
)
WITHDRAWAL_SCENARIOS = ("processing", "completed", "failed", "manual_review")

_CONFIRMED = 20  # what the document's "completed" examples show
_EIGHT_PLACES = Decimal("1e-8")
_CENT = Decimal("0.01")


# The keys of the ledger's table for this provider besides base_url (a fleet makes them up),
# and whether the callback URL is set once, in the provider's portal (adapters/sandbox/fleet.py).
LEDGER_TABLE_KEYS = ("client_id", "client_secret", "webhook_secret")
HAS_PORTAL = False


@dataclass(frozen=True, slots=True)
class SandboxConfig:
    client_id: str = "sandbox-client-id"
    client_secret: str = "sandbox-client-secret"  # noqa: S105 - a sandbox default
    webhook_secret: str = "sandbox-webhook-secret"  # noqa: S105 - a sandbox default
    token_lifetime_seconds: int = 36000  # the document's example
    testnet_amounts: bool = True
    testnet_start_delay_seconds: float = 0.05  # lets the create answer arrive first
    delayed_success_seconds: float = 0.2  # the document's "after 30 seconds", shortened
    platform_fee_rate: Decimal = Decimal("0.01")  # the estimate example: 1%
    network_fee: Decimal = Decimal("0.50")  # ... plus 0.50
    initial_balances: Mapping[str, Decimal] = field(
        default_factory=lambda: {"USDTTRC20": Decimal(10000)}
    )


@dataclass(slots=True)
class _Deposit:
    deposit_id: str
    amount: Decimal
    transaction_hash: str
    confirmations: int
    timestamp: datetime


@dataclass(slots=True)
class _Payment:
    transaction_id: str
    order_id: str | None
    amount_usd: Decimal
    amount_crypto: Decimal
    currency: str
    address: str
    callback_url: str | None
    created_at: datetime
    expiry_time: datetime
    status: str = "waiting"
    payment_type: str | None = None
    history: list[_Deposit] = field(default_factory=list)
    credited: set[str] = field(default_factory=set)

    @property
    def total_paid(self) -> Decimal:
        return sum((d.amount for d in self.history), Decimal(0))


@dataclass(slots=True)
class _Withdrawal:
    withdrawal_id: str
    amount: Decimal  # after fees
    requested: Decimal
    currency: str
    address: str
    callback_url: str | None
    status: str = "pending"
    transaction_hash: str | None = None


@dataclass(slots=True)
class _Balance:
    amount: Decimal
    pending: Decimal = Decimal(0)


class _RequestInvalid(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _crypto(amount: Decimal) -> str:
    return format(amount.quantize(_EIGHT_PLACES), "f")


def _usd(amount: Decimal) -> str:
    return format(amount.quantize(_CENT, ROUND_HALF_UP), "f")


def _part(amount: Decimal, numerator: int, denominator: int) -> Decimal:
    return (amount * numerator / denominator).quantize(_EIGHT_PLACES, ROUND_DOWN)


def _error(status: int, code: str, message: str) -> web.Response:
    """The document's error shape: `error.code`, details beside it."""
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


async def _json_object(request: web.Request) -> dict[str, Any]:
    try:
        parsed = loads_exact(await request.read())
    except ValueError:
        raise _RequestInvalid("invalid_request", "body is not JSON") from None
    if not isinstance(parsed, dict):
        raise _RequestInvalid("invalid_request", "body is not a JSON object")
    return parsed


def _positive_amount(body: Mapping[str, Any], key: str) -> Decimal:
    try:
        value = to_decimal(body.get(key))
    except (TypeError, ValueError, ArithmeticError):
        raise _RequestInvalid("invalid_request", f"{key} must be an amount") from None
    if value <= 0:
        raise _RequestInvalid("invalid_request", f"{key} must be positive")
    return value


def _known_currency(body: Mapping[str, Any], key: str = "currency") -> str:
    currency = body.get(key)
    if not isinstance(currency, str) or currency not in _CURRENCIES:
        raise _RequestInvalid("invalid_currency", f"currency {currency!r} is not supported")
    return currency


def _optional_text(body: Mapping[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _RequestInvalid("invalid_request", f"{key} must be a string")
    return value


class _Sandbox:
    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.tokens: dict[str, float] = {}
        self.payments: dict[str, _Payment] = {}
        self.withdrawals: dict[str, _Withdrawal] = {}
        self.balances = {code: _Balance(amount) for code, amount in config.initial_balances.items()}

    # ------------------------------------------------------------------ plumbing

    @web.middleware
    async def middleware(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        try:
            return await handler(request)
        except _RequestInvalid as error:
            return _error(400, error.code, error.message)

    def authorized(self, request: web.Request) -> bool:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return False
        expires = self.tokens.get(token)
        return expires is not None and time.monotonic() < expires

    # ------------------------------------------------------------------ auth

    async def issue_token(self, request: web.Request) -> web.Response:
        form = await request.post()
        if form.get("grant_type") != "client_credentials":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        client_id = str(form.get("client_id", ""))
        client_secret = str(form.get("client_secret", ""))
        id_ok = hmac.compare_digest(client_id.encode(), self.config.client_id.encode())
        secret_ok = hmac.compare_digest(client_secret.encode(), self.config.client_secret.encode())
        if not (id_ok and secret_ok):
            return web.json_response({"error": "invalid_client"}, status=401)
        token = secrets.token_urlsafe(24)
        self.tokens[token] = time.monotonic() + self.config.token_lifetime_seconds
        return web.json_response(
            {
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": self.config.token_lifetime_seconds,
                "scope": str(form.get("scope", "read write")),
            }
        )

    # ------------------------------------------------------------------ payments

    async def create_payment(self, request: web.Request) -> web.Response:
        if not self.authorized(request):
            return _unauthorized()
        body = await _json_object(request)
        amount = _positive_amount(body, "amount")
        currency = _known_currency(body)
        price_currency = _optional_text(body, "price_currency") or "USD"
        blockchain, token, usd_rate = _CURRENCIES[currency]
        if price_currency == "USD":
            amount_usd = amount
            amount_crypto = (amount / usd_rate).quantize(_EIGHT_PLACES, ROUND_HALF_UP)
        elif price_currency == currency:
            amount_usd, amount_crypto = amount * usd_rate, amount
        else:
            raise _RequestInvalid("invalid_currency", f"cannot price in {price_currency}")
        expiry_minutes = body.get("expiry_minutes", 30)
        if not isinstance(expiry_minutes, int) or isinstance(expiry_minutes, bool):
            raise _RequestInvalid("invalid_request", "expiry_minutes must be an integer")
        created = _now()
        payment = _Payment(
            transaction_id=str(uuid.uuid4()),
            order_id=_optional_text(body, "order_id"),
            amount_usd=amount_usd,
            amount_crypto=amount_crypto,
            currency=currency,
            address="T" + secrets.token_hex(16),
            callback_url=_optional_text(body, "callback_url"),
            created_at=created,
            expiry_time=created + timedelta(minutes=expiry_minutes),
        )
        self.payments[payment.transaction_id] = payment
        if self.config.testnet_amounts and price_currency == "USD":
            scenario = _TESTNET_SCENARIOS.get(amount)
            if scenario is not None:
                webhooks = request.app[CONTROLS].webhooks
                webhooks.in_background(self.testnet_flow(webhooks, payment, scenario))
        return web.json_response(
            {
                "transaction_id": payment.transaction_id,
                "status": payment.status,
                "blockchain_address": payment.address,
                "amount_usd": _usd(amount_usd),
                "amount_crypto": _crypto(amount_crypto),
                "blockchain": blockchain,
                "token": token,
                "currency": currency,
                "expiry_time": _iso(payment.expiry_time),
                "created_at": _iso(created),
            },
            status=201,
        )

    async def testnet_flow(
        self, webhooks: WebhookSender, payment: _Payment, scenario: str
    ) -> None:
        delay = self.config.testnet_start_delay_seconds
        if scenario == "delayed_full":
            scenario = "full"
            delay += self.config.delayed_success_seconds
        await asyncio.sleep(delay)
        await webhooks.send(payment.callback_url, self.payment_bodies(payment, scenario))

    async def payment_status(self, request: web.Request) -> web.Response:
        if not self.authorized(request):
            return _unauthorized()
        body = await _json_object(request)
        payment = self.payments.get(str(body.get("transaction_id")))
        if payment is None:
            return _error(404, "not_found", "no such transaction_id")
        # `final_usd_value` is a bare number: dumps_exact writes the Decimal digit for digit.
        return web.Response(
            text=dumps_exact(self.payment_data(payment, full=True)),
            content_type="application/json",
        )

    def payment_data(self, payment: _Payment, *, full: bool) -> dict[str, Any]:
        """A webhook's `data`. `full=False` gives the document's "completed" field set, which
        names no currency, blockchain, token or address."""
        blockchain, token, usd_rate = _CURRENCIES[payment.currency]
        data: dict[str, Any] = {
            "transaction_id": payment.transaction_id,
            "status": payment.status,
            "amount_usd": _usd(payment.amount_usd),
            "amount_crypto": _crypto(payment.amount_crypto),
        }
        if full:
            data |= {
                "blockchain": blockchain,
                "token": token,
                "currency": payment.currency,
                "address": payment.address,
            }
        if payment.payment_type is not None:
            data["payment_type"] = payment.payment_type
        paid = payment.total_paid
        if payment.status == "completed":
            data["final_usd_value"] = (paid * usd_rate).quantize(_CENT, ROUND_HALF_UP)
        if payment.history:
            last = payment.history[-1]
            data["transaction_hash"] = last.transaction_hash
            data["confirmations"] = min(d.confirmations for d in payment.history)
            data["payment_history"] = [
                {
                    "deposit_id": d.deposit_id,
                    "amount": _crypto(d.amount),
                    "transaction_hash": d.transaction_hash,
                    "confirmations": d.confirmations,
                    "timestamp": _iso(d.timestamp),
                }
                for d in payment.history
            ]
            data["total_paid_amount"] = _crypto(paid)
        if payment.payment_type == "overpayment":
            excess = paid - payment.amount_crypto
            data["overpayment_amount"] = _crypto(excess)
            data["overpayment_usd_value"] = _usd(excess * usd_rate)
        return data

    # ------------------------------------------------------------------ payment scenarios

    def payment_bodies(self, payment: _Payment, scenario: str) -> list[str]:
        """The webhook bodies of one scenario, in sending order; the payment's state follows."""
        steps: dict[str, Callable[[_Payment], list[str]]] = {
            "full": lambda p: self.paid_in(p, [p.amount_crypto], "completed", "full"),
            "partial": lambda p: self.paid_in(
                p, [_part(p.amount_crypto, 1, 2)], "partially_paid", "partial"
            ),
            "over": lambda p: self.paid_in(
                p, [_part(p.amount_crypto, 3, 2)], "completed", "overpayment"
            ),
            "expire_no_funds": lambda p: [self.expired(p, _now())],
            "expire_with_funds": lambda p: [
                *self.paid_in(p, [_part(p.amount_crypto, 1, 2)], "partially_paid", "partial"),
                self.expired(p, _now()),
            ],
            "late": self.late_bodies,
            "fail": self.failed_bodies,
            "multiple_deposits": self.multiple_deposit_bodies,
            "out_of_order": lambda p: self.multiple_deposit_bodies(p)[::-1],
            "duplicate": self.duplicate_bodies,
        }
        step = steps.get(scenario)
        if step is None:
            raise _RequestInvalid("invalid_request", f"unknown scenario {scenario!r}")
        return step(payment)

    def late_bodies(self, payment: _Payment) -> list[str]:
        """The document does not say what follows funds sent after expiry; the nearest honest
        thing is the ordinary confirming/completed pair, stamped after the expiry."""
        expired_at = _now()
        expired = self.expired(payment, expired_at)
        late = expired_at + timedelta(seconds=1)
        return [expired, *self.paid_in(payment, [payment.amount_crypto], "completed", "full", late)]

    def failed_bodies(self, payment: _Payment) -> list[str]:
        payment.status = "failed"
        return [self.envelope(payment, _now(), self.payment_data(payment, full=True))]

    def multiple_deposit_bodies(self, payment: _Payment) -> list[str]:
        """Three deposits (40%, 30%, the rest) adding up to the amount exactly."""
        expected = payment.amount_crypto
        first, second = _part(expected, 2, 5), _part(expected, 3, 10)
        parts = [first, second, expected - first - second]
        return self.paid_in(payment, parts, "completed", "full")

    def duplicate_bodies(self, payment: _Payment) -> list[str]:
        bodies = self.paid_in(payment, [payment.amount_crypto], "completed", "full")
        return [*bodies, bodies[-1]]

    def paid_in(
        self,
        payment: _Payment,
        parts: list[Decimal],
        final_status: str,
        payment_type: str,
        at: datetime | None = None,
    ) -> list[str]:
        """One "confirming" webhook per deposit as it is seen on chain (1 confirmation), then the
        final word with every deposit confirmed."""
        moment = at or _now()
        bodies = []
        for part in parts:
            payment.history.append(
                _Deposit(
                    deposit_id=f"dep_{secrets.token_hex(6)}",
                    amount=part,
                    transaction_hash="0x" + secrets.token_hex(32),
                    confirmations=1,
                    timestamp=moment,
                )
            )
            payment.status = "confirming"
            bodies.append(self.envelope(payment, moment, self.payment_data(payment, full=True)))
        for deposit in payment.history:
            deposit.confirmations = max(deposit.confirmations, _CONFIRMED)
        payment.status, payment.payment_type = final_status, payment_type
        self.credit(payment)
        # The document's "completed" example carries fewer fields than "confirming".
        data = self.payment_data(payment, full=final_status != "completed")
        bodies.append(self.envelope(payment, moment, data))
        return bodies

    def expired(self, payment: _Payment, at: datetime) -> str:
        """The document's expired webhook is `{status, timestamp}`; the sandbox adds the envelope's
        transaction_id and event so that it can be matched at all."""
        payment.status = "expired"
        payment.expiry_time = min(payment.expiry_time, at)
        return dumps_exact(
            {
                "transaction_id": payment.transaction_id,
                "event": "payment_status_update",
                "status": "expired",
                "timestamp": _iso(at),
            }
        )

    def envelope(self, payment: _Payment, at: datetime, data: dict[str, Any]) -> str:
        return dumps_exact(
            {
                "transaction_id": payment.transaction_id,
                "event": "payment_status_update",
                "status": payment.status,
                "timestamp": _iso(at),
                "data": data,
            }
        )

    def credit(self, payment: _Payment) -> None:
        """Confirmed deposits land in the merchant's balance once each."""
        balance = self.balances.setdefault(payment.currency, _Balance(Decimal(0)))
        for deposit in payment.history:
            if deposit.confirmations >= _CONFIRMED and deposit.deposit_id not in payment.credited:
                payment.credited.add(deposit.deposit_id)
                balance.amount += deposit.amount

    def payment_scenario(self, ref: str, scenario: str) -> Deliveries:
        payment = self.payments.get(ref)
        if payment is None:
            raise ControlRefused(404, "unknown payment")
        return Deliveries(self.payment_bodies(payment, scenario), url=payment.callback_url)

    # ------------------------------------------------------------------ balances, withdrawals

    async def user_balances(self, request: web.Request) -> web.Response:
        if not self.authorized(request):
            return _unauthorized()
        return web.json_response(self.balances_document())

    def balances_document(self) -> dict[str, Any]:
        account = {}
        for code, balance in sorted(self.balances.items()):
            blockchain, token, _ = _CURRENCIES.get(code, (code, code, Decimal(0)))
            account[code] = {
                "amount": _crypto(balance.amount),
                "pending_amount": _crypto(balance.pending),
                "currency": {"currency": code, "blockchain": blockchain, "token": token},
            }
        return {"account": account}

    async def validate_address(self, request: web.Request) -> web.Response:
        if not self.authorized(request):
            return _unauthorized()
        body = await _json_object(request)
        currency = _known_currency(body)
        address = _optional_text(body, "address") or ""
        return web.json_response(
            {
                "is_valid": len(address) >= 10,
                "address": address,
                "blockchain": _CURRENCIES[currency][0],
                "currency": currency,
            }
        )

    def fees(self, amount: Decimal) -> tuple[Decimal, Decimal]:
        platform = (amount * self.config.platform_fee_rate).quantize(_EIGHT_PLACES, ROUND_HALF_UP)
        return platform, self.config.network_fee

    async def estimate_withdrawal(self, request: web.Request) -> web.Response:
        if not self.authorized(request):
            return _unauthorized()
        body = await _json_object(request)
        amount = _positive_amount(body, "amount")
        currency = _known_currency(body)
        platform, network = self.fees(amount)
        blockchain, token, _ = _CURRENCIES[currency]
        return web.json_response(
            {
                "withdrawal_id": None,
                "status": "estimate",
                "amount": _crypto(amount - platform - network),
                "requested_amount": _crypto(amount),
                "fee": _crypto(platform + network),  # crypto here, USD in the create answer
                "platform_fee": _crypto(platform),
                "network_fee": _crypto(network),
                "blockchain": blockchain,
                "token": token,
                "currency": currency,
            }
        )

    async def create_withdrawal(self, request: web.Request) -> web.Response:
        if not self.authorized(request):
            return _unauthorized()
        body = await _json_object(request)
        amount = _positive_amount(body, "amount")
        currency = _known_currency(body)
        address = _optional_text(body, "address")
        if not address:
            raise _RequestInvalid("invalid_request", "address is required")
        platform, network = self.fees(amount)
        if amount <= platform + network:
            raise _RequestInvalid("invalid_request", "amount does not cover the fees")
        balance = self.balances.get(currency)
        if balance is None or balance.amount < amount:
            return _error(400, "insufficient_balance", f"not enough {currency}")
        balance.amount -= amount
        balance.pending += amount
        withdrawal = _Withdrawal(
            withdrawal_id=str(uuid.uuid4()),
            amount=amount - platform - network,
            requested=amount,
            currency=currency,
            address=address,
            callback_url=_optional_text(body, "callback_url"),
        )
        self.withdrawals[withdrawal.withdrawal_id] = withdrawal
        usd_rate = _CURRENCIES[currency][2]
        return web.json_response(
            {
                "withdrawal_id": withdrawal.withdrawal_id,
                "status": withdrawal.status,
                "amount": _crypto(withdrawal.amount),
                "requested_amount": _crypto(amount),
                "fee": _usd((platform + network) * usd_rate),  # the document: "Total fee in USD"
                "address": address,
                "created_at": _iso(_now()),
            },
            status=201,
        )

    def withdrawal_body(self, withdrawal: _Withdrawal, status: str) -> str:
        withdrawal.status = status
        moment = _now()
        data: dict[str, Any] = {"withdrawal_id": withdrawal.withdrawal_id, "status": status}
        if status == "completed":
            withdrawal.transaction_hash = "0x" + secrets.token_hex(32)
            data |= {
                "transaction_hash": withdrawal.transaction_hash,
                "confirmations": _CONFIRMED,
                "completed_at": _iso(moment),
            }
        else:
            data |= {"amount": _crypto(withdrawal.amount), "currency": withdrawal.currency}
        return dumps_exact(
            {
                "withdrawal_id": withdrawal.withdrawal_id,
                "event": "withdrawal_status_update",
                "status": status,
                "timestamp": _iso(moment),
                "data": data,
            }
        )

    def settle_withdrawal(self, withdrawal: _Withdrawal) -> None:
        balance = self.balances[withdrawal.currency]
        balance.pending -= withdrawal.requested
        if withdrawal.status == "failed":
            balance.amount += withdrawal.requested

    def withdrawal_scenario(self, ref: str, scenario: str) -> Deliveries:
        withdrawal = self.withdrawals.get(ref)
        if withdrawal is None:
            raise ControlRefused(404, "unknown withdrawal")
        if withdrawal.status in {"completed", "failed"}:
            raise ControlRefused(409, f"withdrawal is {withdrawal.status}")
        note = None
        bodies = []
        if withdrawal.status == "pending" and scenario in {"completed", "manual_review"}:
            bodies.append(self.withdrawal_body(withdrawal, "processing"))
        if scenario == "manual_review":
            # The document has no review state: a withdrawal held for review shows "processing".
            note = "cryptofuse documents no manual review state; sent processing instead"
        else:
            bodies.append(self.withdrawal_body(withdrawal, scenario))
        if withdrawal.status in {"completed", "failed"}:
            self.settle_withdrawal(withdrawal)
        return Deliveries(bodies, url=withdrawal.callback_url, note=note)

    # ------------------------------------------------------------------ test controls

    def expire_tokens(self, _body: dict[str, Any]) -> dict[str, Any]:
        count = len(self.tokens)
        self.tokens.clear()
        return {"expired": count}

    def set_balances(self, body: dict[str, Any]) -> dict[str, Any]:
        """`{"balances": {"USDTTRC20": {"amount": "1000", "pending_amount": "0"}}}`."""
        balances = body.get("balances")
        if not isinstance(balances, dict):
            raise _RequestInvalid("invalid_request", "balances must be an object")
        for code, entry in balances.items():
            if not isinstance(entry, dict):
                raise _RequestInvalid("invalid_request", f"balance of {code} must be an object")
            try:
                amount = to_decimal(entry.get("amount", 0))
                pending = to_decimal(entry.get("pending_amount", 0))
            except (TypeError, ValueError, ArithmeticError):
                message = f"balance of {code} is not exact"
                raise _RequestInvalid("invalid_request", message) from None
            self.balances[str(code)] = _Balance(amount, pending)
        # The document has no balance webhook: balances are reported by GET /user/balances/.
        return self.balances_document()


def _unauthorized() -> web.Response:
    return web.json_response(
        {"detail": "Authentication credentials were not provided or are invalid."},
        status=401,
        headers={"WWW-Authenticate": "Bearer"},
    )


SANDBOX_KEY = web.AppKey("cryptofuse_sandbox", _Sandbox)


def create_sandbox_app(config: SandboxConfig | None = None) -> web.Application:
    """The provider's endpoints behind the shared `/_sandbox/` controls. Fault operations:
    login (token), create_payment, query_payment (payment_status), fetch_balances (balances),
    validate_address, estimate_withdrawal, create_withdrawal, or a path."""
    sandbox = _Sandbox(config or SandboxConfig())
    app = sandbox_app(
        SandboxSpec(
            provider="cryptofuse",
            api=[
                ApiRoute("POST", "/o/token/", sandbox.issue_token, "login", ("token",)),
                ApiRoute("POST", "/payments/", sandbox.create_payment, "create_payment"),
                ApiRoute(
                    "POST", "/payments/status/", sandbox.payment_status, "query_payment",
                    ("payment_status",),
                ),
                ApiRoute(
                    "GET", "/user/balances/", sandbox.user_balances, "fetch_balances",
                    ("balances",),
                ),
                ApiRoute(
                    "POST", "/withdrawal/validate-address/", sandbox.validate_address,
                    "validate_address",
                ),
                ApiRoute(
                    "POST", "/withdrawal/estimate/", sandbox.estimate_withdrawal,
                    "estimate_withdrawal",
                ),
                ApiRoute("POST", "/withdrawal/", sandbox.create_withdrawal, "create_withdrawal"),
            ],
            fault_answer=lambda status: web.json_response(
                {"detail": "sandbox fault"}, status=status
            ),
            payments=Scenarios(PAYMENT_SCENARIOS, sandbox.payment_scenario),
            withdrawals=Scenarios(WITHDRAWAL_SCENARIOS, sandbox.withdrawal_scenario),
            expire_tokens=sandbox.expire_tokens,
            set_balances=sandbox.set_balances,
            sign=lambda raw: {
                "Content-Type": "application/json",
                "X-Webhook-Signature": sign(raw, sandbox.config.webhook_secret),
            },
            middlewares=[sandbox.middleware],
        )
    )
    app[SANDBOX_KEY] = sandbox
    return app
