"""Schemathesis hooks for test_openapi.py, loaded by the `st` process through `hooks` in its
configuration (not a test module: pytest collects only test_*.py)."""

from __future__ import annotations

import contextlib
import copy
import os
import uuid
from datetime import datetime, timedelta
from typing import Any

import schemathesis

from reservations.kit.fields import STRICT_METADATA_VALUE

# Refusals of schema-valid input for what JSON Schema cannot say. Each is (field, a fragment of
# the message), the field None for any; a 422 whose every error is one of these is the API
# working as documented.
SEMANTIC: list[tuple[str | None, str]] = [
    # Cursors are opaque: only the API's own next_cursor is one.
    ("cursor", "malformed cursor"),
    # The order or combination of several fields.
    ("end", "must be after start"),
    ("to", "must be after from"),
    (None, "end must be after start"),
    (None, "must not be shorter than min_duration"),
    (None, "send a non-zero shift and/or a duration"),
    (None, "needs `occurrence`"),
    (None, "exdates need an rrule"),
    (None, "each resource may appear once"),
    (None, "appears twice"),
    (None, "give exactly one of"),  # a feed is of a resource, of a key or of a tag
    # PT1H and PT60M are one lead time: uniqueItems compares the strings only.
    (None, "each lead time may appear once"),
    (None, "content must be events"),  # a key's feed is of its reservations
    (None, "send content freebusy"),  # a tag's feed is free/busy
    # A create (and a booking's item) names a resource or a pool (docs/pools.md); the document
    # keeps both optional members, so that generated clients keep their ReservationCreate.
    (None, "or a `pool` instead"),
    (None, "or a `pool`, not both"),
    (None, "a pool needs `tags` or `resource_ids`"),
    (None, "one item of a booking may name a pool"),
    # What a pool matches is the tenant's state, as a 404 is.
    ("pool", "matches no resource"),
    ("pool", "at most 50 resources"),
    (None, "intervals "),  # "intervals 08:00-10:00 and 09:00-11:00 overlap"
    # Totals a pattern cannot add up: a duration (366 days; buffers one day; positive where a
    # length is meant), a window (31 days), metadata (16 KiB, 8 levels).
    (None, "duration is too large"),
    (None, "at most 366 days"),
    (None, "must be at most one day"),
    ("approval_window", "must be between PT1M and P7D"),
    (None, "must be between PT1M and P1D"),  # check_in.release_after
    (None, "each must be between PT1M and P7D"),  # reminders
    ("from", "report too large"),  # a report's resources x days (its window: "window too long")
    (None, "must be positive"),
    ("to", "window too long"),
    (None, "the window may span at most"),
    (None, "must serialize to at most"),
    (None, "is nested deeper than"),
    # Limits set by configuration (RESERVATIONS_MAX_*), not by the schema.
    ("end", "too long"),
    ("end", "reservation too long"),
    ("hold_seconds", "too long"),
    ("duration", "too long"),
    # The clock: a waitlist entry is for a range that has not begun.
    ("start", "must be in the future"),
    # The state of other objects: a resource's capacity, a booking's occurrences.
    ("quantity", "at most"),
    ("shift", "out of range"),
    # RFC 5545's grammar.
    ("rrule", ""),
    # A webhook URL: RFC 3986's grammar beyond the scheme (credentials, fragments, host
    # names), where the host resolves (public addresses only), and https unless the server
    # allows private receivers (configuration). webhooks/addresses.py has every rule.
    ("url", ""),
    # The year pattern keeps timestamps in range except on the edge days, where only the
    # offset decides (1970-01-01T00:30+01:00 is 1969 in UTC).
    (None, "must be between 1970-01-01 and 9000-01-01"),
]

# 422 problem types that are about the state of things, not the shape of the request.
STATEFUL_422 = {"/problems/booking-rule-violated", "/problems/idempotency-key-reused"}


def _semantic(error: dict[str, Any]) -> bool:
    field, message = str(error.get("field", "")), str(error.get("message", ""))
    return any(
        (f is None or field == f or field.endswith("." + f)) and fragment in message
        for f, fragment in SEMANTIC
    )


@schemathesis.check
def schema_valid_input_is_refused_only_for_rules_schema_cannot_express(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case
) -> bool | None:
    """Stands in for the 422 that test_openapi.py lets `positive_data_acceptance` accept."""
    if case.meta is None or not case.meta.generation.mode.is_positive:
        return None
    if response.status_code != 422:
        return None
    body = response.json()
    if body.get("type") in STATEFUL_422:
        return None
    errors = body.get("errors") or []
    unexplained = [e for e in errors if not _semantic(e)]
    if errors and not unexplained:
        return None
    raise AssertionError(
        "A request the schema allows was refused with 422 for a reason the schema could "
        f"have said: {unexplained or body}"
    )


