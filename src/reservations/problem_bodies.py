"""The problem bodies as the OpenAPI document types them, one schema per status that carries
members of its own (kit/openapi.PROBLEM_SCHEMAS names them), so that a generated client reads
a 409's `conflicts` as typed items rather than untyped extra properties.

Only for the document: errors.py builds the bodies. Every member below but `current_version` is
present only for the conditions that carry it, so none is required; none is ever null."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from reservations.alternatives.schemas import Alternatives
from reservations.bookings.schemas import OccurrenceReport
from reservations.kit.openapi import Problem, absent_when_unused
from reservations.reservations.schemas import ConflictItem


class FieldError(BaseModel):
    """One field a 422 `invalid-input` names."""

    model_config = ConfigDict(json_schema_extra=absent_when_unused)

    field: str = Field(description="The field's path in its part of the request (a.b.0).")
    in_: str = Field(alias="in", description="body, query, path or header.")
    message: str
    code: str | None = Field(
        default=None,
        description="For the request schema's errors: a machine-readable kind, e.g. "
        "string_too_long or missing.",
    )
    context: dict[str, Any] | None = Field(
        default=None, description="The limit or pattern the value missed, when there is one."
    )


class RuleViolation(BaseModel):
    reason: str = Field(description="outside-opening-hours, in-blackout, off-grid, ...")
    detail: str


class PoolCandidate(BaseModel):
    """One resource of a pool and why it did not take the booking (a create from a pool)."""

    model_config = ConfigDict(json_schema_extra=absent_when_unused)

    resource_id: UUID
    status: int = Field(description="What a direct create of it got: 409, 422 or 404.")
    type: str = Field(description="That refusal's problem type.")
    detail: str | None = None
    reason: str | None = Field(default=None, description="booking-rule-violated's first rule.")
    violations: list[RuleViolation] | None = None
    conflicts: list[ConflictItem] | None = Field(
        default=None, description="reservation-conflict: the live reservations in the way."
    )
    source: str | None = Field(
        default=None, description="`availability-map` when the map refused it."
    )


_CANDIDATES = "A create from a pool: each resource tried, in the order tried, and why it refused."


class ConflictProblem(Problem):
    """409: `reservation-conflict`, `hold-expired`, `capacity-in-use`, `approval-required`,
    `idempotency-key-in-use` and the other conflicts (see /problems)."""

    conflicts: list[ConflictItem] | None = Field(
        default=None, description="reservation-conflict: the live reservations in the way."
    )
    occurrences: list[OccurrenceReport] | None = Field(
        default=None, description="A booking's conflict: each occurrence and why it failed."
    )
    source: str | None = Field(
        default=None,
        description="`availability-map` when the refusal came from the Redis map, not the "
        "database.",
    )
    alternatives: Alternatives | None = Field(
        default=None,
        description="reservation-conflict on a create, move or booking: bookable alternatives"
        " (docs/api.md, Alternatives).",
    )
    peak_usage: int | None = Field(
        default=None, description="capacity-in-use: the most units live reservations use."
    )
    live_reservations: int | None = Field(
        default=None,
        description="resource-has-future-reservations: how many live reservations end later.",
    )
    candidates: list[PoolCandidate] | None = Field(
        default=None, description="pool-exhausted: " + _CANDIDATES
    )


class PreconditionFailedProblem(Problem):
    """412 `precondition-failed`."""

    current_version: int = Field(description="The version to send in If-Match now.")


class InvalidInputProblem(Problem):
    """422: `invalid-input` (with `errors`), `booking-rule-violated` (with `reason`,
    `violations` and, for a booking, `occurrences`), `idempotency-key-reused`."""

    errors: list[FieldError] | None = Field(default=None, description="invalid-input's fields.")
    reason: str | None = Field(
        default=None, description="booking-rule-violated: the first rule broken."
    )
    violations: list[RuleViolation] | None = Field(
        default=None, description="booking-rule-violated: every rule broken."
    )
    occurrences: list[OccurrenceReport] | None = Field(
        default=None, description="A booking's refusal: each occurrence and why."
    )
    alternatives: Alternatives | None = Field(
        default=None,
        description="booking-rule-violated on a create, move or booking: bookable"
        " alternatives (docs/api.md, Alternatives).",
    )
    candidates: list[PoolCandidate] | None = Field(default=None, description=_CANDIDATES)


class TooManyRequestsProblem(Problem):
    """429: `rate-limited` (with `violated_policies`) or `hold-limit-reached` (with
    `max_live_holds`); both with Retry-After."""

    violated_policies: list[str] | None = Field(
        default=None, description="rate-limited: the quotas used up (key, tenant)."
    )
    max_live_holds: int | None = Field(
        default=None, description="hold-limit-reached: the tenant's cap on live holds."
    )


MODELS: tuple[type[BaseModel], ...] = (
    Problem,
    ConflictProblem,
    PreconditionFailedProblem,
    InvalidInputProblem,
    TooManyRequestsProblem,
)
