"""Builds the OpenAPI 3.1 document from the operations table and the pydantic models.

OpenAPI 3.1's schema dialect is JSON Schema 2020-12, which is what pydantic writes, so each
model's schema is used as pydantic gives it; only query parameters are reshaped (one parameter
per field, as they travel: strings in a URL, never null, cursors opaque).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from adapters.config import PROVIDER_IDS
from adapters.http.openapi import views
from adapters.http.openapi.operations import OPERATIONS, Operation
from adapters.http.query_params import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    PaymentListQuery,
    WithdrawalListQuery,
)
from ledger.payment import Coverage, PaymentStatus
from ledger.withdrawal import WithdrawalStatus
from projections.findings import Reason

_REF = "#/components/schemas/{model}"
_PROBLEM_JSON = "application/problem+json"
_TITLES = {
    400: "The request is not one (not JSON, wrong shape, unknown or repeated parameter)",
    401: "No valid bearer token, or a webhook whose signature or client id is wrong",
    403: "The token lacks the operation's scope",
    404: "No such resource",
    409: "Idempotency-Key reused with another body or still in progress, or a conflict",
    413: "Body over the size limit",
    422: "Well-formed but breaks a rule; `type` names the rule",
    502: "The provider refused the request; the subject it names ended failed",
    503: "Database (or the projections a read waits for) unavailable; retry",
    504: "The provider's answer was lost; the subject it names stays submitting",
}
# Query parameters whose type on the wire differs from the field's parsed type.
_WIRE_SCHEMAS: dict[str, dict[str, Any]] = {
    "cursor": {"type": "string", "description": "next_cursor of the previous page (opaque)"},
    "limit": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
}

# The values a text field takes, where its validator (`one_of`) says so but its schema cannot.
_PROVIDERS = {"enum": list(PROVIDER_IDS)}
_ENUMS: dict[tuple[type[BaseModel] | None, str], dict[str, Any]] = {
    (PaymentListQuery, "status"): {"enum": [s.value for s in PaymentStatus]},
    (PaymentListQuery, "coverage"): {"enum": [c.value for c in Coverage]},
    (WithdrawalListQuery, "status"): {"enum": [s.value for s in WithdrawalStatus]},
    (None, "reason"): {"enum": [r.value for r in Reason]},
    (None, "state"): {"enum": ["open", "cleared", "all"]},
    (None, "provider"): _PROVIDERS,
}


def openapi_document() -> dict[str, Any]:
    models: set[type[BaseModel]] = {views.Problem, *_models()}
    ordered = sorted(models, key=lambda model: model.__name__)
    _, definitions = models_json_schema([(m, "validation") for m in ordered], ref_template=_REF)
    paths: dict[str, dict[str, Any]] = {}
    for operation in OPERATIONS:
        paths.setdefault(operation.path, {})[operation.method] = _operation(operation)
    for name in ("PaymentRequest", "WithdrawalRequest"):
        definitions["$defs"][name]["properties"]["provider"] |= _PROVIDERS
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Payment ledger",
            "version": "1",
            "description": "The ledger's internal API and webhook endpoints (docs: API.md).",
        },
        "paths": paths,
        "components": {
            "schemas": definitions["$defs"],
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API token from the config's [[api.tokens]]; each "
                    "operation names the scope it needs (`admin` holds every scope).",
                }
            },
        },
    }


def _models() -> set[type[BaseModel]]:
    found: set[type[BaseModel]] = set()
    for operation in OPERATIONS:
        found |= {m for m in (operation.answer, operation.body) if m is not None}
    return found


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": _REF.format(model=model.__name__)}


def _operation(operation: Operation) -> dict[str, Any]:
    described: dict[str, Any] = {
        "operationId": f"{operation.method}_{operation.path}".replace("/", "_").strip("_"),
        "summary": operation.summary,
        "tags": [operation.tag],
        "parameters": _path_parameters(operation.path) + _query_parameters(operation.query),
        "responses": _responses(operation),
    }
    if operation.scope is None:
        described["security"] = []
    else:
        # OpenAPI 3.1 lets a non-OAuth scheme list the roles it needs: the token's scope.
        described["security"] = [{"bearer": [operation.scope]}]
        described["description"] = f"Needs a token with scope `{operation.scope}`."
    if operation.idempotent_create:
        described["parameters"].append(
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "schema": {"type": "string", "minLength": 1, "maxLength": 255},
                "description": "Replays the first answer for the same body; 409 for another.",
            }
        )
    if operation.body is not None:
        content = {"application/json": {"schema": _ref(operation.body)}}
        described["requestBody"] = {"required": True, "content": content}
    elif operation.path.startswith("/v1/webhooks/"):
        # The provider's own body, signed as it sends it: any bytes reach the ledger's checks.
        content = {"application/json": {"schema": {}}}
        described["requestBody"] = {"required": False, "content": content}
    return described


def _path_parameters(path: str) -> list[dict[str, Any]]:
    names = [part[1:-1] for part in path.split("/") if part.startswith("{")]
    string = {"type": "string"}
    return [{"name": n, "in": "path", "required": True, "schema": string} for n in names]


def _query_parameters(model: type[BaseModel] | None) -> list[dict[str, Any]]:
    if model is None:
        return []
    schema = model.model_json_schema(by_alias=True, ref_template=_REF)
    parameters = []
    for name, field in schema["properties"].items():
        wire = _WIRE_SCHEMAS.get(name) or _not_null(field)
        wire |= _ENUMS.get((model, name)) or _ENUMS.get((None, name)) or {}
        parameters.append({"name": name, "in": "query", "required": False, "schema": wire})
    return parameters


def _not_null(field: dict[str, Any]) -> dict[str, Any]:
    """A URL has no null: an optional field's `anyOf [T, null]` travels as T, or is absent."""
    options = [o for o in field.get("anyOf", [field]) if o.get("type") != "null"]
    kept = {k: v for k, v in options[0].items() if k != "title"} if options else {}
    if "default" in field and field["default"] is not None:
        kept["default"] = field["default"]
    if "description" in field:
        kept["description"] = field["description"]
    return kept


def _responses(operation: Operation) -> dict[str, Any]:
    text = {"schema": {"type": "string"}}
    success = text if operation.answer is None else {"schema": _ref(operation.answer)}
    # A JSON answer's model describes its JSON only; the same answer as CSV is text.
    content = {
        media_type: success if media_type.endswith("json") else text
        for media_type in operation.media_types
    }
    responses: dict[str, Any] = {
        str(operation.status): {
            "description": operation.summary,
            "content": content,
            "headers": {"X-Request-Id": {"schema": {"type": "string"}}},
        }
    }
    for status in operation.problems:
        responses[str(status)] = {
            "description": _TITLES[status],
            "content": {_PROBLEM_JSON: {"schema": _ref(views.Problem)}},
        }
    return responses
