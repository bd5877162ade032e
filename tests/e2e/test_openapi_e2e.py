"""The OpenAPI document against the live app: schemathesis draws requests for every operation
from /v1/openapi.json, sends them over loopback with a full-scope token to the ledger with all
five provider sandboxes behind it, and holds every answer to the document: no 5xx except the
documented 502/503/504, a documented status, content type and body."""

from __future__ import annotations

import asyncio
from typing import Any

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.e2e.harness import TOKEN, ledger_with
from tests.e2e.webhook_kit import PROVIDERS, rig

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# Enough to reach each operation's refusals and its success with real ids; the whole run stays
# within seconds (24 operations).
EXAMPLES_PER_OPERATION = 15
VALID_BODIES = {
    "POST /v1/payments": {
        "provider": "coinpay",
        "order_id": "ORD_schemathesis_1",
        "amount": "10.00",
        "currency": "USDT",
    },
    # Nothing was paid in: the sandbox is never asked, the ledger refuses it (422).
    "POST /v1/withdrawals": {
        "provider": "payment_engine",
        "request_id": "WD_schemathesis_1",
        "amount": "5.00",
        "currency": "USD",
        "address": "TSchemathesisAddress0123456789",
    },
}


def check_every_operation(base_url: str, known: dict[str, str]) -> list[str]:
    """Runs in a worker thread, so that the test's loop serves the requests it sends.

    Random draws mostly meet refusals (an unknown id, a currency the provider does not take);
    half the draws for an operation with a path parameter name one that exists, and half the
    creates send a request a sandbox takes (its first time 201, then 409 already-exists), so the
    successes are held to the document as well."""
    schema = schemathesis.openapi.from_url(base_url + "/v1/openapi.json")
    headers = {"Authorization": f"Bearer {TOKEN}"}
    checked = []
    for result in schema.get_all_operations():
        operation = result.ok()
        cases = operation.as_strategy()
        named = {name: value for name, value in known.items() if "{" + name + "}" in operation.path}
        if named:
            cases = st.one_of(cases, operation.as_strategy(path_parameters=named))
        if (body := VALID_BODIES.get(f"{operation.method.upper()} {operation.path}")) is not None:
            cases = st.one_of(cases, operation.as_strategy(body=body))

        @given(case=cases)
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def conforms(case: Any) -> None:
            response = case.call(base_url=base_url, headers=headers, timeout=30)
            case.validate_response(response, checks=CHECKS)

        conforms()
        checked.append(f"{operation.method.upper()} {operation.path}")
    return checked


async def test_every_operation_answers_as_its_openapi_document_says(store):
    async with rig(store) as bench:
        payments = [await bench.create_payment(provider) for provider in PROVIDERS]
        known = {"payment_id": payments[0]["payment_id"], "provider": "coinpay"}
        checked = await asyncio.to_thread(check_every_operation, bench.ledger.url, known)
    assert "POST /v1/payments" in checked
    assert 24 == len(checked)


async def test_the_document_is_openapi_3_1_with_a_scope_for_every_bearer_operation(store):
    async with ledger_with(store, {}) as ledger:
        status, document = await ledger.call("GET", "/v1/openapi.json", headers={})
    assert (200, "3.1.0") == (status, document["openapi"])
    create = document["paths"]["/v1/payments"]["post"]
    assert [{"bearer": ["payments:write"]}] == create["security"]
    assert {"$ref": "#/components/schemas/PaymentRequest"} == (
        create["requestBody"]["content"]["application/json"]["schema"]
    )
    assert [] == document["paths"]["/v1/webhooks/{provider}"]["post"]["security"]


async def test_the_browsable_page_and_its_assets_come_from_the_app_itself(store):
    async with ledger_with(store, {}) as ledger:
        async with ledger.http.get(ledger.url + "/v1/docs/") as page:
            html = await page.text()
        assert 200 == page.status
        assert "http" not in html.split("<body>")[1], "the page must load nothing from outside"
        for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
            async with ledger.http.get(f"{ledger.url}/v1/docs/static/{asset}") as reply:
                assert (200, True) == (reply.status, len(await reply.read()) > 10_000)
