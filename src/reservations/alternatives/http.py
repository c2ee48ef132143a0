"""Where a refusal gets its alternatives: the handler that renders 409
`reservation-conflict` and 422 `booking-rule-violated` as problem+json. When the route noted
what was asked (reservations/refused.py), it searches alternatives (search.py) after the use
case has failed and its transaction has ended, and adds them to the body.

A client that does not want them sends `Prefer: alternatives=none` (RFC 7240): the refusal
then costs no search, and says so with `Preference-Applied`."""

from __future__ import annotations

import logging
import re

from fastapi import FastAPI, Request
from starlette.responses import Response

from reservations.alternatives import search
from reservations.context import Context
from reservations.deps import services_of
from reservations.errors import BookingRuleViolated, DomainError, ReservationConflict
from reservations.kit.idempotency import Idempotency, Reply, amend
from reservations.reservations import refused

log = logging.getLogger(__name__)

PREFERENCE = "alternatives=none"
_NONE = re.compile(r"(?:^|[,;\s])alternatives\s*=\s*\"?none\"?(?:$|[,;\s])", re.IGNORECASE)


def declined(request: Request) -> bool:
    """Whether the request's Prefer header declines alternatives."""
    return any(_NONE.search(value) for value in request.headers.getlist("Prefer"))


async def refusal(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DomainError)
    ask = refused.noted(request.state)
    if ask is None:
        return exc.response()
    if declined(request):
        response = exc.response()
        response.headers["Preference-Applied"] = PREFERENCE
        return response
    svc = services_of(request)
    try:
        found = await search.find(svc, ask)
        if found is not None:
            exc.extra["alternatives"] = found.model_dump(mode="json")
            if ask.idem is not None:
                await _keep(svc, ask.idem, exc)
    except Exception:
        # The refusal stands (with what was found): a failed search never makes it a 5xx.
        log.exception("alternatives for %s %s failed", request.method, request.url.path)
    return exc.response()


async def _keep(svc: Context, idem: Idempotency, exc: DomainError) -> None:
    """The refusal as sent, alternatives and all, in place of the one its transaction kept
    under the key (where it kept one: `amend` changes only this request's record), so that
    a replay is this very response. The database holding the record is not known here:
    each is asked (one statement each; one without shards)."""
    for db in svc.shards.databases():
        await amend(db, idem, Reply.problem(exc))


def install(app: FastAPI) -> None:
    """Render the two refusals that carry alternatives (ahead of errors.py's DomainError
    handler: starlette picks the handler of the most specific class)."""
    app.add_exception_handler(ReservationConflict, refusal)
    app.add_exception_handler(BookingRuleViolated, refusal)
