"""Schemathesis over the whole internal API, stateful (issue 14, item 3).

test_openapi_e2e.py draws each operation on its own. Here the document is given OpenAPI links
where one answer names what another operation reads (a created payment's id to its view, events
and settlement; a created withdrawal's id to its view and events; every list's `next_cursor` to
its next page; the audit head's position to the export after it; a signed checkpoint to the
list of checkpoints), and schemathesis' state machine walks them: sequences of calls whose later
steps use what earlier answers named, against the ledger with all five provider sandboxes on
loopback. Every answer must not be a server error (a 5xx other than the documented 502/503/504
of a provider or database that failed) and must be a documented status, content type and
body. `LEDGER_TEST_LONG=1` runs ten times as many scenarios.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import copy
import os
from typing import Any

import schemathesis
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.errors import Flaky
from hypothesis.stateful import multiple, rule
from schemathesis.checks import not_a_server_error
from schemathesis.generation.stateful.state_machine import StepInput
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.e2e.harness import TOKEN
from tests.e2e.webhook_kit import PROVIDERS, rig

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
SCENARIOS = 200 if os.environ.get("LEDGER_TEST_LONG") else 20
STEPS = 8
# Requests a sandbox takes, so that the links from a 201 are walked (the first is created, the
# same order again is a 409 naming it); the withdrawal finds no funds (422).
PAYMENT_EXAMPLE = {
    "provider": "payment_engine",
    "order_id": "ORD_stateful_1",
    "amount": "10.00",
    "currency": "USD",
}
WITHDRAWAL_EXAMPLE = {
    "provider": "payment_engine",
    "request_id": "WD_stateful_1",
    "amount": "5.00",
    "currency": "USD",
    "address": "TStatefulAddress012345678901234",
}
SEEN: list[tuple[str, str, int]] = []  # every step's (method, path template, status)
FAILURES: list[str] = []
PAGED = (
    "/v1/payments",
    "/v1/withdrawals",
    "/v1/journal",
    "/v1/reconciliation/items",
    "/v1/audit/checkpoints",
)


def operation_id(document: dict[str, Any], method: str, path: str) -> str:
    return str(document["paths"][path][method]["operationId"])


def link(
    document: dict[str, Any],
    source: tuple[str, str, str],
    name: str,
    target: tuple[str, str],
    parameters: dict[str, str],
) -> None:
    """Adds an OpenAPI link from the `source` answer (method, path, status) to `target`."""
    method, path, status = source
    answer = document["paths"][path][method]["responses"][status]
    answer.setdefault("links", {})[name] = {
        "operationId": operation_id(document, *target),
        "parameters": parameters,
    }


def with_links(original: dict[str, Any]) -> dict[str, Any]:
    document = copy.deepcopy(original)
    payment = ("post", "/v1/payments", "201")
    for name, target in [
        ("ThePayment", ("get", "/v1/payments/{payment_id}")),
        ("ItsEvents", ("get", "/v1/payments/{payment_id}/events")),
        ("SettleIt", ("post", "/v1/payments/{payment_id}/settle")),
    ]:
        link(document, payment, name, target, {"payment_id": "$response.body#/payment_id"})
    link(
        document, payment, "ListedByOrder", ("get", "/v1/payments"),
        {"query.order_id": "$response.body#/order_id"},
    )
    withdrawal = ("post", "/v1/withdrawals", "201")
    for name, target in [
        ("TheWithdrawal", ("get", "/v1/withdrawals/{withdrawal_id}")),
        ("ItsEvents", ("get", "/v1/withdrawals/{withdrawal_id}/events")),
    ]:
        link(document, withdrawal, name, target, {"withdrawal_id": "$response.body#/withdrawal_id"})
    for path in PAGED:
        link(
            document, ("get", path, "200"), "NextPage", ("get", path),
            {"query.cursor": "$response.body#/next_cursor"},
        )
    link(
        document, ("get", "/v1/audit/head", "200"), "ExportAfter", ("get", "/v1/audit/events"),
        {"query.after": "$response.body#/position"},
    )
    link(
        document, ("post", "/v1/audit/checkpoints", "201"), "Listed",
        ("get", "/v1/audit/checkpoints"), {},
    )
    bodies = {"/v1/payments": PAYMENT_EXAMPLE, "/v1/withdrawals": WITHDRAWAL_EXAMPLE}
    for path, example in bodies.items():
        content = document["paths"][path]["post"]["requestBody"]["content"]["application/json"]
        content["examples"] = {"valid": {"value": example}}
    return document


def creates(schema: Any, path: str, example: dict[str, Any], key: str) -> Any:
    """Random requests to a create, and half of them the valid example under a fresh id."""
    operation = schema[path]["POST"]
    fresh = st.uuids().flatmap(
        lambda u: operation.as_strategy(body={**example, key: f"{example[key]}_{u.hex[:12]}"})
    )
    return st.one_of(operation.as_strategy(), fresh)


def lists(schema: Any, path: str) -> Any:
    """A list's random queries, and a small first page (so that next_cursor is walked)."""
    operation = schema[path]["GET"]
    return st.one_of(operation.as_strategy(), operation.as_strategy(query={"limit": "1"}))


