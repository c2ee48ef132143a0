"""OpenAPI helpers: every error response is documented as problem+json."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from reservations.errors import PROBLEM_JSON


class Problem(BaseModel):
    """RFC 9457 problem details. Conditions may add members (`errors`, `conflicts`, ...)."""

    model_config = ConfigDict(extra="allow")

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


def problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    """Every route may also answer 429 (rate limits) and 503 (database unreachable)."""
    codes = tuple(sorted({*codes, 429, 503}))
    return {
        code: {
            "description": _DESCRIPTIONS[code],
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for code in codes
    }


def add_problem_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Register the Problem component that `problems()` refers to."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["Problem"] = Problem.model_json_schema()
    return schema
