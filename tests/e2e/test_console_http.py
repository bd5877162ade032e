"""The finance console over plain HTTP (aiohttp's client, no browser): signing in and out, the
cookie's flags, redirects when not signed in, read-only methods, the security headers, escaping
of hostile provider text, and pages that agree with the API (items, CSV, balances, audit).

`console_world` stages, through the sandboxes and the API, two open items in two providers and
currencies, one of them on a payment whose order id and a webhook body carry markup.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from http.cookies import SimpleCookie

import aiohttp
import pytest
from aiohttp import web

from adapters.config import ApiToken, Settings
from adapters.http.console import console_app
from adapters.http.keys import SETTINGS
from ledger.codec import decode_document
from tests.e2e.harness import serve
from tests.e2e.ledger_world import COINCOIN_TOKEN, World, fund_payment_engine, open_world

FINANCE_TOKEN = "console-finance-token-4f1c"
PAYMENTS_ONLY_TOKEN = "console-payments-token-93ab"
SCRIPT = "<script>alert(1)</script>"
IMAGE = '"><img src=x onerror=alert(1)>'
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self';"
    " frame-ancestors 'none'; base-uri 'none'"
)


@dataclass
class ConsoleWorld:
    world: World
    url: str
    hostile_payment: dict
    other_payment: dict
    withdrawal: dict


async def stage(world: World) -> ConsoleWorld:
    """Tokens for the console, and the items its pages show."""
    tokens = world.ledger.app[SETTINGS].api.tokens
    tokens.append(ApiToken(name="finance", token=FINANCE_TOKEN, scopes=["finance:read"]))
    tokens.append(ApiToken(name="payments", token=PAYMENTS_ONLY_TOKEN, scopes=["payments:read"]))
    # A merchant's order id and a provider's body are text anyone may have chosen.
    hostile = await world.pay("coincoin", f"CON-{SCRIPT}", "120.50", "USDT")
    await world.scenario("coincoin", hostile["provider_ref"], "partial")  # underpaid, USDT
    (submitted,) = [
        decode_document(e.payload)
        for e in await world.ledger.store.read_stream(hostile["payment_id"])
        if e.type == "Payment.Submitted"
    ]
    paid_to = {"payment_id": hostile["provider_ref"], "address": submitted["pay_address"]}
    body = {
        "payment": {**paid_to, "network": "tron", "coin": "usdt", "amount": 120.5},
        "collected": {"usdt": 60.25},
        "state": 0,
        "note": SCRIPT,
        "memo": IMAGE,
    }
    status, answer = await world.webhook(
        "coincoin", json.dumps(body).encode(), token=COINCOIN_TOKEN
    )
    assert 200 == status, answer
    other = await world.pay("payment_engine", "CON-over", "50.00", "USD")
    await world.scenario("payment_engine", other["provider_ref"], "over")  # overpaid, USD
    await fund_payment_engine(world, "CON-funds", "100.00")
    withdrawal = await world.withdraw("payment_engine", "CON-wd", "40.00", "USD")
    await world.ledger.caught_up()
    return ConsoleWorld(world, world.ledger.url, hostile, other, withdrawal)


@asynccontextmanager
async def console_world(store, monkeypatch) -> AsyncIterator[ConsoleWorld]:
    async with open_world(store, monkeypatch) as world:
        yield await stage(world)


@pytest.fixture
async def console(store, monkeypatch):
    async with console_world(store, monkeypatch) as staged:
        yield staged


@asynccontextmanager
async def browser_session(url: str, token: str | None = FINANCE_TOKEN):
    """A client with its own cookie jar (loopback IPs need `unsafe`), signed in with `token`."""
    async with aiohttp.ClientSession(url, cookie_jar=aiohttp.CookieJar(unsafe=True)) as client:
        if token is not None:
            async with client.post(
                "/console/sign-in", data={"token": token}, allow_redirects=False
            ) as reply:
                assert 303 == reply.status, await reply.text()
        yield client


async def get(client: aiohttp.ClientSession, path: str, **params: str) -> tuple[int, str, dict]:
    async with client.get(path, params=params, allow_redirects=False) as reply:
        return reply.status, await reply.text(), dict(reply.headers)


def rows_of(html: str) -> int:
    return html.count('<a class="timeline"')


# ---------------------------------------------------------------- signing in and out


async def test_every_page_redirects_to_sign_in_when_not_signed_in(console):
    pages = ["/console/", "/console/balances", "/console/audit", "/console/items.csv"]
    pages.append(f"/console/payments/{console.hostile_payment['payment_id']}")
    async with browser_session(console.url, token=None) as client:
        for page in pages:
            status, _, headers = await get(client, page)
            assert (303, "/console/sign-in") == (status, headers["Location"]), page
        status, _, headers = await get(client, "/console")
        assert (308, "/console/") == (status, headers["Location"])


async def test_a_wrong_token_and_a_token_without_finance_read_are_refused(console):
    async with browser_session(console.url, token=None) as client:
        for token, status, said in [
            ("not-a-token", 401, "That token is not valid."),
            (PAYMENTS_ONLY_TOKEN, 403, "That token lacks the scope finance:read."),
            ("", 400, "Enter an API token."),
        ]:
            async with client.post(
                "/console/sign-in", data={"token": token}, allow_redirects=False
            ) as reply:
                assert status == reply.status
                assert said in await reply.text()
                assert "Set-Cookie" not in reply.headers
        assert 303 == (await get(client, "/console/"))[0]


async def test_signing_in_keeps_the_token_in_an_httponly_samesite_strict_cookie(console):
    async with aiohttp.ClientSession(console.url) as client, client.post(
        "/console/sign-in", data={"token": FINANCE_TOKEN}, allow_redirects=False
    ) as reply:
        assert (303, "/console/") == (reply.status, reply.headers["Location"])
        (header,) = reply.headers.getall("Set-Cookie")
    morsel = SimpleCookie(header)["ledger_console"]
    assert morsel["httponly"] is True
    assert "Strict" == morsel["samesite"]
    assert "/console/" == morsel["path"]
    assert "" == morsel["secure"]  # plain http here; see the https test below
    assert FINANCE_TOKEN not in header  # kept encoded, never in a readable form in logs


async def test_over_https_the_cookie_is_secure():
    """Without a database: sign-in reads only the configured tokens. The request is seen as
    https, as behind a TLS listener."""
    settings = Settings(
        api={"tokens": [{"name": "finance", "token": FINANCE_TOKEN, "scopes": ["finance:read"]}]}
    )

    @web.middleware
    async def as_https(request, handler):
        return await handler(request.clone(scheme="https"))

    app = web.Application(middlewares=[as_https])
    app[SETTINGS] = settings
    app.add_subapp("/console/", console_app())
    async with serve(app) as url, aiohttp.ClientSession(url) as client, client.post(
        "/console/sign-in", data={"token": FINANCE_TOKEN}, allow_redirects=False
    ) as reply:
        assert 303 == reply.status
        morsel = SimpleCookie(reply.headers["Set-Cookie"])["ledger_console"]
    assert morsel["secure"] is True


async def test_a_sign_in_posted_from_another_origin_is_refused(console):
    async with browser_session(console.url, token=None) as client:
        for headers in [
            {"Origin": "https://evil.example"},
            {"Origin": "https://evil.example", "Sec-Fetch-Site": "same-origin"},
            {"Origin": "null"},  # a sandboxed frame, without saying where it is
            {"Origin": "null", "Sec-Fetch-Site": "cross-site"},
            {"Sec-Fetch-Site": "same-site"},
        ]:
            async with client.post(
                "/console/sign-in",
                data={"token": FINANCE_TOKEN},
                headers=headers,
                allow_redirects=False,
            ) as reply:
                assert 403 == reply.status, headers
                assert "Set-Cookie" not in reply.headers
        for headers in [
            {"Origin": console.url},
            # What Chromium sends for the console's own form under Referrer-Policy no-referrer.
            {"Origin": "null", "Sec-Fetch-Site": "same-origin"},
        ]:
            async with client.post(
                "/console/sign-in",
                data={"token": FINANCE_TOKEN},
                headers=headers,
                allow_redirects=False,
            ) as reply:
                assert 303 == reply.status, headers


async def test_signing_out_clears_the_cookie(console):
    async with browser_session(console.url) as client:
        assert 200 == (await get(client, "/console/"))[0]
        async with client.post("/console/sign-out", allow_redirects=False) as reply:
            assert (303, "/console/sign-in") == (reply.status, reply.headers["Location"])
            morsel = SimpleCookie(reply.headers["Set-Cookie"])["ledger_console"]
            assert ("", "0") == (morsel.value, morsel["max-age"])
        assert 303 == (await get(client, "/console/"))[0]


async def test_a_token_removed_from_the_configuration_ends_its_sessions(console):
    async with browser_session(console.url) as client:
        assert 200 == (await get(client, "/console/balances"))[0]
        tokens = console.world.ledger.app[SETTINGS].api.tokens
        tokens[:] = [t for t in tokens if t.name != "finance"]
        assert 303 == (await get(client, "/console/balances"))[0]


# ---------------------------------------------------------------- read-only, headers


async def test_no_page_takes_a_method_that_could_change_data(console):
    async with browser_session(console.url) as client:
        for method in ("POST", "PUT", "PATCH", "DELETE"):
            for page in ("/console/", "/console/balances", "/console/audit"):
                async with client.request(method, page, allow_redirects=False) as reply:
                    assert 405 == reply.status, (method, page)


async def test_every_page_carries_the_security_headers(console):
    payment = f"/console/payments/{console.hostile_payment['payment_id']}"
    async with browser_session(console.url) as client:
        for page in ["/console/sign-in", "/console/", payment, "/console/balances",
                     "/console/audit", "/console/items.csv", "/console/payments/nope",
                     "/console/no-such-page", "/console/static/console.css"]:
            _, _, headers = await get(client, page)
            assert CSP == headers["Content-Security-Policy"], page
            assert "unsafe-inline" not in headers["Content-Security-Policy"]
            assert ("DENY", "no-referrer", "no-store") == (
                headers["X-Frame-Options"],
                headers["Referrer-Policy"],
                headers["Cache-Control"],
            ), page


async def test_hostile_text_is_escaped_on_every_page_that_shows_it(console):
    payment = console.hostile_payment["payment_id"]
    async with browser_session(console.url) as client:
        status, timeline, _ = await get(client, f"/console/payments/{payment}")
        _, items, _ = await get(client, "/console/")
    assert 200 == status
    for html in (timeline, items):
        assert "<script" not in html.lower()
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<img" not in timeline
    assert "&lt;img src=x onerror=alert(1)&gt;" in timeline


async def test_a_withdrawals_timeline_shows_its_events_with_their_hash_links(console):
    withdrawal_id = console.withdrawal["withdrawal_id"]
    async with browser_session(console.url) as client:
        status, html, _ = await get(client, f"/console/withdrawals/{withdrawal_id}")
    assert 200 == status
    assert html.index("Withdrawal.Requested") < html.index("Withdrawal.Submitted")
    events = await console.world.ledger.store.read_stream(withdrawal_id)
    for event in events:
        assert f"<code>{event.hash.hex()}</code>" in html
        assert f"<code>{event.prev_hash.hex()}</code>" in html
    assert "CON-wd" in html
    assert "40.00" in html


async def test_unknown_and_malformed_subjects_are_a_404_page(console):
    async with browser_session(console.url) as client:
        for page in ("/console/payments/nope", "/console/withdrawals/" + "0" * 32,
                     "/console/no-such-page",
                     f"/console/withdrawals/{console.hostile_payment['payment_id']}"):
            status, html, headers = await get(client, page)
            assert 404 == status, page
            assert headers["Content-Type"].startswith("text/html")
            assert "There is no" in html


# ---------------------------------------------------------------- pages agree with the API


async def test_filters_narrow_the_items_and_the_csv_agrees_with_the_api_line_for_line(console):
    ledger = console.world.ledger
    async with browser_session(console.url) as client:
        assert 2 == rows_of((await get(client, "/console/"))[1])
        for filters, expected in [
            ({"reason": "underpaid"}, console.hostile_payment),
            ({"provider": "payment_engine"}, console.other_payment),
            ({"currency": "USDT", "state": "open"}, console.hostile_payment),
            ({"reason": "overpaid", "provider": "payment_engine"}, console.other_payment),
        ]:
            status, html, _ = await get(client, "/console/", **filters, provider_ref="")
            assert (200, 1) == (status, rows_of(html)), filters
            assert expected["payment_id"] in html
            status, text, headers = await get(client, "/console/items.csv", **filters)
            assert 200 == status
            assert headers["Content-Type"].startswith("text/csv")
            _, api_csv = await ledger.call(
                "GET", "/v1/reconciliation/items", params={**filters, "format": "csv"}
            )
            assert api_csv.splitlines() == text.splitlines()
            assert 2 == len(text.splitlines())
        assert 0 == rows_of((await get(client, "/console/", state="cleared"))[1])
        assert 0 == rows_of((await get(client, "/console/", reason="stale"))[1])
        status, html, _ = await get(client, "/console/", reason="not-a-reason")
        assert status in {400, 422}
        assert "reason" in html


async def test_balances_and_the_audit_page_show_what_the_api_says(console):
    ledger = console.world.ledger
    status, made = await ledger.call("POST", "/v1/audit/checkpoints")
    assert 201 == status, made
    _, api_balances = await ledger.call("GET", "/v1/balances")
    _, head = await ledger.call("GET", "/v1/audit/head")
    async with browser_session(console.url) as client:
        _, balances, _ = await get(client, "/console/balances")
        _, audit, _ = await get(client, "/console/audit")
    assert api_balances["items"]
    for item in api_balances["items"]:
        row = (
            f"<tr><td>{item['account']}</td><td>{item['currency']}</td>"
            f'<td class="amount">{item["pending"]}</td><td class="amount">{item["posted"]}</td>'
            f'<td class="amount">{item["available"]}</td></tr>'
        )
        assert row in balances
    assert f'id="head-position">{head["position"]}<' in audit
    assert f'id="head-hash">{head["hash"]}<' in audit
    assert made["signature"] in audit
    assert "NO" not in audit
