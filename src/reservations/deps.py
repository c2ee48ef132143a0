"""FastAPI dependencies shared by every domain's routes: the context, the caller, idempotency
headers. Only HTTP glue: the use cases take a plain `Context` (context.py)."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import Depends, Header, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param

from reservations.context import Context
from reservations.errors import Forbidden, InvalidInput, Unauthenticated
from reservations.kit.db import ACTOR
from reservations.kit.idempotency import Idempotency, Reply
from reservations.kit.ratelimit import STATE_KEY
from reservations.tenancy.service import Principal, Role, authenticate


def services_of(request: Request) -> Context:
    svc: Context = request.app.state.services
    return svc


async def services(request: Request) -> Context:
    # async: FastAPI would run a plain function in its thread pool, a hop per request.
    return services_of(request)


_bearer = HTTPBearer(auto_error=False, description="An API key: `rsv_...`")


async def principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthenticated()
    svc = services_of(request)
    found = await authenticate(
        svc.db, credentials.credentials, now=svc.clock.now(), cache=svc.key_cache
    )
    if found is None:
        raise Unauthenticated()
    # Every transaction this request opens is recorded in the audit log as this key's doing.
    ACTOR.set(str(found.api_key_id))
    if svc.limits is not None:
        headers = await svc.limits.charge(found)
        if headers:
            setattr(request.state, STATE_KEY, headers)
    return found


async def writer(request: Request, caller: Annotated[Principal, Depends(principal)]) -> Principal:
    if caller.role is Role.viewer:
        raise Forbidden("Viewer keys are read-only; use a booker or admin key.")
    if caller.role is Role.agent and not request.headers.get("Idempotency-Key"):
        # An agent retries; a retry without a key could book twice (docs/agents.md).
        raise InvalidInput(
            "Agent keys must send an Idempotency-Key with every write (a UUID, say), so that "
            "a retried call never books twice.",
            errors=[{"field": "Idempotency-Key", "in": "header", "message": "required"}],
        )
    return caller


async def admin(caller: Annotated[Principal, Depends(principal)]) -> Principal:
    if caller.role is not Role.admin:
        raise Forbidden("Only admin keys may do this.")
    return caller


IDEMPOTENCY_KEY_DOC = (
    "Makes this request safe to retry: 1-255 printable ASCII characters (a UUID, say), "
    "scoped to your API key, kept 24 hours. The first request with a key that starts to "
    "execute leaves its outcome under the key, success (2xx) or refusal (4xx: a 409 "
    "conflict, a 422 rule violation, a 404...); a retry with the same key, method, path, "
    "body and If-Match gets that response again (status, body, headers) with "
    "`Idempotent-Replayed: true`, and changes nothing. Nothing is kept for a request "
    "refused before it ran "
    "(malformed input, authentication, a 429), for a 5xx, or for a 409 "
    "`idempotency-key-in-use` (the key's first request is still running: retry later with "
    "the same key). The same key with a different request: 422 `idempotency-key-reused`, "
    "except after a 409 `reservation-conflict` or 422 `booking-rule-violated`, which changed "
    "nothing: the key then takes the different request (book one of the refusal's "
    "`alternatives` with it)."
)
READ_ONLY_KEY_DOC = (
    "Accepted (1-255 printable ASCII characters) so that clients can send one on every "
    "POST, but nothing is kept under it: this POST only reads, so a retry is safe anyway "
    "and gets a fresh answer, never a stored one."
)
_KEY_PATTERN = {"pattern": "^[!-~]{1,255}$"}


def _checked_key(key: str | None) -> str | None:
    if key is None:
        return None
    if not 1 <= len(key) <= 255 or not all(33 <= ord(c) <= 126 for c in key):
        raise InvalidInput(
            "Idempotency-Key must be 1-255 printable ASCII characters without spaces, "
            "for example a UUID.",
            errors=[{"field": "Idempotency-Key", "in": "header", "message": "malformed"}],
        )
    return key


async def idempotency_key(
    key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key", description=IDEMPOTENCY_KEY_DOC, json_schema_extra=_KEY_PATTERN
        ),
    ] = None,
) -> str | None:
    return _checked_key(key)


async def read_only_key(
    key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key", description=READ_ONLY_KEY_DOC, json_schema_extra=_KEY_PATTERN
        ),
    ] = None,
) -> str | None:
    return _checked_key(key)


# An ETag this API sends ("3"), weak or unquoted, or `*`; surrounding blanks are HTTP's.
_IF_MATCH = re.compile(r'[ \t]*(?:(\*)|(?:W/)?"?([0-9]{1,9})"?)[ \t]*')


async def if_match(
    value: Annotated[
        str | None,
        Header(
            alias="If-Match",
            description="The ETag you last saw; 412 if it is stale.",
            json_schema_extra={"pattern": f"^{_IF_MATCH.pattern}$"},
        ),
    ] = None,
) -> int | None:
    """The version named by an If-Match header (`"3"`, `W/"3"` or `*`), or None."""
    if value is None:
        return None
    match = _IF_MATCH.fullmatch(value)
    if match is None:
        raise InvalidInput(
            'If-Match must be an ETag this API returned, such as "3".',
            errors=[{"field": "If-Match", "in": "header", "message": "malformed"}],
        )
    return None if match.group(1) else int(match.group(2))


def idempotency(
    request: Request, caller: Principal, key: str | None, payload: object
) -> Idempotency | None:
    """The idempotency record of this request (None without a key): scoped to the API key,
    fingerprinted by method, path, payload and If-Match; a secret in its reply is sealed
    with the caller's bearer token."""
    _, token = get_authorization_scheme_param(request.headers.get("Authorization"))
    return Idempotency.of(
        api_key_id=caller.api_key_id,
        key=key,
        method=request.method,
        path=request.url.path,
        payload=payload,
        precondition=request.headers.get("If-Match"),
        seal_key=token.encode(),
    )


def send(reply: Reply) -> Response:
    headers = dict(reply.headers)
    if reply.replayed:
        headers["Idempotent-Replayed"] = "true"
    return Response(
        reply.body, status_code=reply.status, media_type="application/json", headers=headers
    )


Caller = Annotated[Principal, Depends(principal)]
Writer = Annotated[Principal, Depends(writer)]
Admin = Annotated[Principal, Depends(admin)]
Svc = Annotated[Context, Depends(services)]
IdemKey = Annotated[str | None, Depends(idempotency_key)]
# For a POST that only reads (a search): the header is declared and checked, nothing kept.
ReadOnlyKey = Annotated[str | None, Depends(read_only_key)]
IfMatch = Annotated[int | None, Depends(if_match)]
