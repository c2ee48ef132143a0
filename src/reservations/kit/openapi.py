"""OpenAPI helpers: every error response is documented as problem+json."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.json_schema import models_json_schema

from reservations.errors import PROBLEM_JSON
from reservations.kit.fields import COMPONENT_MARK, components


def absent_when_unused(schema: dict[str, Any]) -> None:
    """For a model whose optional members are left out of a reply, never sent as null
    (`exclude_none`): no null branch and no `default: null` in its schema, so a generated
    client types them "absent or a value", not "absent, null or a value"."""
    for name, prop in schema.get("properties", {}).items():
        branches = prop.get("anyOf", [])
        if {"type": "null"} in branches and len(branches) == 2:
            rest = {k: v for k, v in prop.items() if k != "anyOf"}
            (kept,) = (b for b in branches if b != {"type": "null"})
            schema["properties"][name] = prop = {**kept, **rest}
        if prop.get("default", ...) is None:
            del prop["default"]


class Problem(BaseModel):
    """RFC 9457 problem details. Conditions may add members (`errors`, `conflicts`, ...)."""

    model_config = ConfigDict(extra="allow", json_schema_extra=absent_when_unused)

    type: str
    title: str
    status: int
    detail: str | None = None


_DESCRIPTIONS = {
    401: "Missing, malformed, unknown, expired or revoked API key",
    403: "The key's role does not allow this",
    404: "No such object in your tenant (or not visible to your key)",
    409: "Conflict: overlapping reservation, expired hold, or key in use",
    412: "If-Match does not match the current version",
    413: "Request body too large",
    422: "Invalid input; `errors` lists the fields",
    429: "Rate limit (`rate-limited`) or live-hold cap (`hold-limit-reached`); see Retry-After",
    503: "The database cannot be reached",
}


# The problem body of each status whose problems carry members of their own (the models are
# in reservations/problem_bodies.py); any other status's is Problem.
PROBLEM_SCHEMAS = {
    409: "ConflictProblem",
    412: "PreconditionFailedProblem",
    422: "InvalidInputProblem",
    429: "TooManyRequestsProblem",
}


def problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    """Every route may also answer 429 (rate limits) and 503 (database unreachable)."""
    codes = tuple(sorted({*codes, 429, 503}))
    return {
        code: {
            "description": _DESCRIPTIONS[code],
            "content": {
                PROBLEM_JSON: {
                    "schema": {
                        "$ref": f"#/components/schemas/{PROBLEM_SCHEMAS.get(code, 'Problem')}"
                    }
                }
            },
        }
        for code in codes
    }


def add_problem_schemas(
    schema: dict[str, Any], models: Sequence[type[BaseModel]]
) -> dict[str, Any]:
    """Register the problem components that `problems()` refers to, with the models they
    use; a model the document has already (from a route) must be the same schema."""
    registered = schema.setdefault("components", {}).setdefault("schemas", {})
    _, found = models_json_schema(
        [(model, "serialization") for model in models],
        ref_template="#/components/schemas/{model}",
    )
    for name, component in found.get("$defs", {}).items():
        known = registered.setdefault(name, component)
        assert known == component, f"two schemas named {name} in the document"
    missing = {"Problem", *PROBLEM_SCHEMAS.values()} - set(registered)
    assert not missing, f"no model for {missing}"
    return schema


def link(
    operation_id: str, description: str, *, parameters: dict[str, str] | None = None
) -> dict[str, Any]:
    """An OpenAPI link from a response to the operation that takes what it returned."""
    out: dict[str, Any] = {"operationId": operation_id, "description": description}
    if parameters:
        out["parameters"] = parameters
    return out


def parameters_without_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A header or query parameter is sent or left out; it cannot be null. FastAPI writes an
    optional one (`str | None = None`) as `anyOf: [..., {"type": "null"}]`, which tells clients
    (and fuzzers) to send the text "null"; keep only the non-null branch."""
    for item in schema.get("paths", {}).values():
        for operation in item.values():
            for parameter in operation.get("parameters", []):
                param_schema = parameter.get("schema", {})
                branches = param_schema.get("anyOf")
                if not branches or {"type": "null"} not in branches:
                    continue
                rest = [b for b in branches if b != {"type": "null"}]
                outer = {k: v for k, v in param_schema.items() if k != "anyOf"}
                parameter["schema"] = (
                    {**rest[0], **outer}
                    if len(rest) == 1
                    else {
                        **outer,
                        "anyOf": rest,
                    }
                )
    return schema


def add_field_components(schema: dict[str, Any]) -> dict[str, Any]:
    """Register the components of kit/fields.py and point every field marked with one there."""
    registered = schema.setdefault("components", {}).setdefault("schemas", {})
    registered.update(components())
    return _resolve_marks(schema)  # type: ignore[no-any-return]


def _resolve_marks(node: Any) -> Any:
    if isinstance(node, dict):
        if COMPONENT_MARK in node:
            rest = {k: _resolve_marks(v) for k, v in node.items() if k != COMPONENT_MARK}
            return {"$ref": f"#/components/schemas/{node[COMPONENT_MARK]}", **rest}
        return {k: _resolve_marks(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve_marks(v) for v in node]
    return node
