"""Domain errors carry their HTTP meaning; one set of handlers renders RFC 9457 problem+json.

Every error type has a stable slug; its `type` URI is `/problems/<slug>` (a relative reference,
resolved against the API's base URL). docs/api.md lists them all.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from psycopg import errors as pg_errors
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

PROBLEM_JSON = "application/problem+json"
# The name under which migration 0003's trigger refuses a range before the history horizon.
HISTORY_HORIZON = "reservation_history_horizon"


def problem_response(
    *,
    status: int,
    slug: str,
    title: str,
    detail: str | None = None,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> Response:
    body: dict[str, Any] = {"type": f"/problems/{slug}", "title": title, "status": status}
    if detail:
        body["detail"] = detail
    if extra:
        body.update(extra)
    return Response(
        content=orjson.dumps(body), status_code=status, media_type=PROBLEM_JSON, headers=headers
    )


class DomainError(Exception):
    status: int = 400
    slug: str = "bad-request"
    title: str = "Bad request"
    # Whether a request that failed with this error after claiming its Idempotency-Key
    # keeps the error under the key (see `recorded_error`): true for the request's own
    # outcome, false for "not now" answers that a retry with the same key should get past.
    recorded: bool = True

    def __init__(self, detail: str | None = None, **extra: Any) -> None:
        super().__init__(detail or self.title)
        self.detail = detail
        self.extra = extra
        self.headers: dict[str, str] = {}

    def response(self) -> Response:
        return problem_response(
            status=self.status,
            slug=self.slug,
            title=self.title,
            detail=self.detail,
            headers=self.headers or None,
            extra=self.extra,
        )


class Unauthenticated(DomainError):
    status, slug, title = 401, "unauthenticated", "Missing or invalid API key"

    def __init__(self) -> None:
        super().__init__(
            "Send 'Authorization: Bearer <api key>' with a valid, unrevoked key. "
            "Create one with 'reservations keys create'."
        )
        self.headers = {"WWW-Authenticate": 'Bearer realm="reservations"'}


class Forbidden(DomainError):
    status, slug, title = 403, "forbidden", "Your key's role does not allow this"


class NotFound(DomainError):
    status, slug, title = 404, "not-found", "Not found"


class InvalidInput(DomainError):
    status, slug, title = 422, "invalid-input", "The request is not valid"


class BookingRuleViolated(DomainError):
    """422 with a machine-readable `reason` (the first rule broken) and `violations`."""

    status, slug, title = 422, "booking-rule-violated", "The booking breaks the resource's rules"


class CapacityInUse(DomainError):
    status, slug = 409, "capacity-in-use"
    title = "Live reservations use more than the new capacity"


class ReservationConflict(DomainError):
    status, slug, title = 409, "reservation-conflict", "The range overlaps a live reservation"


class HoldExpired(DomainError):
    status, slug, title = 409, "hold-expired", "The hold has expired"


class ReservationNotLive(DomainError):
    status, slug, title = 409, "reservation-not-live", "The reservation is cancelled or expired"


class ApprovalRequired(DomainError):
    status, slug = 409, "approval-required"
    title = "The reservation awaits an admin's approval"


class ReservationNotPending(DomainError):
    status, slug = 409, "reservation-not-pending"
    title = "The reservation is not awaiting approval"


class ReservationInHistory(DomainError):
    status, slug = 409, "reservation-in-history"
    title = "The reservation has moved to history and is read-only"


class ResourceHasFutureReservations(DomainError):
    status, slug = 409, "resource-has-future-reservations"
    title = "The resource still has live reservations in the future"


class IdempotencyKeyInUse(DomainError):
    status, slug = 409, "idempotency-key-in-use"
    title = "A request with this Idempotency-Key is still being processed"
    recorded = False  # the first request's outcome is what the key will replay


class IdempotencyKeyReused(DomainError):
    status, slug = 422, "idempotency-key-reused"
    title = "This Idempotency-Key was used with a different request"
    recorded = False  # the key keeps the first request's outcome


class WaitlistFull(DomainError):
    status, slug = 409, "waitlist-full"
    title = "The waitlist is full"


class PreconditionFailed(DomainError):
    status, slug, title = 412, "precondition-failed", "If-Match does not match the current version"


class BodyTooLarge(DomainError):
    status, slug, title = 413, "body-too-large", "The request body is too large"


class RateLimited(DomainError):
    status, slug, title = 429, "rate-limited", "Too many requests"

    def __init__(self, *, violated: list[str], retry_after: int, headers: dict[str, str]) -> None:
        super().__init__(
            f"The {' and '.join(violated)} request quota is used up; retry after "
            f"{retry_after} s (see the RateLimit-Policy and RateLimit headers).",
            violated_policies=violated,
        )
        self.headers = {"Retry-After": str(retry_after), **headers}


class HoldLimitReached(DomainError):
    status, slug, title = 429, "hold-limit-reached", "Your tenant holds the most live holds allowed"

    def __init__(self, *, limit: int, retry_after: int) -> None:
        super().__init__(
            f"Your tenant already has {limit} live holds, the most allowed. Confirm or cancel "
            f"some, or retry after {retry_after} s when the next one expires.",
            max_live_holds=limit,
        )
        self.headers = {"Retry-After": str(retry_after)}


class ShardMoving(DomainError):
    status, slug = 503, "shard-moving"
    title = "This resource's shard is moving to another cluster"

    def __init__(self) -> None:
        super().__init__(
            "The resource's data is being moved between database clusters; nothing was "
            "changed. Retry in a second (with the same Idempotency-Key if you sent one)."
        )
        self.headers = {"Retry-After": "1"}


class BookingContended(DomainError):
    status, slug = 409, "booking-contended"
    title = "Another booking of the same resources is in progress"
    recorded = False  # a concurrent request's doing: "retry shortly" must be able to succeed

    def __init__(self, detail: str) -> None:
        super().__init__(detail + " Nothing was changed; retry shortly.")
        self.headers = {"Retry-After": "1"}


class BookingSpansClusters(DomainError):
    status, slug = 409, "booking-spans-clusters"
    title = "This booking spans database clusters and cannot be changed as one yet"
    # Also the signal by which a booking's confirm or cancel on one cluster hands over to
    # the cross-cluster path (bookings.service), under the same key: not an outcome.
    recorded = False


_HTTP_SLUGS = {
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    406: ("not-acceptable", "Not acceptable"),
    413: ("body-too-large", "The request body is too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
}


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _string_length(err: Any, item: dict[str, Any]) -> None:
    """A length a field puts on a validated text type (kit/fields.Text) is checked after
    that type's validator, and pydantic then counts "items": say characters, as it does for
    a plain string."""
    kind, ctx = err.get("type"), err.get("ctx") or {}
    if kind not in ("too_long", "too_short") or not isinstance(err.get("input"), str):
        return
    most = kind == "too_long"
    bound = ctx.get("max_length" if most else "min_length")
    unit = "character" if bound == 1 else "characters"
    item["message"] = f"String should have at {'most' if most else 'least'} {bound} {unit}"
    item["code"] = f"string_{kind}"


def _field_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    out = []
    for err in exc.errors():
        if err.get("type") == "json_invalid":
            out.append(
                {
                    "field": "body",
                    "in": "body",
                    "message": f"the body is not valid JSON ({err.get('ctx', {}).get('error')})",
                    "code": "json_invalid",
                }
            )
            continue
        loc = [str(p) for p in err.get("loc", ())]
        item: dict[str, Any] = {
            "field": ".".join(loc[1:]) if len(loc) > 1 else ".".join(loc),
            "in": loc[0] if loc else "body",
            "message": err.get("msg", "invalid"),
            "code": err.get("type", "invalid"),
        }
        _string_length(err, item)
        if "ctx" in err:
            item["context"] = _jsonable(err["ctx"])
        out.append(item)
    return out


def _unreadable_body(cause: BaseException) -> Response:
    if isinstance(cause, UnicodeDecodeError):
        reason = f"the body is not valid UTF-8 (byte {cause.start})"
    elif isinstance(cause, RecursionError):
        reason = "the body is nested too deeply"
    else:
        reason = "the body is not JSON this API can read (a number too long?)"
    return problem_response(
        status=422,
        slug="invalid-input",
        title="The request is not valid",
        detail="The body is not valid JSON: send one JSON object, encoded as UTF-8.",
        extra={
            "errors": [
                {
                    "field": "body",
                    "in": "body",
                    "message": reason,
                    "code": "json_invalid",
                }
            ]
        },
    )


def allowed_methods(routes: Iterable[Any], request: Request) -> list[str]:
    """Every method some route serves at this path, for the `Allow` header of a 405.

    Starlette answers 405 from the first route whose path matches, so its `Allow` names only
    that route's method although others (GET and POST on a collection) share the path."""
    path = request.url.path
    found: set[str] = set()
    for route in routes:
        nested = getattr(route, "original_router", None) or getattr(route, "app", None)
        if nested is not None and hasattr(nested, "routes") and not hasattr(route, "path_regex"):
            found.update(allowed_methods(nested.routes, request))
            continue
        regex, methods = getattr(route, "path_regex", None), getattr(route, "methods", None)
        if regex is not None and methods and regex.match(path):
            found.update(methods)
    return sorted(found)


