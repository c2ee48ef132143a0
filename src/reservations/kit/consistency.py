"""Read-your-writes across replicas: the consistency token.

A write response carries `Consistency-Token`: the primary's WAL position read after COMMIT. A
read that presents it is served by a replica only once that replica has replayed past it
(kit/replicas.py), so a client always reads its own writes while everybody else's reads spread
over the replicas. Every read response says where it was served (`Read-Source`).

The per-request state lives in a mutable holder put in a context variable by the middleware:
the database layer fills it in, the middleware reads it when the response starts."""

from __future__ import annotations

import re
from contextvars import ContextVar
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from reservations.errors import problem_response

HEADER = b"consistency-token"
_LSN = re.compile(rb"[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}")


def lsn_value(lsn: str) -> int:
    """A pg_lsn as a number, for comparisons in Python."""
    high, low = lsn.split("/")
    return (int(high, 16) << 32) | int(low, 16)


@dataclass
class Consistency:
    token: str | None = None  # the client's: read at least this fresh
    written: str | None = None  # the primary's WAL position after this request's commits
    source: str | None = None  # where this request's reads were served

    def wrote(self, lsn: str) -> None:
        if self.written is None or lsn_value(lsn) > lsn_value(self.written):
            self.written = lsn

    def freshness(self) -> str | None:
        """What this request's own reads must see: the client's token or its own writes."""
        candidates = [t for t in (self.token, self.written) if t is not None]
        return max(candidates, key=lsn_value) if candidates else None


CURRENT: ContextVar[Consistency | None] = ContextVar("consistency", default=None)


class ConsistencyMiddleware:
    """Reads the client's token and sends back the request's own; installed only when
    replicas are configured (with none, every read is the primary's and fresh anyway)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = Consistency()
        for name, value in scope["headers"]:
            if name == HEADER:
                if not _LSN.fullmatch(value.strip()):
                    response = problem_response(
                        status=422,
                        slug="invalid-input",
                        title="The request is not valid",
                        detail="Consistency-Token must be a token this API returned, such as "
                        "0/16B6F48; or leave it out.",
                        extra={
                            "errors": [
                                {
                                    "field": "Consistency-Token",
                                    "in": "header",
                                    "message": "malformed",
                                }
                            ]
                        },
                    )
                    await response(scope, receive, send)
                    return
                state.token = value.strip().decode("ascii").upper()
        reset = CURRENT.set(state)

        async def send_with_token(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if state.written is not None:
                    headers.append((HEADER, state.written.encode()))
                if state.source is not None:
                    headers.append((b"read-source", state.source.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_token)
        finally:
            CURRENT.reset(reset)
