"""FastAPI dependencies shared by every domain: the app's services, the caller, idempotency."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from reservations.config import Settings
from reservations.errors import Forbidden, InvalidInput, Unauthenticated
from reservations.kit.clock import Clock
from reservations.kit.db import Database
from reservations.tenancy.service import Principal, Role, authenticate


@dataclass
class Services:
    """Everything a request may use; built once in the app's lifespan."""

    settings: Settings
    db: Database
    clock: Clock


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


_bearer = HTTPBearer(auto_error=False, description="An API key: `rsv_...`")


async def principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthenticated()
    svc = services(request)
    found = await authenticate(svc.db, credentials.credentials, now=svc.clock.now())
    if found is None:
        raise Unauthenticated()
    return found


async def writer(caller: Annotated[Principal, Depends(principal)]) -> Principal:
    if caller.role is Role.viewer:
        raise Forbidden("Viewer keys are read-only; use a booker or admin key.")
    return caller


async def admin(caller: Annotated[Principal, Depends(principal)]) -> Principal:
    if caller.role is not Role.admin:
        raise Forbidden("Only admin keys may do this.")
    return caller


def idempotency_key(
    key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            description="Retry-safe key (1-255 printable ASCII characters), kept 24 hours.",
        ),
    ] = None,
) -> str | None:
    if key is None:
        return None
    if not 1 <= len(key) <= 255 or not all(33 <= ord(c) <= 126 for c in key):
        raise InvalidInput(
            "Idempotency-Key must be 1-255 printable ASCII characters without spaces, "
            "for example a UUID.",
            errors=[{"field": "Idempotency-Key", "in": "header", "message": "malformed"}],
        )
    return key


def if_match(
    value: Annotated[
        str | None,
        Header(alias="If-Match", description="The ETag you last saw; 412 if it is stale."),
    ] = None,
) -> int | None:
    """The version named by an If-Match header (`"3"`, `W/"3"` or `*`), or None."""
    if value is None or value.strip() == "*":
        return None
    raw = value.strip().removeprefix("W/").strip('"')
    if not raw.isdigit() or len(raw) > 9:
        raise InvalidInput(
            'If-Match must be an ETag this API returned, such as "3".',
            errors=[{"field": "If-Match", "in": "header", "message": "malformed"}],
        )
    return int(raw)


Caller = Annotated[Principal, Depends(principal)]
Writer = Annotated[Principal, Depends(writer)]
Admin = Annotated[Principal, Depends(admin)]
Svc = Annotated[Services, Depends(services)]
IdemKey = Annotated[str | None, Depends(idempotency_key)]
IfMatch = Annotated[int | None, Depends(if_match)]