def horizon_refusal(exc: BaseException) -> BookingRuleViolated | None:
    """The one database refusal that is the caller's to fix wherever it comes from (a
    create, a move, a booking): a guarded range that starts before the history horizon
    (migration 0003). Anything else stays a server error (None)."""
    if not isinstance(exc, pg_errors.CheckViolation):
        return None
    if exc.diag.constraint_name != HISTORY_HORIZON:
        return None
    detail = (
        "The range (with the resource's buffers) starts before the history horizon:"
        " reservations that ended that long ago have moved to history and none can be"
        " added or moved there. Choose a later range."
    )
    return BookingRuleViolated(
        detail,
        reason="in-history",
        violations=[{"reason": "in-history", "detail": detail}],
    )


def recorded_error(exc: BaseException) -> DomainError | None:
    """The error a request that ended with `exc` leaves under its Idempotency-Key, or None
    when it leaves nothing (Stripe's rules): the request's own 4xx outcome is kept; a
    "not now" answer (429, 409 idempotency-key-in-use, booking-contended) and a server
    error (5xx, any exception that is not a domain error) are not, so a retry runs again."""
    error = exc if isinstance(exc, DomainError) else horizon_refusal(exc)
    if error is None or not error.recorded or error.status == 429 or error.status >= 500:
        return None
    return error


