"""Read-your-writes across replicas: the consistency token.

A write response carries `Consistency-Token`: the primary's WAL position read after COMMIT. A
read that presents it is served by a replica only once that replica has replayed past it
(kit/replicas.py), so a client always reads its own writes while everybody else's reads spread
over the replicas. Every read response says where it was served (`Read-Source`).

With shard clusters (each with its own replicas) the token carries one position per database:
`primary=0/16B6F48;shard-a=0/3000028`; a bare position is the primary's (the catalog's). A
response's token is the request's token merged with its own writes (the newest position per
database), so a client that sends back the last token it got reads everything it has written,
on whichever cluster.

The per-request state lives in a mutable holder put in a context variable by the middleware:
the database layer fills it in, the middleware reads it when the response starts."""

from __future__ import annotations

import re
from contextvars import ContextVar
from dataclasses import dataclass, field

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from reservations.errors import problem_response

HEADER = b"consistency-token"
PRIMARY = "primary"  # the catalog's database name (kit/db.Database.name)
_LSN = rb"[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}"
_PART = rb"[a-z][a-z0-9_-]{0,63}=" + _LSN
_TOKEN = re.compile(rb"(?:" + _LSN + rb")|(?:" + _PART + rb"(?:;" + _PART + rb"){0,63})")


def lsn_value(lsn: str) -> int:
    """A pg_lsn as a number, for comparisons in Python."""
    high, low = lsn.split("/")
    return (int(high, 16) << 32) | int(low, 16)


def parse(token: str) -> dict[str, str]:
    """{database name: position} from a token this API sent (already validated)."""
    if "=" not in token:
        return {PRIMARY: token.upper()}
    parts = (part.split("=", 1) for part in token.split(";"))
    return {name: lsn.upper() for name, lsn in parts}


def _newest(a: str | None, b: str) -> str:
    return b if a is None or lsn_value(b) > lsn_value(a) else a


@dataclass
class Consistency:
    token: dict[str, str] = field(default_factory=dict)  # the client's: read this fresh
    written: dict[str, str] = field(default_factory=dict)  # after this request's commits
    source: str | None = None  # where this request's reads were served

    def wrote(self, database: str, lsn: str) -> None:
        self.written[database] = _newest(self.written.get(database), lsn)

    def freshness(self, database: str = PRIMARY) -> str | None:
        """What this request's reads of `database` must see: the client's token or its own
        writes there."""
        wanted = self.token.get(database)
        own = self.written.get(database)
        return _newest(wanted, own) if own is not None else wanted

    def reply_token(self) -> str | None:
        """The token to send back: the client's merged with this request's writes."""
        if not self.written:
            return None
        merged = dict(self.token)
        for database, lsn in self.written.items():
            merged[database] = _newest(merged.get(database), lsn)
        if list(merged) == [PRIMARY]:
            return merged[PRIMARY]
        return ";".join(f"{name}={lsn}" for name, lsn in sorted(merged.items()))


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
                if not _TOKEN.fullmatch(value.strip()):
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
                state.token = parse(value.strip().decode("ascii"))
        reset = CURRENT.set(state)

        async def send_with_token(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if (token := state.reply_token()) is not None:
                    headers.append((HEADER, token.encode()))
                if state.source is not None:
                    headers.append((b"read-source", state.source.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_token)
        finally:
            CURRENT.reset(reset)
