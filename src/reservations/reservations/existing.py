"""An existing reservation as a write finds it: read and locked at the version the caller
expects (412 otherwise), live or not, as admission sees it, and the reply it makes."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from reservations.catalog import repository as resources
from reservations.errors import (
    HoldExpired,
    NotFound,
    PreconditionFailed,
    ReservationInHistory,
    ReservationNotLive,
)
from reservations.kit.db import Conn
from reservations.kit.idempotency import Reply
from reservations.kit.localtime import describe_instant
from reservations.reservations import admission, repository
from reservations.reservations.rows import FoundRow, ReservationRow
from reservations.reservations.schemas import (
    ReservationRead,
    Status,
)
from reservations.tenancy.service import Principal


def etag(version: int) -> str:
    return f'"{version}"'


def reply(row: ReservationRow, now: datetime, status: int = 200) -> Reply:
    body = ReservationRead.from_row(row, now).model_dump_json()
    headers = {"ETag": etag(row.version)}
    if status == 201:
        headers["Location"] = f"/v1/reservations/{row.id}"
    return Reply(status=status, body=body, headers=headers)


def not_found(reservation_id: UUID) -> NotFound:
    return NotFound(f"No reservation {reservation_id} that your key may see.")


def in_history(row: ReservationRow) -> ReservationInHistory:
    return ReservationInHistory(
        f"Reservation {row.id} ended long ago and has moved to history, which is read-only;"
        " it can still be read and listed."
    )


async def locked(
    conn: Conn, caller: Principal, reservation_id: UUID, expected_version: int | None
) -> FoundRow:
    row = await repository.get(
        conn,
        tenant_id=caller.tenant_id,
        reservation_id=reservation_id,
        owner=caller.owner(),
        lock=True,
    )
    if row is None:
        seen = await repository.get(
            conn, tenant_id=caller.tenant_id, reservation_id=reservation_id, owner=caller.owner()
        )
        raise in_history(seen) if seen is not None else not_found(reservation_id)
    if expected_version is not None and row.version != expected_version:
        raise PreconditionFailed(
            f"The reservation is at version {row.version}; fetch it again and retry.",
            current_version=row.version,
        )
    return row


def live_or_raise(row: ReservationRow, now: datetime, zone: str | None = None) -> None:
    status = ReservationRead.from_row(row, now).status
    if status is Status.expired:
        expires = row.expires_at
        assert expires is not None  # expired: a hold, which has an expiry
        raise HoldExpired(
            f"The hold expired at {describe_instant(expires, zone)}; create a new reservation."
        )
    if status in (Status.cancelled, Status.declined, Status.no_show):
        raise ReservationNotLive(f"The reservation is {status.value}; create a new one.")


async def as_is(conn: Conn, caller: Principal, row: ReservationRow) -> admission.Candidate:
    """A live row as admission sees it when only its status changes."""
    resource = await resources.get(conn, tenant_id=caller.tenant_id, resource_id=row.resource_id)
    if resource is None:
        raise ReservationNotLive("The reservation's resource is archived.")
    return admission.Candidate.as_is(admission.Target.of(resource), row)