def install_error_handlers(app: FastAPI) -> None:
    async def domain(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, DomainError)
        return exc.response()

    async def validation(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = _field_errors(exc)
        if any(e["code"] == "json_invalid" for e in errors):
            detail = "The body is not valid JSON: send one JSON object."
        else:
            fields = ", ".join(sorted({e["field"] or e["in"] for e in errors}))
            detail = f"Fix these fields and send again: {fields}."
        return problem_response(
            status=422,
            slug="invalid-input",
            title="The request is not valid",
            detail=detail,
            extra={"errors": errors},
        )

    async def http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 400 and exc.__cause__ is not None:
            # FastAPI's "error parsing the body" (bytes that are not UTF-8, JSON nested past
            # the parser's recursion limit, an integer literal of thousands of digits): not
            # JSON this API can read, a 422 like every other unreadable body.
            return _unreadable_body(exc.__cause__)
        slug, title = _HTTP_SLUGS.get(exc.status_code, ("http-error", "HTTP error"))
        detail = exc.detail if isinstance(exc.detail, str) and exc.detail != title else None
        headers = dict(exc.headers) if exc.headers else {}
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(allowed_methods(request.app.router.routes, request))
            detail = f"{request.method} is not supported here; use {headers['Allow']}."
        return problem_response(
            status=exc.status_code,
            slug=slug,
            title=title,
            detail=detail,
            headers=headers or None,
        )

    async def database_guard(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, pg_errors.CheckViolation)
        refusal = horizon_refusal(exc)
        if refusal is None:
            raise exc
        return refusal.response()

    app.add_exception_handler(pg_errors.CheckViolation, database_guard)
    app.add_exception_handler(DomainError, domain)
    app.add_exception_handler(RequestValidationError, validation)
    app.add_exception_handler(StarletteHTTPException, http)
