"""Reading the tenant's event stream: pages, and the live Server-Sent Events stream."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from uuid import UUID

import orjson

from reservations.context import Context
from reservations.events import repository
from reservations.events.repository import EventRow
from reservations.events.schemas import EventPage, EventRead
from reservations.kit.db import Conn
from reservations.kit.pagination import (
    XID8_MAX,
    decode_cursor,
    encode_cursor,
    invalid_cursor,
    key_int,
    merged,
)
from reservations.tenancy.service import Principal

# How often an open stream asks the database for new events, and sends a comment line when
# there was nothing (so proxies and clients see the connection is alive).
POLL_SECONDS = 0.5
HEARTBEAT_SECONDS = 15.0
# `after=now` on the stream: start at the end, without paging through the tenant's history.
NOW = "now"


# What a booker key sees of an event about a reservation (or a waitlist entry): where and when
# something changed, as availability shows it, not whose it is or what it carries.
_BOOKER_FIELDS = ("start", "end", "status")


def parse_cursor(cursor: str | None, *, now_allowed: bool = False) -> tuple[int, int] | None:
    """(transaction id, event id): an xid8 and a bigint, each checked to its range here (the
    stream reads it again after its 200, when a database error could only end it)."""
    if cursor is None or cursor == "" or (now_allowed and cursor == NOW):
        return None
    txid, event_id = decode_cursor(cursor, 2)
    return key_int(txid, high=XID8_MAX), key_int(event_id)


def check_cursor(svc: Context, cursor: str | None) -> None:
    """Refuse (422) a cursor this API could not have sent, before a stream starts."""
    if svc.shards.sharded:
        parse_positions(cursor)
    else:
        parse_cursor(cursor, now_allowed=True)


def _read(row: EventRow, caller: Principal, position: str | None = None) -> EventRead:
    data = row.data
    subject: UUID | None = row.subject_id
    if not caller.sees_all() and not row.type.startswith("resource."):
        data = {k: data[k] for k in _BOOKER_FIELDS if k in data}
        subject = None
    return EventRead(
        id=position or encode_cursor(row.txid, row.id),
        type=row.type,
        resource_id=row.resource_id,
        resource_seq=row.resource_seq,
        subject_id=subject,
        data=data,
        created_at=row.created_at,
    )


async def _batch(
    conn: Conn, *, caller: Principal, cursor: tuple[int, int] | None
) -> list[EventRow]:
    return await repository.after(conn, tenant_id=caller.tenant_id, cursor=cursor, limit=500)


async def page(svc: Context, caller: Principal, *, after: str | None, limit: int) -> EventPage:
    if svc.shards.sharded:
        items = await _merged(svc, caller, parse_positions(after), limit)
        return EventPage(items=items, next_cursor=items[-1].id if items else after)
    cursor = parse_cursor(after)
    rows = await svc.db.read(
        lambda conn: repository.after(conn, tenant_id=caller.tenant_id, cursor=cursor, limit=limit)
    )
    items = [_read(r, caller) for r in rows]
    return EventPage(items=items, next_cursor=items[-1].id if items else after)


async def _head(conn: Conn, *, caller: Principal) -> tuple[int, int]:
    row = await repository.head(conn, tenant_id=caller.tenant_id)
    return (0, 0) if row is None else (int(row.txid), row.id)


async def stream(svc: Context, caller: Principal, *, after: str | None) -> AsyncIterator[bytes]:
    """SSE frames: `id` (the cursor), `event` (the type), `data` (the event as JSON). Runs
    until the client goes away; reconnecting with Last-Event-ID resumes after that event.

    `after=now` starts at the end and says where that is first, in a frame with only an `id`
    (it dispatches no event, but a client that reconnects sends it back as Last-Event-ID,
    so nothing committed in between is missed)."""
    yield b"retry: 1000\n\n"
    if svc.shards.sharded:
        async for frame in _stream_merged(svc, caller, after=after):
            yield frame
        return
    cursor: tuple[int, int] | None
    if after == NOW:
        head = await svc.db.read(functools.partial(_head, caller=caller))
        yield b"id: %s\n\n" % encode_cursor(*head).encode()
        cursor = head
    else:
        cursor = parse_cursor(after)

    async def batch() -> list[EventRead]:
        nonlocal cursor
        rows = await svc.db.read(functools.partial(_batch, caller=caller, cursor=cursor))
        if rows:
            cursor = (int(rows[-1].txid), rows[-1].id)
        return [_read(row, caller) for row in rows]

    async for frame in _frames(batch):
        yield frame


async def _frames(batch: Callable[[], Awaitable[list[EventRead]]]) -> AsyncIterator[bytes]:
    """The events `batch` returns, round after round, as SSE frames; polls when there is
    nothing new, with a comment line now and then."""
    quiet = 0.0
    while True:
        events = await batch()
        for event in events:
            body = orjson.dumps(event.model_dump(mode="json"))
            yield b"id: %s\nevent: %s\ndata: %s\n\n" % (
                event.id.encode(),
                event.type.encode(),
                body,
            )
        if events:
            quiet = 0.0
            continue
        await asyncio.sleep(POLL_SECONDS)
        quiet += POLL_SECONDS
        if quiet >= HEARTBEAT_SECONDS:
            quiet = 0.0
            yield b": keep-alive\n\n"


# --- with shard clusters: every cluster has its own outbox; a cursor holds a position in each,
# and the stream merges them (each resource's events stay in order: they live on one cluster).


def _encode_positions(positions: dict[str, tuple[int, int]]) -> str:
    return encode_cursor(orjson.dumps(dict(sorted(positions.items()))).decode())


def parse_positions(cursor: str | None) -> dict[str, tuple[int, int]]:
    if cursor is None or cursor in ("", NOW):
        return {}
    (raw,) = decode_cursor(cursor, 1)
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise invalid_cursor() from None
    if not isinstance(parsed, dict):
        raise invalid_cursor()
    out = {}
    for name, position in parsed.items():
        # As _encode_positions writes them: [txid, id], two integers in their columns' range.
        if not (
            isinstance(position, list)
            and len(position) == 2
            and all(type(n) is int for n in position)
        ):
            raise invalid_cursor()
        out[name] = (key_int(str(position[0]), high=XID8_MAX), key_int(str(position[1])))
    return out


async def _merged(
    svc: Context, caller: Principal, positions: dict[str, tuple[int, int]], limit: int
) -> list[EventRead]:
    databases = svc.shards.databases()
    batches = await asyncio.gather(
        *(
            db.read(
                functools.partial(
                    repository.after,
                    tenant_id=caller.tenant_id,
                    cursor=positions.get(db.name),
                    limit=limit,
                )
            )
            for db in databases
        )
    )
    tagged = [[(db.name, r) for r in rows] for db, rows in zip(databases, batches, strict=True)]
    state = dict(positions)
    out = []
    # heapq.merge keeps each cluster's own order, so every prefix is a prefix of each.
    for name, row in merged(tagged, key=lambda t: t[1].created_at, limit=limit):
        state[name] = (int(row.txid), row.id)
        out.append(_read(row, caller, _encode_positions(state)))
    return out


async def _stream_merged(
    svc: Context, caller: Principal, *, after: str | None
) -> AsyncIterator[bytes]:
    if after == NOW:
        positions = {}
        for db in svc.shards.databases():
            positions[db.name] = await db.read(functools.partial(_head, caller=caller))
        yield b"id: %s\n\n" % _encode_positions(positions).encode()
    else:
        positions = parse_positions(after)

    async def batch() -> list[EventRead]:
        nonlocal positions
        events = await _merged(svc, caller, positions, 500)
        if events:
            positions = parse_positions(events[-1].id)
        return events

    async for frame in _frames(batch):
        yield frame
