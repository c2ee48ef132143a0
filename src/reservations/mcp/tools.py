"""What the MCP tools do, as plain use-case calls: the same service functions, models and
refusals as the HTTP routes (no second booking path: a hold is the normal create, admitted
by reservations/admission.py). Each returns a pydantic model or raises a DomainError."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from uuid import UUID

import orjson
from pydantic import BaseModel, Field

from reservations.availability import service as availability
from reservations.availability.schemas import (
    AvailabilityRead,
    SearchPage,
    SearchRequest,
    SpanRead,
    UnavailableRead,
)
from reservations.catalog import repository as catalog
from reservations.context import Context
from reservations.errors import DomainError, NotFound, ReservationNotHeld
from reservations.kit.idempotency import Idempotency, Reply
from reservations.reservations import admission, links, pools, service, status
from reservations.reservations.schemas import (
    ReservationCreate,
    ReservationPage,
    ReservationRead,
    Status,
)
from reservations.tenancy.service import Principal

# The default life of an agent's hold when the call names none: 15 minutes for a person to
# open the link (at most RESERVATIONS_MAX_HOLD_SECONDS).
DEFAULT_HOLD_SECONDS = 900


class Replayed(Exception):
    """A refusal stored under an idempotency key, replayed: its problem body as first sent."""

    def __init__(self, body: dict[str, object]) -> None:
        super().__init__(str(body.get("detail", "")))
        self.body = body


class Hold(BaseModel):
    reservation: ReservationRead
    expires_at: datetime | None = Field(description="When the hold lapses unless confirmed.")
    confirm_link: str = Field(
        description="For a person: open it on the booking page and confirm with a booker or "
        "admin key (agent keys cannot confirm)."
    )
    confirm_link_expires_at: datetime
    idempotency_key: str = Field(description="The key this hold was made under (retry-safe).")
    replayed: bool = Field(description="True when a retry returned the hold made before.")


class Explanation(BaseModel):
    bookable: bool = Field(description="Whether a hold of exactly [start, end) is admitted now.")
    refusal: dict[str, object] | None = Field(
        default=None,
        description="The problem a hold would get (type, title, status, detail, reason, "
        "violations...), as the HTTP API sends it.",
    )
    free: list[SpanRead]
    unavailable: list[UnavailableRead] = Field(description="Every other range, and why.")


def derived_key(caller: Principal, tool: str, arguments: object) -> str:
    """The idempotency key a tool call gets when the agent sends none: from the key id, the
    tool and its arguments, so a retried call is the same request and never books twice."""
    digest = hashlib.sha256(str(caller.api_key_id).encode() + b"\0" + tool.encode() + b"\0")
    digest.update(orjson.dumps(arguments, option=orjson.OPT_SORT_KEYS))
    return f"mcp-{digest.hexdigest()[:40]}"


def _reply_or_raise(reply: Reply) -> ReservationRead:
    if reply.status >= 400:
        raise Replayed(orjson.loads(reply.body))
    return ReservationRead.model_validate_json(reply.body)


async def search(svc: Context, caller: Principal, body: SearchRequest) -> SearchPage:
    return await availability.search(svc, caller, body)


async def resource_slots(
    svc: Context,
    caller: Principal,
    resource_id: UUID,
    start: datetime,
    end: datetime,
    duration: timedelta | None,
    quantity: int,
) -> AvailabilityRead:
    return await availability.for_resource(
        svc,
        caller,
        resource_id,
        window_start=start,
        window_end=end,
        duration=duration,
        quantity=quantity,
        step_minutes=15,
        customer=None,
        explain=False,
    )


async def explain(
    svc: Context,
    caller: Principal,
    resource_id: UUID,
    start: datetime,
    end: datetime,
    quantity: int,
) -> Explanation:
    """Why [start, end) is or is not bookable: admission's screen of a hold of exactly that
    range (the rules, the length, the quantity), and the resource's availability over it
    with every unavailable range's reason (closed, blackout, buffer, reserved...)."""
    now = svc.clock.now()
    row = await svc.at(resource_id).db.read(
        lambda conn: catalog.get(conn, tenant_id=caller.tenant_id, resource_id=resource_id)
    )
    if row is None:
        raise NotFound(f"No resource {resource_id} in your tenant.")
    refusal: dict[str, object] | None = None
    gate = admission.Gate(
        actor=caller, change=admission.Change.create, now=now, hold_seconds=DEFAULT_HOLD_SECONDS
    )
    candidate = admission.Candidate(
        resource=admission.Target.of(row),
        start=start,
        end=end,
        owner=caller.api_key_id,
        customer=None,
        quantity=quantity,
    )
    try:
        admission.screen(svc, gate, candidate)
    except DomainError as refused:
        refusal = problem_body(refused)
    seen = await availability.for_resource(
        svc,
        caller,
        resource_id,
        window_start=start,
        window_end=end,
        duration=None,
        quantity=min(quantity, row.capacity),
        step_minutes=15,
        customer=None,
        explain=True,
    )
    covered = any(s.start <= start and s.end >= end for s in seen.free)
    return Explanation(
        bookable=refusal is None and covered,
        refusal=refusal,
        free=seen.free,
        unavailable=seen.unavailable or [],
    )


