"""Domain errors carry their HTTP meaning; one set of handlers renders RFC 9457 problem+json.

Every error type has a stable slug; its `type` URI is `/problems/<slug>` (a relative reference,
resolved against the API's base URL), which answers a page made from the type's `about` and
`fix` (web/problems.py). docs/api.md lists them all.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
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


@dataclass(frozen=True)
class ProblemType:
    """What `/problems/<slug>` says: what the condition means, and what a client does."""

    slug: str
    status: int
    title: str
    about: str
    fix: str


class DomainError(Exception):
    status: int = 400
    slug: str = "bad-request"
    title: str = "Bad request"
    # For the problem type's page: what the condition means, and how to get past it.
    about: str = ""
    fix: str = ""
    # Whether a request that failed with this error after claiming its Idempotency-Key
    # keeps the error under the key (see `recorded_error`): true for the request's own
    # outcome, false for "not now" answers that a retry with the same key should get past.
    recorded: bool = True
    # Whether a kept refusal lets its key go to another request (the caller books one of
    # the refusal's alternatives with the same key): see `reopens_key`.
    reopens_key: bool = False

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
    about = (
        "The request carries no API key, or one that is malformed, unknown, expired or revoked "
        "(all four look the same, so as not to tell which keys exist)."
    )
    fix = (
        "Send `Authorization: Bearer <api key>` with a live key of your tenant. An admin makes "
        "keys with `reservations keys create --tenant T --role booker`."
    )

    def __init__(self) -> None:
        super().__init__(
            "Send 'Authorization: Bearer <api key>' with a valid, unrevoked key. "
            "Create one with 'reservations keys create'."
        )
        self.headers = {"WWW-Authenticate": 'Bearer realm="reservations"'}


class Forbidden(DomainError):
    status, slug, title = 403, "forbidden", "Your key's role does not allow this"
    about = (
        "The key is valid but its role may not do this: viewers only read, bookers book and "
        "change their own reservations, admins do everything in their tenant."
    )
    fix = (
        "Use a key with the role the operation needs (the API guide lists who may call each route)."
    )


class NotFound(DomainError):
    status, slug, title = 404, "not-found", "Not found"
    about = (
        "No such object in your tenant, or one your key may not see (another tenant's id, "
        "another booker's reservation), or no such route."
    )
    fix = (
        "Check the id and the path; ids come from the replies that created the objects or from "
        "lists."
    )


class InvalidInput(DomainError):
    status, slug, title = 422, "invalid-input", "The request is not valid"
    about = (
        "The request does not fit the API's schema: a field is missing, of the wrong type, out "
        "of range, a time has no offset, or the body is not JSON. `errors` names each field "
        "with a message."
    )
    fix = (
        "Fix the fields `errors` lists and send again. Timestamps are RFC 3339 with an offset; "
        "the OpenAPI document at /openapi.json gives every field's rules."
    )


class BookingRuleViolated(DomainError):
    """422 with a machine-readable `reason` (the first rule broken) and `violations`."""

    status, slug, title = 422, "booking-rule-violated", "The booking breaks the resource's rules"
    about = (
        "The range breaks a rule of the resource's policy: opening hours, a blackout, the slot "
        "grid, minimum or maximum duration, notice, advance, the booker limit, a start in the "
        "past or before the history horizon. `reason` names the first rule, `violations` each."
    )
    fix = (
        "Choose a range the resource offers: the refusal's `alternatives` list some that were"
        " bookable when it was answered; GET /v1/resources/{id}/availability lists bookable"
        " slots, and with `explain=true` why the rest are not."
    )
    reopens_key = True


class CapacityInUse(DomainError):
    status, slug = 409, "capacity-in-use"
    title = "Live reservations use more than the new capacity"
    about = (
        "The new capacity is lower than what live reservations of the resource use at some instant."
    )
    fix = "Cancel or move the reservations in the way first, or choose a higher capacity."


class ReservationConflict(DomainError):
    status, slug, title = 409, "reservation-conflict", "The range overlaps a live reservation"
    about = (
        "The range overlaps live reservations of the resource (with its turnover buffers), or, "
        "for a pooled resource, too few units are free. `conflicts` lists the ranges in the "
        "way, with ids you may see."
    )
    fix = (
        "Choose another range (ranges are half-open: a booking may start when another ends) or "
        "a smaller quantity: the refusal's `alternatives` list free ones, availability the rest."
        " The database decided this: retrying the same request will not succeed while they"
        " stand."
    )
    reopens_key = True


class HoldExpired(DomainError):
    status, slug, title = 409, "hold-expired", "The hold has expired"
    about = "The hold ran past its `expires_at` before it was confirmed, so its range was freed."
    fix = (
        "Book the range again (a new hold or a confirmed reservation) if it is still free; "
        "confirm holds before they expire."
    )


class ReservationNotLive(DomainError):
    status, slug, title = 409, "reservation-not-live", "The reservation is no longer live"
    about = (
        "The reservation is cancelled, declined, expired or a released no-show: it can no"
        " longer be changed or confirmed."
    )
    fix = "Make a new reservation."


class ReservationNotHeld(DomainError):
    status, slug = 409, "reservation-not-held"
    title = "The reservation is not a hold"
    about = (
        "Only a live hold (`held`) can be extended; this reservation is confirmed, or pending an"
        " admin's approval (whose window the admin's decision ends, not the booker)."
    )
    fix = (
        "Read the reservation to see its status: a confirmed one needs no extension; a pending"
        " one waits for an admin to approve or decline it."
    )


class ApprovalRequired(DomainError):
    status, slug = 409, "approval-required"
    title = "The reservation awaits an admin's approval"
    about = (
        "The resource needs an admin's approval for bookings by booker keys; the reservation is"
        " pending and its booker cannot confirm it."
    )
    fix = (
        "Wait for an admin to approve or decline it (POST /v1/reservations/{id}/approve or "
        "/decline), or ask one to."
    )


class CheckInRefused(DomainError):
    status, slug = 409, "check-in-refused"
    title = "The reservation cannot be checked in now"
    about = (
        "Check-in is open for a confirmed reservation from the policy's `check_in.opens_before`"
        " before its start until its end, or until `check_in.release_after` past its start"
        " when the resource releases no-shows."
    )
    fix = (
        "Check in within the window the message gives; a hold must be confirmed first. After"
        " the window a released reservation is `no_show`: book the time again if it is free."
    )


class ReservationNotPending(DomainError):
    status, slug = 409, "reservation-not-pending"
    title = "The reservation is not awaiting approval"
    about = (
        "Only a pending reservation (awaiting approval) can be approved or declined; this one "
        "is not."
    )
    fix = (
        "Read the reservation to see its status; nothing needs doing if it was approved or "
        "declined already."
    )


class ReservationInHistory(DomainError):
    status, slug = 409, "reservation-in-history"
    title = "The reservation has moved to history and is read-only"
    about = "The reservation ended long ago and moved to the history, which is read-only."
    fix = "Nothing can change it any more; make a new reservation if you need one."


class ResourceHasFutureReservations(DomainError):
    status, slug = 409, "resource-has-future-reservations"
    title = "The resource still has live reservations in the future"
    about = (
        "The resource still has live reservations that end after now, so archiving it would "
        "strand them."
    )
    fix = (
        "Cancel or move them first, or archive with `?cancel_reservations=true` to cancel them "
        "in the same transaction."
    )


class IdempotencyKeyInUse(DomainError):
    status, slug = 409, "idempotency-key-in-use"
    title = "A request with this Idempotency-Key is still being processed"
    about = "Another request with the same Idempotency-Key is still running."
    fix = "Retry with the same key shortly: you will get that request's outcome."
    recorded = False  # the first request's outcome is what the key will replay


class IdempotencyKeyReused(DomainError):
    status, slug = 422, "idempotency-key-reused"
    title = "This Idempotency-Key was used with a different request"
    about = (
        "The Idempotency-Key was used before with a different request (another body, path or "
        "If-Match); a key names one request."
    )
    fix = "Use a new key for a new request; retry the first request unchanged to get its reply."
    recorded = False  # the key keeps the first request's outcome


class WaitlistFull(DomainError):
    status, slug = 409, "waitlist-full"
    title = "The waitlist is full"
    about = (
        "The resource's waitlist, or your key's share of waitlists, holds as many entries as "
        "allowed."
    )
    fix = "Leave an entry you no longer need (DELETE /v1/waitlist/{id}) or try later."


class PreconditionFailed(DomainError):
    status, slug, title = 412, "precondition-failed", "If-Match does not match the current version"
    about = (
        "If-Match names a version that is no longer the current one: someone changed the object"
        " since you read it. `current_version` says which it is."
    )
    fix = (
        "Read the object again (its ETag is the current version), apply your change to it, and "
        "send it with the new If-Match."
    )


class BodyTooLarge(DomainError):
    status, slug, title = 413, "body-too-large", "The request body is too large"
    about = "The request body is larger than the API accepts (1 MiB by default)."
    fix = "Send less at once: split large changes into several requests."


class RateLimited(DomainError):
    status, slug, title = 429, "rate-limited", "Too many requests"
    about = (
        "Your API key or your tenant used up its request quota for the window. "
        "`violated_policies` names which; RateLimit-Policy and RateLimit headers say the quotas"
        " and what is left."
    )
    fix = (
        "Wait the seconds Retry-After says, then go on; spread requests out to stay under the "
        "quota."
    )

    def __init__(self, *, violated: list[str], retry_after: int, headers: dict[str, str]) -> None:
        super().__init__(
            f"The {' and '.join(violated)} request quota is used up; retry after "
            f"{retry_after} s (see the RateLimit-Policy and RateLimit headers).",
            violated_policies=violated,
        )
        self.headers = {"Retry-After": str(retry_after), **headers}


class HoldLimitReached(DomainError):
    status, slug, title = 429, "hold-limit-reached", "Your tenant holds the most live holds allowed"
    about = "Your tenant has as many live (unexpired, unconfirmed) holds as allowed at once."
    fix = "Confirm or cancel holds you have, or retry after Retry-After, when the next one expires."

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
    about = "The resource's data is moving between database clusters; nothing was changed."
    fix = "Retry in a second (Retry-After), with the same Idempotency-Key if you sent one."

    def __init__(self) -> None:
        super().__init__(
            "The resource's data is being moved between database clusters; nothing was "
            "changed. Retry in a second (with the same Idempotency-Key if you sent one)."
        )
        self.headers = {"Retry-After": "1"}


class PoolExhausted(DomainError):
    status, slug = 409, "pool-exhausted"
    title = "No resource of the pool could take the booking"
    about = (
        "Every resource of the pool was tried and none took the booking: each was booked in "
        "the range or refused it by its rules. `candidates` says, for each resource, why."
    )
    fix = (
        "Choose another range, or widen the pool (fewer tags, more resource_ids, a lower "
        "min_capacity); availability search lists what is free."
    )


class BookingContended(DomainError):
    status, slug = 409, "booking-contended"
    title = "Another booking of the same resources is in progress"
    about = (
        "Another booking of the same resources across clusters is in progress, or its lock "
        "expired before it finished; nothing was changed."
    )
    fix = "Retry shortly (Retry-After), with the same Idempotency-Key if you sent one."
    recorded = False  # a concurrent request's doing: "retry shortly" must be able to succeed

    def __init__(self, detail: str) -> None:
        super().__init__(detail + " Nothing was changed; retry shortly.")
        self.headers = {"Retry-After": "1"}


class BookingSpansClusters(DomainError):
    status, slug = 409, "booking-spans-clusters"
    title = "This booking spans database clusters and cannot be changed as one yet"
    # Also the signal by which a booking's confirm or cancel on one cluster hands over to
    # the cross-cluster path (bookings.service), under the same key: not an outcome.
    about = (
        "The booking's reservations live on several database clusters, and this change cannot "
        "yet be made to all of them as one."
    )
    fix = (
        "Change its reservations one by one (PATCH /v1/reservations/{id}), or cancel the "
        "booking and book again."
    )
    recorded = False


# Problems that no DomainError raises: the HTTP layer's and the infrastructure's.
OTHER_PROBLEMS = (
    ProblemType(
        "method-not-allowed",
        405,
        "Method not allowed",
        about="The path exists, but not with this method.",
        fix="Use one of the methods the response's Allow header lists.",
    ),
    ProblemType(
        "not-acceptable",
        406,
        "Not acceptable",
        about="The API cannot answer in any media type the request's Accept header allows.",
        fix="Accept application/json and application/problem+json (or send no Accept header).",
    ),
    ProblemType(
        "unsupported-media-type",
        415,
        "Unsupported media type",
        about="The body's Content-Type is not one this operation reads.",
        fix="Send JSON with 'Content-Type: application/json'.",
    ),
    ProblemType(
        "http-error",
        400,
        "HTTP error",
        about="The request could not be handled as HTTP; `status` is the HTTP status.",
        fix="Check the request line and headers against the OpenAPI document.",
    ),
    ProblemType(
        "service-unavailable",
        503,
        "The service cannot complete this request right now",
        about="The database is busy or unreachable, or a lock could not be had in time; "
        "nothing was changed.",
        fix="Retry after the seconds Retry-After says, with the same Idempotency-Key if you "
        "sent one.",
    ),
    ProblemType(
        "internal-error",
        500,
        "Internal error",
        about="Something went wrong on the server's side; it was logged with the request's "
        "X-Request-ID.",
        fix="Retry with the same Idempotency-Key; if it persists, report the X-Request-ID.",
    ),
    ProblemType(
        "not-ready",
        503,
        "Not ready",
        about="/readyz: this instance cannot reach its primary database and takes no traffic.",
        fix="For operators: check the database and the instance's DATABASE_URL; load balancers "
        "send traffic elsewhere meanwhile.",
    ),
)


def problem_types() -> dict[str, ProblemType]:
    """Every problem type the API answers with, by slug: each DomainError and the others."""
    found: dict[str, ProblemType] = {}

    def walk(cls: type[DomainError]) -> None:
        for sub in cls.__subclasses__():
            found.setdefault(
                sub.slug, ProblemType(sub.slug, sub.status, sub.title, sub.about, sub.fix)
            )
            walk(sub)

    walk(DomainError)
    for other in OTHER_PROBLEMS:
        found.setdefault(other.slug, other)
    return found


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


def reopens_key(status: int, body: str) -> bool:
    """Whether a refusal kept under an Idempotency-Key (its status and problem body) lets
    the key go to a different request: a 409 `reservation-conflict` or a 422
    `booking-rule-violated` changed nothing and offered alternatives, and booking one of
    them with the same key must work. The same request with the key still replays it."""
    if status not in (409, 422):
        return False
    try:
        kind = orjson.loads(body).get("type")
    except (orjson.JSONDecodeError, AttributeError):
        return False
    return any(
        kind == f"/problems/{t.slug}" and t.status == status
        for t in (ReservationConflict, BookingRuleViolated)
        if t.reopens_key
    )


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
