"""Feed use cases: an admin makes, lists and revokes feeds; anyone holding a feed's token
reads it as iCalendar."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import timedelta
from uuid import UUID

from reservations.context import Context
from reservations.errors import NotFound
from reservations.feeds import busy, ical, repository, tokens
from reservations.feeds.freebusy import FbType
from reservations.feeds.repository import FeedEventRow, FeedRow, FeedSecretRow
from reservations.feeds.schemas import (
    BusyPeriod,
    FeedCreate,
    FeedCreated,
    FeedPage,
    FeedRead,
    FreeBusyRead,
    ResourceFreeBusy,
)
from reservations.kit.db import Conn, Database
from reservations.kit.idempotency import Idempotency, Reply, claim, record
from reservations.kit.ids import uuid7, uuid7_beside
from reservations.kit.pagination import decode_id_cursor, encode_cursor, merged
from reservations.tenancy.service import Principal

# What a feed shows: live reservations meeting [now - 30 days, now + 365 days), the first
# MAX_EVENTS of them by start.
WINDOW_BEHIND = timedelta(days=30)
WINDOW_AHEAD = timedelta(days=365)
MAX_EVENTS = 5000


def _read(row: FeedRow) -> FeedRead:
    return FeedRead(
        id=row.id,
        kind="resource" if row.resource_id else "booker" if row.api_key_id else "tag",
        content="freebusy" if row.content == "freebusy" else "events",
        resource_id=row.resource_id,
        api_key_prefix=row.api_key_prefix,
        tag=row.tag,
        label=row.label,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )


async def create(
    svc: Context, caller: Principal, body: FeedCreate, idem: Idempotency | None, *, base_url: str
) -> Reply:
    """Make a feed; the reply (201, with the token, which a stored reply keeps only sealed)
    is the one an Idempotency-Key replays."""
    new = tokens.generate()
    now = svc.clock.now()
    # A resource's feed lives with the resource (on its shard cluster); a key's feed in the
    # catalog, with the key, and a tag's there too (its resources may be on every cluster).
    feed_id = uuid7() if body.resource_id is None else uuid7_beside(body.resource_id)
    if body.resource_id is not None:
        svc = svc.at(body.resource_id, caller)
    async with svc.db.transaction() as conn:
        if replay := await claim(idem, conn, now=now, ttl=svc.settings.idempotency_ttl):
            return replay
        api_key_id = None
        if body.resource_id is not None:
            found = await repository.live_resource(
                conn, tenant_id=caller.tenant_id, resource_id=body.resource_id
            )
            if found is None:
                raise NotFound(f"No resource {body.resource_id} in your tenant.")
        elif body.api_key_prefix is not None:
            api_key_id = await repository.key_by_prefix(
                conn, tenant_id=caller.tenant_id, prefix=body.api_key_prefix
            )
            if api_key_id is None:
                raise NotFound(f"No API key with prefix {body.api_key_prefix} in your tenant.")
        row = await repository.insert(
            conn,
            feed_id=feed_id,
            tenant_id=caller.tenant_id,
            resource_id=body.resource_id,
            api_key_id=api_key_id,
            tag=body.tag,
            content=body.content,
            prefix=new.prefix,
            secret_hash=new.secret_hash,
            label=body.label,
            created_by=caller.api_key_id,
            now=now,
        )
        at = f"{base_url.rstrip('/')}/feeds/{new.token}"
        created = FeedCreated(
            **_read(row).model_dump(),
            token=new.token,
            url=f"{at}.ics",
            json_url=f"{at}.json" if body.content == "freebusy" else None,
        )
        reply = Reply(status=201, body=created.model_dump_json(), secret=new.token)
        await record(idem, conn, reply, now=now)
    return reply


async def list_page(svc: Context, caller: Principal, *, limit: int, cursor: str | None) -> FeedPage:
    after = None
    if cursor is not None:
        after = decode_id_cursor(cursor)
    pages = [
        await db.read(
            lambda conn: repository.page(conn, tenant_id=caller.tenant_id, after=after, limit=limit)
        )
        for db in _homes(svc)
    ]
    items = [_read(r) for r in merged(pages, key=lambda r: r.id, limit=limit)]
    more = len(items) == limit
    return FeedPage(items=items, next_cursor=encode_cursor(items[-1].id) if more else None)


async def revoke(svc: Context, caller: Principal, feed_id: UUID) -> None:
    """Revoke a feed; its URL answers 404 from the next request on. Repeatable."""
    found = False
    for db in _homes(svc, first=feed_id):
        async with db.transaction() as conn:
            found = await repository.revoke(
                conn, tenant_id=caller.tenant_id, feed_id=feed_id, at=svc.clock.now()
            )
        if found:
            break
    if not found:
        raise NotFound(f"No feed {feed_id} in your tenant.")


@dataclass(frozen=True)
class Calendar:
    body: bytes
    etag: str


def no_feed() -> NotFound:
    # One answer for a malformed, unknown, wrong or revoked token: nothing to learn from it.
    return NotFound("No calendar feed at this address (the link may have been revoked).")


async def _live(svc: Context, token: str) -> FeedSecretRow:
    """The live feed this token opens, or the one 404."""
    parsed = tokens.parse(token)
    if parsed is None:
        raise no_feed()
    prefix, secret = parsed
    # The primary, not a replica: a revocation must count from the next request on.
    feed = None
    for db in _homes(svc):
        async with db.connection() as conn:
            feed = await repository.by_prefix(conn, prefix)
        if feed is not None:
            break
    if (
        feed is None
        or not tokens.secret_matches(secret, feed.secret_hash)
        or feed.revoked_at is not None
    ):
        raise no_feed()
    return feed


def _etag(body: bytes) -> str:
    return f'"{hashlib.sha256(body).hexdigest()[:32]}"'


async def calendar(svc: Context, token: str) -> Calendar:
    feed = await _live(svc, token)
    if feed.content == "freebusy":
        return await _freebusy_calendar(svc, feed)
    now = svc.clock.now()

    def query(conn: Conn) -> Awaitable[list[FeedEventRow]]:
        return repository.events(
            conn,
            tenant_id=feed.tenant_id,
            resource_id=feed.resource_id,
            created_by=feed.api_key_id,
            start=now - WINDOW_BEHIND,
            end=now + WINDOW_AHEAD,
            now=now,
            limit=MAX_EVENTS,
        )

    if feed.resource_id is not None:
        rows = await svc.at(feed.resource_id).db.read(query)
    else:  # a key's reservations may be on every cluster
        pages = await svc.shards.gather(query)
        rows = merged(pages, key=lambda r: (r.start_at, r.id), limit=MAX_EVENTS)
    personal = feed.api_key_id is not None
    if feed.label:
        name = feed.label
    elif personal:
        name = f"Reservations of key {feed.api_key_prefix}"
    else:
        name = feed.resource_name or ""
    # Off the event loop: a large feed takes a while to write.
    body = await asyncio.to_thread(
        ical.render,
        name=name,
        zone=None if personal else feed.resource_timezone,
        rows=rows,
        personal=personal,
    )
    return Calendar(body=body, etag=_etag(body))


async def _freebusy(svc: Context, feed: FeedRow) -> busy.FreeBusy:
    return await busy.read(
        svc, tenant_id=feed.tenant_id, resource_id=feed.resource_id, tag=feed.tag
    )


def _freebusy_name(feed: FeedRow) -> str:
    if feed.label:
        return feed.label
    if feed.tag is not None:
        return f"Free/busy: {feed.tag}"
    return f"Free/busy: {feed.resource_name or ''}"


async def _freebusy_calendar(svc: Context, feed: FeedRow) -> Calendar:
    fb = await _freebusy(svc, feed)
    body = await asyncio.to_thread(
        ical.render_freebusy,
        name=_freebusy_name(feed),
        zone=feed.resource_timezone,
        stamp=fb.moment.floor,
        items=fb.resources,
    )
    return Calendar(body=body, etag=_etag(body))


async def freebusy_json(svc: Context, token: str) -> Calendar:
    """A free/busy feed's periods as JSON (FreeBusyRead); an events feed has none (404)."""
    feed = await _live(svc, token)
    if feed.content != "freebusy":
        raise no_feed()
    fb = await _freebusy(svc, feed)
    read = FreeBusyRead(
        computed_at=fb.moment.floor,
        from_=fb.start,
        to=fb.end,
        complete=fb.complete,
        resources=[
            ResourceFreeBusy(
                resource_id=r.id,
                name=r.name,
                timezone=r.timezone,
                from_=r.start,
                to=r.end,
                busy=[
                    BusyPeriod(
                        start=p.start,
                        end=p.end,
                        type="busy" if p.type is FbType.busy else "busy-unavailable",
                    )
                    for p in r.periods
                ],
            )
            for r in fb.resources
        ],
    )
    body = read.model_dump_json(by_alias=True).encode()
    return Calendar(body=body, etag=_etag(body))


def _homes(svc: Context, *, first: UUID | None = None) -> list[Database]:
    """Where feeds live: the catalog (keys' feeds) and every shard cluster (resources'
    feeds); with `first`, the cluster that id routes to comes first."""
    homes = [svc.db, *(db for db in svc.shards.databases() if db is not svc.db)]
    if first is not None and svc.shards.sharded:
        preferred = svc.shards.of(first)
        homes = [preferred, *(db for db in homes if db is not preferred)]
    return homes