async def hold(
    svc: Context,
    caller: Principal,
    body: ReservationCreate,
    idempotency_key: str | None,
    seal_key: bytes,
) -> Hold:
    """The normal create (admission, the constraint), always as a hold, under an
    idempotency key (the agent's, or one derived from the call)."""
    if body.hold_seconds is None:
        hold_seconds = min(DEFAULT_HOLD_SECONDS, svc.settings.max_hold_seconds)
        body = body.model_copy(update={"hold_seconds": hold_seconds})
    payload = body.model_dump(mode="json")
    key = idempotency_key or derived_key(caller, "hold_slot", payload)
    idem = Idempotency.of(
        api_key_id=caller.api_key_id,
        key=key,
        method="POST",
        path="/v1/reservations",
        payload=payload,
        seal_key=seal_key,
    )
    make = pools.create if body.pool is not None else service.create  # as the HTTP route
    reply = await make(svc, caller, body, idem)
    reservation = _reply_or_raise(reply)
    link, link_expires = links.issue(
        svc.settings, caller.tenant_id, reservation.id, svc.clock.now()
    )
    return Hold(
        reservation=reservation,
        expires_at=reservation.expires_at,
        confirm_link=link,
        confirm_link_expires_at=link_expires,
        idempotency_key=key,
        replayed=reply.replayed,
    )


async def my_holds(svc: Context, caller: Principal, limit: int) -> ReservationPage:
    """The caller's live holds (agent and booker keys see only their own)."""
    return await service.list_page(
        svc,
        caller,
        resource_id=None,
        window_from=None,
        window_to=None,
        statuses=[Status.held, Status.pending],
        customer=None,
        limit=limit,
        cursor=None,
    )


async def cancel(
    svc: Context,
    caller: Principal,
    reservation_id: UUID,
    idempotency_key: str | None,
    seal_key: bytes,
) -> ReservationRead:
    current = ReservationRead.model_validate_json(
        (await service.get(svc, caller, reservation_id)).body
    )
    if current.status is Status.confirmed:
        raise ReservationNotHeld(
            "The reservation is confirmed: a person confirmed it, and only a person's key "
            "cancels it now (this tool cancels holds)."
        )
    key = idempotency_key or derived_key(caller, "cancel_hold", str(reservation_id))
    idem = Idempotency.of(
        api_key_id=caller.api_key_id,
        key=key,
        method="POST",
        path=f"/v1/reservations/{reservation_id}/cancel",
        payload=None,
        seal_key=seal_key,
    )
    return _reply_or_raise(await status.cancel(svc, caller, reservation_id, None, idem))


def problem_body(error: DomainError | Replayed) -> dict[str, object]:
    """The problem+json body the HTTP API sends for `error` (errors.py), as a dict."""
    if isinstance(error, Replayed):
        return error.body
    body: dict[str, object] = orjson.loads(error.response().body)
    return body
