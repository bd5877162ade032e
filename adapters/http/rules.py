"""The validation rules of the internal API's edge: one problem type per broken rule.

Every refusal of a request body or query parameter is one of these, answered as problem+json with
`type` = PROBLEM_BASE + the rule's name. 400: the request cannot be read as one at all (not JSON,
a field missing or unknown, a cursor this API never handed out); 422: it can, but breaks a rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from pydantic import ValidationError
from pydantic_core import PydanticCustomError

from adapters.http.problems import ProblemError

# Input is never echoed whole: a detail quotes at most this many characters of it.
SHOWN_CHARACTERS = 40
# At most this many broken rules are listed in a problem's `errors`.
LISTED_ERRORS = 10


@dataclass(frozen=True, slots=True)
class Rule:
    status: int
    title: str


RULES: dict[str, Rule] = {
    # The body as a whole.
    "body-not-json": Rule(400, "Body is not UTF-8 JSON"),
    "body-must-be-an-object": Rule(400, "Body must be a JSON object"),
    "body-nested-too-deep": Rule(400, "Body is nested too deep"),
    "duplicate-key": Rule(400, "A JSON object repeats a key"),
    "missing-field": Rule(400, "A required field is missing"),
    "unknown-field": Rule(400, "Unknown field"),
    # Fields.
    "field-must-be-a-string": Rule(422, "Field must be a string"),
    "text-must-not-be-empty": Rule(422, "Text must not be empty"),
    "text-too-long": Rule(422, "Text is too long"),
    "text-contains-nul": Rule(422, "Text contains a NUL character"),
    "text-contains-control-character": Rule(422, "Text contains a control character"),
    "text-contains-lone-surrogate": Rule(422, "Text contains a lone surrogate"),
    "text-has-surrounding-whitespace": Rule(422, "Text has surrounding whitespace"),
    "amount-must-be-a-string": Rule(422, "Amount must be a string"),
    "amount-not-a-plain-decimal": Rule(422, "Amount is not a plain decimal"),
    "amount-too-many-integer-digits": Rule(422, "Amount has too many integer digits"),
    "amount-too-many-fraction-digits": Rule(422, "Amount has too many fraction digits"),
    "amount-must-be-positive": Rule(422, "Amount must be positive"),
    "amount-below-provider-minimum": Rule(422, "Amount is below the provider's minimum"),
    "expires-in-minutes-must-be-an-integer": Rule(422, "expires_in_minutes must be an integer"),
    "expires-in-minutes-out-of-range": Rule(422, "expires_in_minutes is out of range"),
    "metadata-must-be-an-object": Rule(422, "metadata must be a JSON object"),
    "metadata-too-deep": Rule(422, "metadata is nested too deep"),
    "metadata-too-large": Rule(422, "metadata is too large"),
    # The provider's terms.
    "provider-not-configured": Rule(422, "Provider is not configured"),
    "operation-not-supported": Rule(422, "The provider offers no such operation"),
    "currency-not-supported": Rule(422, "Currency not supported by the provider"),
    "pay-currency-required": Rule(422, "The provider needs a pay_currency"),
    # Query parameters.
    "unknown-parameter": Rule(400, "Unknown query parameter"),
    "parameter-repeated": Rule(400, "Query parameter given more than once"),
    "parameter-value-not-allowed": Rule(422, "Query parameter value not allowed"),
    "limit-not-an-integer": Rule(400, "limit is not an integer"),
    "limit-out-of-range": Rule(422, "limit is out of range"),
    "instant-not-rfc3339": Rule(400, "Not an RFC 3339 instant"),
    "instant-out-of-range": Rule(422, "Instant is out of range"),
    "cursor-invalid": Rule(400, "Cursor is not one this API handed out"),
    # A value pydantic refused for a reason no rule above names (kept as a safety net: every
    # field has a validator of its own, so this should not be seen).
    "invalid-value": Rule(422, "Invalid value"),
}


def refuse(problem_type: str, detail: str, **extra: Any) -> ProblemError:
    rule = RULES[problem_type]
    return ProblemError(rule.status, problem_type, rule.title, detail, **extra)


def broken(problem_type: str, detail: str) -> PydanticCustomError:
    """Raised inside a field validator: the rule's name travels as pydantic's error type.
    The detail goes in as context, so braces in quoted input are never read as a template."""
    assert problem_type in RULES, problem_type
    return PydanticCustomError(problem_type, "{detail}", {"detail": detail})


def shown(value: Any) -> str:
    """Input quoted for a detail: short, escaped (NUL, surrogates, controls), never whole."""
    if not isinstance(value, str):
        return json_kind(value)
    if len(value) <= SHOWN_CHARACTERS:
        return repr(value)
    return f"{value[:SHOWN_CHARACTERS]!r}... ({len(value)} characters)"


def clipped(text: str) -> str:
    """A name from the input (an unknown field's) fit to put in a problem: escaped, short."""
    escaped = repr(text[:SHOWN_CHARACTERS])[1:-1]
    return escaped + "..." if len(text) > SHOWN_CHARACTERS else escaped


def json_kind(value: Any) -> str:
    """What a parsed JSON value is, in JSON's words."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | Decimal):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def refusal_from(error: ValidationError, location: str) -> ProblemError:
    """The problem for a model's validation errors: a 400 rule before any 422 one, else the
    first in field order. `location` ("field" or "parameter") names what each error is about;
    all broken rules are listed in `errors`. Pydantic's own messages, URLs and input are not
    passed on."""
    # Pydantic's own error types that have a rule of ours.
    renamed = {"missing": f"missing-{location}", "extra_forbidden": f"unknown-{location}"}
    found = []
    for item in error.errors(include_url=False, include_input=False):
        problem_type = renamed.get(item["type"], item["type"])
        if problem_type not in RULES:
            problem_type = "invalid-value"
        name = ".".join(str(part) for part in item["loc"])
        found.append((problem_type, name, item))
    chosen = min(found, key=lambda entry: RULES[entry[0]].status != 400)
    problem_type, name, item = chosen
    detail = _detail(problem_type, name, location, item)
    listed = [{location: clipped(n), "type": t} for t, n, _ in found[:LISTED_ERRORS]]
    return refuse(problem_type, detail, **{location: clipped(name)}, errors=listed)


def _detail(problem_type: str, name: str, location: str, item: Any) -> str:
    if problem_type.startswith("missing-"):
        return f"{name} is required"
    if problem_type.startswith("unknown-"):
        return f"unknown {location} {shown(name)}"
    context = item.get("ctx") or {}
    detail = str(context.get("detail", "is not valid"))
    # Field validators know their rule, not their field: the detail is prefixed with the name.
    return detail if detail.startswith(name) else f"{name}: {detail}"
