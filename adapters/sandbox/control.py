"""The control plane every provider sandbox shares: request log, fault injection, scenarios.

A sandbox module describes its provider in a `SandboxSpec` (the documented API as `ApiRoute`s,
each named by the client operation it serves; its scenario bodies; its token, balance and error
shapes) and `sandbox_app(spec)` builds the aiohttp app with the controls below. None of them is
part of any provider's API; all live under `/_sandbox/`, take and answer JSON, and answer
`{"error": ...}` with 400/404/409 when refused.

Request log
- `GET /_sandbox/requests[?operation=&method=&path=]` -> `{"requests": [...], "count": n}`:
  every provider API call, oldest first, as `{method, path, operation, query?, fault?}` (plus
  provider extras such as Payment Engine's `auth`), filtered by the query's fields. `operation`
  is the client's name for the call (`login`, `create_payment`, `create_withdrawal`,
  `query_payment`, `find_payment`, `find_withdrawal`, `fetch_balances`, ...), so
  `?operation=create_payment` counts the creates the provider saw, faulted ones included
  (`fault` names the kind injected). `DELETE /_sandbox/requests` empties the log.

Faults (`adapters/sandbox/faults.py`), for the next N calls of one operation
- `POST /_sandbox/faults {"operation": NAME, "statuses": [503, 503]}`: the next two calls are
  answered 503 in the provider's error shape, the work not done.
- `POST /_sandbox/faults {"operation": NAME, "kind": KIND, "times": N, "status"|"seconds": ...}`
  with KIND one of
  `status` (answer `status` without doing the work),
  `timeout` (hold the request unanswered for `seconds`, default 60: longer than any client's
  timeout; then close the connection; the work not done),
  `drop_before` (close the connection without an answer; the work not done),
  `drop_after` (do the work, e.g. create the payment, then close the connection without an
  answer: the provider created it, the answer was lost),
  `delay_after` (do the work, answer after `seconds`, default 1).
  NAME is an operation (or an alias a sandbox keeps from before, e.g. `token`), a route
  template (`/api/transactions/{transaction_id}`) or a path; faults queue up behind those
  already queued. Answers `{"operation": NAME, "queued": [...]}`.
- `GET /_sandbox/faults` lists what is queued; `DELETE /_sandbox/faults` drops it all.

Scenarios, tokens, balances, portal
- `POST /_sandbox/payments/{ref}/scenario {"scenario": NAME}` and
  `POST /_sandbox/withdrawals/{ref}/scenario` run one of the provider's scenarios and send its
  webhooks, signed as the provider signs them: `{"deliveries": [{status, body, error?}],
  "note"?}`. 400 unknown scenario (with the `known` ones), 404 unknown ref or no withdrawals at
  this provider, 409 nothing to send to (no callback URL).
- `POST /_sandbox/expire_tokens` drops the provider's issued tokens, as its server would.
- `POST /_sandbox/balances` sets what the provider reports as balances (shape per provider).
- `POST /_sandbox/webhook_url {"webhook_url": URL}` (also `/_sandbox/portal`), for providers
  whose callback URL is set once in a portal (CoinPay, CoinCoin, Payment Engine).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from adapters.providers.http_client import dumps_exact
from adapters.sandbox.deliveries import Deliveries, WebhookSender, json_headers
from adapters.sandbox.faults import Fault, FaultInvalid, FaultKind, FaultQueues, parse_faults
from ledger.money import loads_exact

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence

    from aiohttp.typedefs import Middleware

    Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
    OperationOf = Callable[[web.Request], Awaitable[str]]

PREFIX = "/_sandbox/"


@dataclass(frozen=True, slots=True)
class ApiRoute:
    """One documented endpoint. `operation` is the client's name for the call, or a function
    of the request where one endpoint serves several (Payment Engine's transactions)."""

    method: str
    path: str
    handler: Handler
    operation: str | OperationOf
    aliases: tuple[str, ...] = ()  # further names a fault may be queued under
    operations_named: tuple[str, ...] = ()  # what a function `operation` may answer


class ControlRefused(Exception):
    """A control (scenario, balances, ...) that cannot be done: answered `{"error": ...}`."""

    def __init__(self, status: int, message: str, **details: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details


@dataclass(frozen=True, slots=True)
class Scenarios:
    names: Collection[str]
    # (ref, scenario) -> the webhooks to send; raises ControlRefused (404 unknown ref, ...).
    run: Callable[[str, str], Deliveries]


@dataclass(frozen=True, slots=True)
class SandboxSpec:
    provider: str
    api: Sequence[ApiRoute]
    # The provider's own error answer for an injected status.
    fault_answer: Callable[[int], web.StreamResponse]
    payments: Scenarios
    withdrawals: Scenarios | None  # None: the provider has no withdrawals
    expire_tokens: Callable[[dict[str, Any]], Any]  # the control body -> its JSON answer
    set_balances: Callable[[dict[str, Any]], Any]  # ... or Deliveries to send, then answer
    sign: Callable[[bytes], Mapping[str, str]] = json_headers
    has_portal: bool = False  # the callback URL is set once, in the provider's portal
    portal_url: str | None = None
    log_fields: Callable[[web.Request], Mapping[str, Any]] | None = None
    controls: Sequence[tuple[str, str, Handler]] = ()  # provider-specific extra controls
    middlewares: Sequence[Middleware] = ()  # provider middlewares, inside the controls'


@dataclass(frozen=True, slots=True)
class LoggedRequest:
    method: str
    path: str
    operation: str | None
    query: Mapping[str, str] = field(default_factory=dict)
    fault: Fault | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def matches(self, query: Mapping[str, str]) -> bool:
        wanted = {key: query[key] for key in ("operation", "method", "path") if key in query}
        shown = {"operation": self.operation, "method": self.method, "path": self.path}
        return all(shown[key] == value for key, value in wanted.items())

    def to_json(self) -> dict[str, Any]:
        shown: dict[str, Any] = {"method": self.method, "path": self.path}
        shown |= {"operation": self.operation, **self.extra}
        if self.query:
            shown["query"] = dict(self.query)
        if self.fault is not None:
            shown["fault"] = self.fault.kind.value
        return shown


class Controls:
    """One sandbox's log, faults, portal URL and webhook sender (`request.app[CONTROLS]`)."""

    def __init__(self, spec: SandboxSpec) -> None:
        self.spec = spec
        self.faults = FaultQueues()
        self.requests: list[LoggedRequest] = []
        self.webhooks = WebhookSender(spec.sign)
        self.portal_url = spec.portal_url
        self._closing = asyncio.Event()
        self._routes = {(route.method, route.path): route for route in spec.api}

    async def deliver(self, deliveries: Deliveries) -> list[dict[str, Any]]:
        return await self.webhooks.send(deliveries.url or self.portal_url, deliveries.bodies)

    def fault_names(self) -> list[str]:
        names = {name for route in self.spec.api for name in _static_names(route)}
        return sorted(names)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Logs each provider API call and injects its queued fault, if any."""
        if request.path.startswith(PREFIX):
            return await handler(request)
        route = self._route_of(request)
        operation = await self._operation(route, request) if route is not None else None
        names = [operation, *(route.aliases if route else ()), self._template(request)]
        fault = self.faults.take([name for name in [*names, request.path] if name])
        extra = self.spec.log_fields(request) if self.spec.log_fields else {}
        self.requests.append(
            LoggedRequest(
                request.method, request.path, operation, dict(request.query), fault, extra
            )
        )
        if fault is None:
            return await handler(request)
        return await self._inject(fault, request, handler)

    @staticmethod
    async def _operation(route: ApiRoute, request: web.Request) -> str:
        if isinstance(route.operation, str):
            return route.operation
        return await route.operation(request)

    async def _inject(
        self, fault: Fault, request: web.Request, handler: Handler
    ) -> web.StreamResponse:
        if fault.kind is FaultKind.STATUS and fault.status is not None:
            return self.spec.fault_answer(fault.status)
        response: web.StreamResponse | None = None
        if fault.kind.does_the_work:
            try:
                response = await handler(request)
            except web.HTTPException as refused:
                response = refused
        if fault.kind in {FaultKind.TIMEOUT, FaultKind.DELAY_AFTER}:
            await self._hold(fault.seconds or 0.0)
        if fault.kind is FaultKind.DELAY_AFTER and response is not None:
            return response
        return _drop(request)

    async def _hold(self, seconds: float) -> None:
        # Held requests let go at once when the sandbox shuts down, so no test waits them out.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), seconds)

    def _route_of(self, request: web.Request) -> ApiRoute | None:
        template = self._template(request)
        return self._routes.get((request.method, template)) if template else None

    @staticmethod
    def _template(request: web.Request) -> str | None:
        resource = request.match_info.route.resource
        return resource.canonical if resource is not None else None

    async def release_held(self, _app: web.Application) -> None:
        """On shutdown, before aiohttp waits for the handlers still running."""
        self._closing.set()

    async def close(self, _app: web.Application) -> None:
        await self.webhooks.close()


CONTROLS = web.AppKey("sandbox_controls", Controls)


def sandbox_app(spec: SandboxSpec) -> web.Application:
    """The provider's documented routes behind the shared controls."""
    controls = Controls(spec)
    app = web.Application(middlewares=[controls.middleware, *spec.middlewares])
    app[CONTROLS] = controls
    app.on_shutdown.append(controls.release_held)
    app.on_cleanup.append(controls.close)
    for route in spec.api:
        app.router.add_route(route.method, route.path, route.handler)
    control_routes: list[tuple[str, str, Handler]] = [
        ("POST", "faults", _add_faults),
        ("GET", "faults", _list_faults),
        ("DELETE", "faults", _clear_faults),
        ("GET", "requests", _list_requests),
        ("DELETE", "requests", _clear_requests),
        ("POST", "payments/{ref}/scenario", _payment_scenario),
        ("POST", "withdrawals/{ref}/scenario", _withdrawal_scenario),
        ("POST", "expire_tokens", _expire_tokens),
        ("POST", "balances", _set_balances),
    ]
    if spec.has_portal:
        control_routes += [("POST", "webhook_url", _set_portal), ("POST", "portal", _set_portal)]
    for method, path, handler in control_routes:
        app.router.add_route(method, PREFIX + path, _answering_refusals(handler))
    for method, path, handler in spec.controls:
        app.router.add_route(method, path, _answering_refusals(handler))
    return app


def json_response(payload: Any, status: int = 200) -> web.Response:
    """JSON with exact amounts (Decimals written digit for digit)."""
    return web.Response(text=dumps_exact(payload), status=status, content_type="application/json")


async def control_body(request: web.Request) -> dict[str, Any]:
    """A control's JSON object body ({} when empty); ControlRefused(400) otherwise."""
    try:
        body = loads_exact(await request.read() or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise ControlRefused(400, "body is not JSON") from None
    if not isinstance(body, dict):
        raise ControlRefused(400, "body is not a JSON object")
    return body


def _drop(request: web.Request) -> web.StreamResponse:
    """Closes the connection without an answer. aiohttp then fails to write the response it is
    handed and lets it go as a client that went away."""
    transport = request.transport
    if transport is not None:
        transport.close()
    return web.Response(status=204)


def _static_names(route: ApiRoute) -> list[str]:
    named = (route.operation,) if isinstance(route.operation, str) else route.operations_named
    return [*named, *route.aliases, route.path]


# --- control handlers -----------------------------------------------------------------------


def _answering_refusals(handler: Handler) -> Handler:
    """A control handler whose ControlRefused (and a fault body it cannot take) is answered
    `{"error": ...}` with its status."""

    async def answer(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except ControlRefused as refused:
            return json_response({"error": refused.message, **refused.details}, refused.status)
        except FaultInvalid as invalid:
            return json_response({"error": str(invalid)}, 400)

    return answer


async def _add_faults(request: web.Request) -> web.Response:
    controls = request.app[CONTROLS]
    body = await control_body(request)
    name = body.get("operation")
    if not isinstance(name, str) or not name:
        raise ControlRefused(400, "operation (a string) is required")
    if not name.startswith("/") and name not in controls.fault_names():
        raise ControlRefused(400, f"unknown operation {name!r}", known=controls.fault_names())
    queued = controls.faults.add(name, parse_faults(body))
    return json_response({"operation": name, "queued": [fault.to_json() for fault in queued]})


async def _list_faults(request: web.Request) -> web.Response:
    return json_response({"faults": request.app[CONTROLS].faults.to_json()})


async def _clear_faults(request: web.Request) -> web.Response:
    return json_response({"cleared": request.app[CONTROLS].faults.clear()})


async def _list_requests(request: web.Request) -> web.Response:
    listed = [r.to_json() for r in request.app[CONTROLS].requests if r.matches(request.query)]
    return json_response({"requests": listed, "count": len(listed)})


async def _clear_requests(request: web.Request) -> web.Response:
    controls = request.app[CONTROLS]
    cleared = len(controls.requests)
    controls.requests.clear()
    return json_response({"cleared": cleared})


async def _payment_scenario(request: web.Request) -> web.Response:
    return await _run_scenario(request, request.app[CONTROLS].spec.payments)


async def _withdrawal_scenario(request: web.Request) -> web.Response:
    controls = request.app[CONTROLS]
    if controls.spec.withdrawals is None:
        raise ControlRefused(404, f"{controls.spec.provider} documents no withdrawals")
    return await _run_scenario(request, controls.spec.withdrawals)


async def _run_scenario(request: web.Request, scenarios: Scenarios) -> web.Response:
    controls = request.app[CONTROLS]
    name = (await control_body(request)).get("scenario")
    if not isinstance(name, str) or name not in scenarios.names:
        raise ControlRefused(400, f"unknown scenario {name!r}", known=sorted(scenarios.names))
    deliveries = scenarios.run(request.match_info["ref"], name)
    if deliveries.bodies and not (deliveries.url or controls.portal_url):
        raise ControlRefused(409, "no webhook URL configured: nothing was sent")
    return await _deliveries_answer(controls, deliveries)


async def _deliveries_answer(controls: Controls, deliveries: Deliveries) -> web.Response:
    answer: dict[str, Any] = {"deliveries": await controls.deliver(deliveries)}
    if deliveries.note:
        answer["note"] = deliveries.note
    return json_response(answer)


async def _expire_tokens(request: web.Request) -> web.Response:
    controls = request.app[CONTROLS]
    return json_response(controls.spec.expire_tokens(await control_body(request)))


async def _set_balances(request: web.Request) -> web.Response:
    controls = request.app[CONTROLS]
    answer = controls.spec.set_balances(await control_body(request))
    if isinstance(answer, Deliveries):
        return await _deliveries_answer(controls, answer)
    return json_response(answer)


async def _set_portal(request: web.Request) -> web.Response:
    """Sets the callback URL, as a merchant would in the provider's portal."""
    controls = request.app[CONTROLS]
    url = (await control_body(request)).get("webhook_url")
    if not isinstance(url, str) or not url:
        raise ControlRefused(400, "webhook_url is required")
    controls.portal_url = url
    return json_response({"webhook_url": url})
