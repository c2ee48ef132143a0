"""Who calls the MCP tools: the API key of an HTTP request (the same `Authorization: Bearer`
header as the HTTP API) or of a stdio server, authenticated like the HTTP API. Free of the
MCP SDK, so the app checks keys at /mcp without importing it."""

from __future__ import annotations

from collections.abc import Mapping

from reservations.context import Context
from reservations.errors import Forbidden, Unauthenticated
from reservations.kit.db import ACTOR
from reservations.tenancy.service import Principal, Role, authenticate


def bearer(headers: Mapping[str, str]) -> str | None:
    value = headers.get("authorization") or headers.get("Authorization") or ""
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


async def caller_of(svc: Context, token: str | None, *, charge: bool = True) -> Principal:
    """The key a call acts as: authenticated like the HTTP API, charged to its rate limits,
    and recorded as the actor of every transaction the call opens. The MCP surface serves
    agent and booker keys (a booker acting through an assistant sees what its key sees)."""
    if token is None:
        raise Unauthenticated()
    found = await authenticate(svc.db, token, now=svc.clock.now(), cache=svc.key_cache)
    if found is None:
        raise Unauthenticated()
    if found.role not in (Role.agent, Role.booker):
        raise Forbidden(
            "The MCP tools take an agent key (or a booker key); make one with "
            "'reservations keys create --tenant T --role agent'."
        )
    ACTOR.set(str(found.api_key_id))
    if charge and svc.limits is not None:
        await svc.limits.charge(found)
    return found