# The fuzzer draws time zones from these instead of all ~600: every zone takes the same code
# path, and the coverage phase would otherwise send each one to each operation that takes a zone
# (a minute of this test's budget). Zone arithmetic itself is tests/kit/test_localtime.py's.
ZONES = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "America/Sao_Paulo",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "Australia/Lord_Howe",
    "Pacific/Chatham",
    "Pacific/Kiritimati",
    "America/St_Johns",
]


@schemathesis.hook
def before_load_schema(context: schemathesis.HookContext, raw_schema: dict[str, Any]) -> None:
    zones = raw_schema["components"]["schemas"]["TimeZoneName"]
    assert set(ZONES) <= set(zones["enum"]), "a sample zone is not in the API's list"
    zones["enum"] = ZONES
    del zones["x-enum-varnames"]
    # The document's MetadataValue is flat (any JSON) for client generators; generate from the
    # exact form the validator applies (kit/fields.py says why).
    raw_schema["components"]["schemas"]["MetadataValue"] = copy.deepcopy(STRICT_METADATA_VALUE)


# Ranges a positive case sends, by operation: (where, start, end, longest). Two independent
# random instants are nearly never a bookable range, so without this the fuzzer would hardly
# ever get past the 422 for `end` and reach the booking logic.
RANGES = {
    "POST /v1/reservations": ("body", "start", "end", timedelta(days=31)),
    "PATCH /v1/reservations/{reservation_id}": ("body", "start", "end", timedelta(days=31)),
    "POST /v1/bookings": ("body", "start", "end", timedelta(days=31)),
    "POST /v1/availability/search": ("body", "from", "to", timedelta(days=31)),
    "GET /v1/resources/{resource_id}/availability": ("query", "from", "to", timedelta(days=31)),
}


def _instant(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


# Resources test_openapi.py made before the run (capacities 1 to 4, several zones and policies).
# A random id is a 404; three positive cases in four that name a resource to book or to read
# the availability of name one of these instead, chosen by the id drawn, and ask for at most 4
# units, so the rest of the request reaches the booking rules, the constraint and the slots.
POOL = [r for r in os.environ.get("RSV_FUZZ_RESOURCES", "").split(",") if r]


def _pooled(drawn: Any, offset: int = 0) -> Any:
    try:
        n = uuid.UUID(str(drawn)).int
    except ValueError:
        return drawn
    if not POOL or n % 4 == 0:
        return drawn
    return POOL[(n + offset) % len(POOL)]


def _few_units(units: dict[str, Any]) -> None:
    quantity = units.get("quantity")
    if isinstance(quantity, int) and quantity > 4:
        units["quantity"] = 1 + quantity % 4


def _steer_resources(case: schemathesis.Case) -> None:
    label, body = case.operation.label, case.body
    if label == "POST /v1/reservations" and isinstance(body, dict) and "resource_id" in body:
        body["resource_id"] = _pooled(body["resource_id"])
        _few_units(body)
    elif label == "POST /v1/bookings" and isinstance(body, dict):
        items = body.get("resources")
        if isinstance(items, list) and items and isinstance(items[0], dict):
            first = items[0].get("resource_id")
            for i, item in enumerate(items[: len(POOL)]):
                if isinstance(item, dict) and "resource_id" in item:
                    item["resource_id"] = _pooled(first, i)
                    _few_units(item)
    elif label == "GET /v1/resources/{resource_id}/availability":
        params = case.path_parameters
        if params and "resource_id" in params:
            params["resource_id"] = _pooled(params["resource_id"])


def _steer_range(case: schemathesis.Case) -> None:
    spec = RANGES.get(case.operation.label)
    if spec is None:
        return
    where, start_key, end_key, longest = spec
    data = case.query if where == "query" else case.body
    if not isinstance(data, dict):
        return
    start, end = _instant(data.get(start_key)), _instant(data.get(end_key))
    if start is None or end is None or start < end <= start + longest:
        return
    span = timedelta(minutes=15 * (1 + int(start.timestamp()) % 8))
    with contextlib.suppress(OverflowError):
        data[end_key] = (start + span).isoformat()


@schemathesis.hook
def map_case(context: schemathesis.HookContext, case: schemathesis.Case) -> schemathesis.Case:
    """Positive cases only (negative ones stay as drawn): book the pool's resources, for a range
    the API can book (end after start, 15 minutes to 2 hours on, chosen by the start)."""
    if case.meta is None or not case.meta.generation.mode.is_positive:
        return case
    _steer_resources(case)
    _steer_range(case)
    return case