def walk(base_url: str, document: dict[str, Any]) -> int:
    """Runs the state machine (in a worker thread: the test's loop serves the requests)."""
    schema = schemathesis.openapi.from_dict(with_links(document))
    machine = schema.as_state_machine()
    steps = scenarios = 0

    def produced(self: Any, case: Any, status: int) -> Any:
        # As schemathesis' own entry points do: the case is recorded, so that the steps that
        # follow a link from it find their parent.
        step = StepInput.initial(case)
        self.recorder.record_case(case=case)
        self.control.record_step(step, self.recorder)
        output = self.step(step)
        return output if output.response.status_code == status else multiple()

    class Walk(machine):  # type: ignore[misc,valid-type]
        """Schemathesis takes as entry points only the operations its dependency analysis
        trusts; the creates and lists are entry points here too, so the links are walked."""

        @rule(
            target=machine.bundles["POST /v1/payments -> 201"],
            case=creates(schema, "/v1/payments", PAYMENT_EXAMPLE, "order_id"),
        )
        def create_payment(self, case: Any) -> Any:
            return produced(self, case, 201)

        @rule(
            target=machine.bundles["POST /v1/withdrawals -> 201"],
            case=creates(schema, "/v1/withdrawals", WITHDRAWAL_EXAMPLE, "request_id"),
        )
        def create_withdrawal(self, case: Any) -> Any:
            return produced(self, case, 201)

        @rule(target=machine.bundles["GET /v1/payments -> 200"], case=lists(schema, "/v1/payments"))
        def list_payments(self, case: Any) -> Any:
            return produced(self, case, 200)

        @rule(target=machine.bundles["GET /v1/journal -> 200"], case=lists(schema, "/v1/journal"))
        def read_journal(self, case: Any) -> Any:
            return produced(self, case, 200)

        @rule(
            target=machine.bundles["GET /v1/withdrawals -> 200"],
            case=lists(schema, "/v1/withdrawals"),
        )
        def list_withdrawals(self, case: Any) -> Any:
            return produced(self, case, 200)

        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {
                "base_url": base_url,
                "headers": {"Authorization": f"Bearer {TOKEN}"},
                "timeout": 30,
            }

        def validate_response(self, response: Any, case: Any, **kwargs: Any) -> None:
            # Failures are collected, not raised: hypothesis would replay the sequence to
            # confirm it, and the server's state (ids taken, checkpoints made) has moved on, so
            # the replay draws differently (FlakyStrategyDefinition) and hides the failure.
            nonlocal steps
            steps += 1
            SEEN.append((case.method, case.path, response.status_code))
            try:
                case.validate_response(response, checks=CHECKS)
            except Exception as failure:
                FAILURES.append(
                    f"{case.method} {case.formatted_path} {response.status_code}: "
                    f"{str(failure)[:400]}"
                )

        def teardown(self) -> None:
            nonlocal scenarios
            scenarios += 1
            super().teardown()

    # The server's state moves on between scenarios (ids taken, checkpoints made), so a prefix
    # hypothesis has seen may draw differently the next time (Flaky); schemathesis' own engine
    # starts the machine again then, and so does this.
    for _ in range(5):
        with contextlib.suppress(Flaky):
            Walk.run(
                settings=settings(
                    max_examples=SCENARIOS - scenarios,
                    stateful_step_count=STEPS,
                    deadline=None,
                    database=None,
                    phases=[Phase.explicit, Phase.generate],
                    suppress_health_check=list(HealthCheck),
                )
            )
        if scenarios >= SCENARIOS:
            break
    return steps


async def test_linked_sequences_of_calls_never_answer_a_server_error(store):
    async with rig(store, PROVIDERS) as bench:
        await bench.create_payment("coinpay")  # something to list, page and export
        status, document = await bench.ledger.call("GET", "/v1/openapi.json")
        assert 200 == status
        steps = await asyncio.to_thread(walk, bench.ledger.url, document)
    assert [] == FAILURES, "\n".join(FAILURES)
    assert steps >= SCENARIOS
    if os.environ.get("LEDGER_TEST_SHOW_STEPS"):
        print(*sorted(collections.Counter(SEEN).items()), sep="\n")


def test_the_links_name_operations_the_document_has():
    """The links above are checked against a document's own operation ids, so a renamed route
    fails here, not silently as a link nobody walks."""
    paths: dict[str, Any] = {}
    targets = [
        ("post", "/v1/payments"), ("get", "/v1/payments"), ("get", "/v1/payments/{payment_id}"),
        ("get", "/v1/payments/{payment_id}/events"), ("post", "/v1/payments/{payment_id}/settle"),
        ("post", "/v1/withdrawals"), ("get", "/v1/withdrawals"),
        ("get", "/v1/withdrawals/{withdrawal_id}"),
        ("get", "/v1/withdrawals/{withdrawal_id}/events"), ("get", "/v1/journal"),
        ("get", "/v1/reconciliation/items"), ("get", "/v1/audit/head"),
        ("get", "/v1/audit/events"), ("post", "/v1/audit/checkpoints"),
        ("get", "/v1/audit/checkpoints"),
    ]
    for method, path in targets:
        body = {"content": {"application/json": {}}}
        paths.setdefault(path, {})[method] = {
            "operationId": f"{method}{path}",
            "responses": {"200": {}, "201": {}},
            **({"requestBody": body} if method == "post" else {}),
        }
    linked = with_links({"paths": paths})
    created = linked["paths"]["/v1/payments"]["post"]["responses"]["201"]["links"]
    assert {"ThePayment", "ItsEvents", "SettleIt", "ListedByOrder"} == set(created)
    ids = {op["operationId"] for item in paths.values() for op in item.values()}
    every = [
        link_["operationId"]
        for item in linked["paths"].values()
        for op in item.values()
        for answer in op["responses"].values()
        for link_ in answer.get("links", {}).values()
    ]
    assert set(every) <= ids
